package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
)

// greeter is an upstream that greets with its name and answers QUIT, on
// every connection, until the test ends.
func greeter(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.WriteString(c, "220 "+name+"\r\n")
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if strings.HasPrefix(line, "QUIT") {
						io.WriteString(c, "221 bye\r\n")
						return
					}
					io.WriteString(c, "200 ok\r\n")
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// freeAddr returns a loopback address with a port nothing listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// ftpSession is a client connection through the proxy.
type ftpSession struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

// dialGreeting connects to addr and returns the session and its greeting.
func dialGreeting(t *testing.T, addr string) (*ftpSession, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	s := &ftpSession{t: t, c: c, br: bufio.NewReader(c)}
	return s, s.line()
}

func (s *ftpSession) line() string {
	s.t.Helper()
	l, err := s.br.ReadString('\n')
	if err != nil {
		s.t.Fatalf("read: %v (got %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

func (s *ftpSession) cmd(line string) string {
	s.t.Helper()
	io.WriteString(s.c, line+"\r\n")
	return s.line()
}

// TestFleetReload runs two services, then reloads: one changes its
// upstream, one is removed while a session of it runs (which goes on to
// its QUIT), one is added with a pool of a dead server and a live one.
// The health endpoint and /metrics follow each service and pool server.
func TestFleetReload(t *testing.T) {
	defer func(w io.Writer) { logOutput = w }(logOutput)
	logOutput = io.Discard
	upA, upB := greeter(t, "server A"), greeter(t, "server B")
	dead := freeAddr(t)
	listenA, listenB, listenC := freeAddr(t), freeAddr(t), freeAddr(t)
	write := func(path, text string) {
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	path := writeConfigFile(t, fmt.Sprintf(`services:
  a:
    listen: %q
    upstream: %q
  b:
    listen: %q
    upstream: %q
`, listenA, upA, listenB, upB))
	args := []string{"--config", path}
	o, err := parseFlags(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	reg := newRegistry()
	f := newFleet(&upgrader{}, &wg, reg)
	log := zerolog.New(io.Discard)
	if err := f.start(o, log); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		f.shutdown(ctx)
		wg.Wait()
	})
	hs := httptest.NewServer(httpHandler(f.healthViews, reg, log))
	t.Cleanup(hs.Close)
	health := func() (int, string) {
		t.Helper()
		resp, err := http.Get(hs.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if _, g := dialGreeting(t, listenA); g != "220 server A" {
		t.Fatalf("service a greets with %q", g)
	}
	running, g := dialGreeting(t, listenB)
	if g != "220 server B" {
		t.Fatalf("service b greets with %q", g)
	}
	if r := running.cmd("NOOP"); r != "200 ok" {
		t.Fatalf("NOOP: %q", r)
	}
	if code, body := health(); code != 200 || !strings.HasPrefix(body, "ok, 2 sessions, ") ||
		!strings.Contains(body, "\nservice a: ok, 1 sessions\nservice b: ok, 1 sessions\n") {
		t.Fatalf("health before the reload: %d %q", code, body)
	}

	write(path, fmt.Sprintf(`services:
  a:
    listen: %q
    upstream: %q
  c:
    listen: %q
    upstream: [%q, %q]
`, listenA, upB, listenC, dead, upA))
	counts := newReloadMetrics(reg)
	rl := &reloader{args: args, cur: o, svcs: f, log: log, counts: counts}
	rl.reload()

	if _, g := dialGreeting(t, listenA); g != "220 server B" {
		t.Errorf("service a greets after the reload with %q, want the new upstream's", g)
	}
	if c, err := net.DialTimeout("tcp", listenB, 2*time.Second); err == nil {
		c.Close()
		t.Errorf("service b still accepts after its removal")
	}
	// The pool: the dead server refuses, the session goes on to the
	// live one, and the dead one is left out from then on.
	for i := range 3 {
		if _, g := dialGreeting(t, listenC); g != "220 server A" {
			t.Fatalf("service c, session %d: greeting %q", i, g)
		}
	}
	// A session reports its server to the pool after the greeting has
	// gone to its client.
	code, body := health()
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(body, upA+": up, 3 sessions") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		code, body = health()
	}
	for _, want := range []string{
		"\nservice a: ok, ",
		"\nservice c: ok, ",
		"\nservice b: removed, draining, 1 sessions\n",
		"\nservice c upstream " + dead + ": down for ",
		"connection refused\n",
		"\nservice c upstream " + upA + ": up, 3 sessions, 0 connect failures\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("health after the reload has no %q:\n%s", want, body)
		}
	}
	if code != 200 {
		t.Errorf("health after the reload: %d", code)
	}
	// The session of the removed service goes on.
	if r := running.cmd("NOOP"); r != "200 ok" {
		t.Errorf("NOOP after the reload: %q", r)
	}
	if r := running.cmd("QUIT"); r != "221 bye" {
		t.Errorf("QUIT after the reload: %q", r)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, body := health(); !strings.Contains(body, "service b:") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the removed service did not drain")
		}
		time.Sleep(10 * time.Millisecond)
	}

	want := fmt.Sprintf(`
# HELP ftpproxy_upstream_up Whether a server of the upstream pool takes new sessions (1), or is left out after failed tries (0); absent without a pool.
# TYPE ftpproxy_upstream_up gauge
ftpproxy_upstream_up{server=%q,service="c"} 0
ftpproxy_upstream_up{server=%q,service="c"} 1
`, dead, upA)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "ftpproxy_upstream_up"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg, "ftpproxy_sessions_active"); err != nil || n != 3 {
		t.Errorf("ftpproxy_sessions_active: %d series (a, b, c), %v", n, err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}

	// A reload that adds a server to the pool keeps what the pool knows
	// of the others: the dead server stays down, the new one is up.
	write(path, fmt.Sprintf(`services:
  a:
    listen: %q
    upstream: %q
  c:
    listen: %q
    upstream: [%q, %q, %q]
`, listenA, upB, listenC, dead, upA, upB))
	rl.reload()
	_, body = health()
	for _, want := range []string{
		"\nservice c upstream " + dead + ": down for ",
		"\nservice c upstream " + upA + ": up, 3 sessions, 0 connect failures\n",
		"\nservice c upstream " + upB + ": up, 0 sessions, 0 connect failures\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("health after adding a pool server has no %q:\n%s", want, body)
		}
	}

	// Services back to one configuration without them: a restart.
	write(path, fmt.Sprintf("listen: %q\nupstream: %q\n", listenA, upA))
	rl.reload()
	if got := testutil.ToFloat64(counts.total.WithLabelValues("failure")); got != 1 {
		t.Errorf("reloads refused: %v, want 1", got)
	}
	if _, g := dialGreeting(t, listenC); g != "220 server A" && g != "220 server B" {
		t.Errorf("service c after a refused reload: %q", g)
	}
}
