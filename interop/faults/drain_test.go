//go:build interop

package faults

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

// drainProxy starts the proxy a drain case signals.
func (e *env) drainProxy(drain string) (*proxyProc, error) {
	return startProxy(context.Background(), "drain", e.work, extraListen, extraHealth, e.vs.Addr(), extraPassive,
		"--log-level", "debug", "--drain-timeout", drain)
}

// checkDraining checks what a draining proxy shows the world: new
// connections refused, health 503 "draining".
func checkDraining(px *proxyProc, note func(string, ...any)) error {
	var errs []error
	d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientIP)}}
	c, err := d.Dial("tcp", px.listen)
	if err == nil {
		c.Close()
		errs = append(errs, fmt.Errorf("a new connection during the drain was accepted"))
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		errs = append(errs, fmt.Errorf("a new connection during the drain: %v, want connection refused", err))
	} else {
		note("new connection during the drain: %v", err)
	}
	s, err := px.readHealth()
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("health during the drain: %v", err))
	case s.status != 503 || s.state != "draining":
		errs = append(errs, fmt.Errorf("health during the drain: %d %s, want 503 draining", s.status, s.state))
	default:
		note("health during the drain: %d %s, %d sessions", s.status, s.state, s.sessions)
	}
	return errors.Join(errs...)
}

// drainFinishes: a 64 MiB download started before SIGTERM finishes
// byte-exact with 226, and the proxy exits 0 afterwards.
func (e *env) drainFinishes() {
	name := "drain/transfer-finishes"
	if e.filter != nil && !e.filter.MatchString(name) {
		return
	}
	e.runCase(name, caseOpts{}, func(ctx context.Context, note func(string, ...any)) error {
		px, err := e.drainProxy("60s")
		if err != nil {
			return err
		}
		defer px.kill()
		f, err := loggedIn(px, clientIP)
		if err != nil {
			return err
		}
		defer f.close()
		var hookErr error
		var signalled time.Time
		x := f.retr(e.big.Name, xferOpts{mode: "pasv", rate: 24 << 20, hookAt: 8 << 20, hook: func() {
			signalled = time.Now()
			px.signal(syscall.SIGTERM)
			time.Sleep(200 * time.Millisecond)
			hookErr = checkDraining(px, note)
		}})
		v := judgeRetr(x, e.big)
		if err := record(note, x, v); err != nil {
			return err
		}
		if hookErr != nil {
			return hookErr
		}
		if v != vOK || x.code != 226 {
			return fmt.Errorf("download across SIGTERM: %s -> %s, want 226 byte-exact", x, v)
		}
		note("download finished %.2fs after SIGTERM", time.Since(signalled).Seconds())
		if px.exited() {
			return fmt.Errorf("the proxy exited before the client quit")
		}
		if err := checkDraining(px, note); err != nil {
			return err
		}
		f.quit()
		code, ok := px.wait(10 * time.Second)
		if !ok {
			return fmt.Errorf("the proxy did not exit within 10s of the last session's QUIT")
		}
		note("proxy exit status %d, %.2fs after SIGTERM", code, time.Since(signalled).Seconds())
		if code != 0 {
			return fmt.Errorf("proxy exit status %d, want 0", code)
		}
		return nil
	})
}

// drainCut runs a slow download, signals the proxy once 2 MiB have
// arrived (twice with second), and expects 426 for the transfer and 421
// for the session within about want, and exit status 0.
func (e *env) drainCut(name, drain string, second bool, want time.Duration) {
	if e.filter != nil && !e.filter.MatchString(name) {
		return
	}
	e.runCase(name, caseOpts{}, func(ctx context.Context, note func(string, ...any)) error {
		px, err := e.drainProxy(drain)
		if err != nil {
			return err
		}
		defer px.kill()
		f, err := loggedIn(px, clientIP)
		if err != nil {
			return err
		}
		defer f.close()
		var hookErr error
		var signalled time.Time
		x := f.retr(e.big.Name, xferOpts{mode: "epsv", rate: 4 << 20, hookAt: 2 << 20, hook: func() {
			signalled = time.Now()
			px.signal(syscall.SIGTERM)
			time.Sleep(200 * time.Millisecond)
			hookErr = checkDraining(px, note)
			if second {
				px.signal(syscall.SIGTERM)
			}
		}})
		took := time.Since(signalled)
		v := judgeRetr(x, e.big)
		if err := record(note, x, v); err != nil {
			return err
		}
		note("client's final reply %.2fs after the first signal", took.Seconds())
		var errs []error
		if hookErr != nil {
			errs = append(errs, hookErr)
		}
		// The cut transfer's own reply (426) comes first, then the
		// session's.
		last := reply{code: x.code, text: x.text}
		if x.code == 426 {
			if r, err := f.read(); err == nil {
				last = r
			}
		} else {
			errs = append(errs, fmt.Errorf("the transfer's reply %q, want 426 before the 421", x.text))
		}
		if last.code != 421 || !strings.Contains(last.text, "shutting down") {
			errs = append(errs, fmt.Errorf("client's final reply %q, want 421 shutting down", last.text))
		}
		if took > want+3*time.Second {
			errs = append(errs, fmt.Errorf("the 421 came %.1fs after the signal, want about %v", took.Seconds(), want))
		}
		code, ok := px.wait(10 * time.Second)
		if !ok {
			errs = append(errs, fmt.Errorf("the proxy did not exit within 10s of the cut"))
		} else {
			note("proxy exit status %d, %.2fs after the first signal", code, time.Since(signalled).Seconds())
			if code != 0 {
				errs = append(errs, fmt.Errorf("proxy exit status %d, want 0", code))
			}
		}
		return errors.Join(errs...)
	})
}

// drainTimeout: --drain-timeout 2s expires with a download running; the
// client gets 421.
func (e *env) drainTimeout() {
	e.drainCut("drain/timeout-expires-421", "2s", false, 2*time.Second)
}

// drainSecondSignal: a second SIGTERM ends the drain at once.
func (e *env) drainSecondSignal() {
	e.drainCut("drain/second-signal-421", "60s", true, 300*time.Millisecond)
}

var _ = peers.User
