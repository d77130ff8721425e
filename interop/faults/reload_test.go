//go:build interop

package faults

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

// Ports of the reload case: two listeners (one reload drops the second from
// the file), the health address and a passive range of 200 ports.
const (
	reloadListenA = proxyIP + ":2158"
	reloadListenB = proxyIP + ":2159"
	reloadHealth  = proxyIP + ":2168"
	reloadPassive = "25400-25599"
)

// The load the reloads run under.
const (
	reloadSessions = 100
	reloadFileSize = 3 << 20
	reloadRate     = 3 << 19 // bytes per second per transfer: 2 s a file
	reloadPause    = 800 * time.Millisecond
	reloadInFlight = 50 // transfers that must be running at each SIGHUP
	// Sessions connecting and logging in at once: vsftpd's listen backlog
	// is 32 and it forks per connection, so a burst of 100 connections
	// overflows it and some upstream connections are reset before their
	// greeting.
	reloadLogins = 8
)

// TestReload runs the reload case on its own against vsftpd:
// run.sh -test.run '^TestReload$'.
func TestReload(t *testing.T) {
	e := newEnv(t, "ftpproxy-reload-", false, false)
	e.configReload()
	e.report()
}

// stockFile puts f into the server's root, linked or copied.
func stockFile(srv *peers.Server, f peers.File) error {
	dst := srv.Path(f.Name)
	os.Remove(dst)
	if err := os.Link(f.Path, dst); err == nil {
		return nil
	}
	b, err := os.ReadFile(f.Path)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

// reloadConf is one version of the proxy's configuration file.
type reloadConf struct {
	listen      []string
	deny        string
	maxSessions int
	maxPerIP    int
	logLevel    string
	idleTimeout string
	extra       []string // lines written as they are
}

func (c reloadConf) render(upstream string) string {
	var b strings.Builder
	b.WriteString("# ftpproxy of the reload case (interop/faults)\n")
	q := make([]string, len(c.listen))
	for i, l := range c.listen {
		q[i] = strconv.Quote(l)
	}
	fmt.Fprintf(&b, "listen: [%s]\n", strings.Join(q, ", "))
	fmt.Fprintf(&b, "upstream: %q\n", upstream)
	fmt.Fprintf(&b, "passive-ports: %s\n", reloadPassive)
	b.WriteString("log-format: json\n")
	fmt.Fprintf(&b, "log-level: %s\n", c.logLevel)
	b.WriteString("data-accept-timeout: 10s\ndial-timeout: 5s\n")
	fmt.Fprintf(&b, "idle-timeout: %s\n", c.idleTimeout)
	if c.deny != "" {
		fmt.Fprintf(&b, "deny: %q\n", c.deny)
	}
	if c.maxSessions > 0 {
		fmt.Fprintf(&b, "max-sessions: %d\n", c.maxSessions)
	}
	if c.maxPerIP > 0 {
		fmt.Fprintf(&b, "max-sessions-per-ip: %d\n", c.maxPerIP)
	}
	for _, l := range c.extra {
		b.WriteString(l + "\n")
	}
	return b.String()
}

// startConfigProxy runs ftpproxy with --config cfgPath and --health, and
// waits for a greeting on listen.
func startConfigProxy(ctx context.Context, name, dir, cfgPath, listen, health string) (*proxyProc, error) {
	return runProxy(ctx, name, dir, listen, health, []string{"--config", cfgPath, "--health", health})
}

var (
	reloadsRe    = regexp.MustCompile(`(?m)^ftpproxy_config_reloads_total\{result="(success|failure)"\} (\S+)$`)
	lastReloadRe = regexp.MustCompile(`(?m)^ftpproxy_config_last_reload_success_timestamp_seconds (\S+)$`)
)

// reloadFigures is what /metrics says about reloads.
type reloadFigures struct {
	ok, failed int
	last       time.Time // the last configuration that took
}

func (p *proxyProc) reloadFigures() (reloadFigures, error) {
	resp, err := healthClient.Get("http://" + p.health + "/metrics")
	if err != nil {
		return reloadFigures{}, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return reloadFigures{}, err
	}
	var f reloadFigures
	seen := 0
	for _, m := range reloadsRe.FindAllStringSubmatch(string(body), -1) {
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			return f, fmt.Errorf("metrics: %q", m[0])
		}
		if m[1] == "success" {
			f.ok = int(v)
		} else {
			f.failed = int(v)
		}
		seen++
	}
	if seen != 2 {
		return f, fmt.Errorf("metrics: ftpproxy_config_reloads_total{result=success|failure} not both in /metrics")
	}
	if m := lastReloadRe.FindStringSubmatch(string(body)); m != nil {
		v, _ := strconv.ParseFloat(m[1], 64)
		f.last = time.Unix(0, int64(v*1e9))
	}
	return f, nil
}

// logLine is one JSON line of the proxy's log.
type logLine map[string]any

func (l logLine) str(k string) string { s, _ := l[k].(string); return s }

// readLog parses the proxy's log; a line still being written is skipped.
func readLog(path string) ([]logLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []logLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			out = append(out, l)
		}
	}
	return out, sc.Err()
}

// loadSession is one of the long sessions the reloads run under.
type loadSession struct {
	i              int
	src, listen    string
	mode           string
	local          string // the client address as the proxy logs it
	ok, retr, stor int
	lastStart      time.Time
	quit           reply
	err            error
	bad            []string // transfers that were not ok
}

func (s *loadSession) String() string {
	return fmt.Sprintf("session %d (%s via %s, %s, %s)", s.i, s.src, s.listen, s.mode, s.local)
}

// reloadRun is the state of the reload case.
type reloadRun struct {
	e        *env
	px       *proxyProc
	cfgPath  string
	file     peers.File
	note     func(string, ...any)
	inFlight atomic.Int64

	mu       sync.Mutex
	verdicts map[verdict]int

	n      int                  // reloads sent
	probes map[string]probeNote // new sessions that logged in, by client address
}

// probeNote is what a new session was for and whether it started while
// log-level was debug.
type probeNote struct {
	why   string
	debug bool
}

// write puts c into the configuration file.
func (r *reloadRun) write(c reloadConf) error {
	return os.WriteFile(r.cfgPath, []byte(c.render(r.e.vs.Addr())), 0o644)
}

// hup writes c, sends SIGHUP and waits until /metrics counts the reload;
// it must count as a success or a failure as wantOK says.
func (r *reloadRun) hup(what string, c reloadConf, wantOK bool) error {
	r.n++
	before, err := r.px.reloadFigures()
	if err != nil {
		return err
	}
	if err := r.write(c); err != nil {
		return err
	}
	inFlight := r.inFlight.Load()
	start := time.Now()
	if err := r.px.signal(syscall.SIGHUP); err != nil {
		return err
	}
	var after reloadFigures
	for {
		if after, err = r.px.reloadFigures(); err == nil && after.ok+after.failed > before.ok+before.failed {
			break
		}
		if time.Since(start) > 5*time.Second {
			return fmt.Errorf("reload %d (%s): /metrics did not count it within 5s (%v, %+v)", r.n, what, err, after)
		}
		time.Sleep(20 * time.Millisecond)
	}
	result := "success"
	if after.failed > before.failed {
		result = "failure"
	}
	r.note("reload %d, %s: %s, counted after %dms, %d transfers in flight", r.n, what, result, time.Since(start).Milliseconds(), inFlight)
	switch {
	case after.ok+after.failed != before.ok+before.failed+1:
		return fmt.Errorf("reload %d (%s): reloads went from %+v to %+v, want one more", r.n, what, before, after)
	case wantOK && result != "success", !wantOK && result != "failure":
		return fmt.Errorf("reload %d (%s): counted as a %s", r.n, what, result)
	case inFlight < reloadInFlight:
		return fmt.Errorf("reload %d (%s): only %d transfers in flight at the signal, want %d or more", r.n, what, inFlight, reloadInFlight)
	}
	return nil
}

// probeOK opens a new session from src through listen: 220, login, a
// 1 MiB RETR byte-exact and QUIT with 221. debug says whether the proxy
// runs at log-level debug for it.
func (r *reloadRun) probeOK(why string, debug bool, src, listen string) error {
	f, g, err := dialFTP(listen, src, 10*time.Second)
	if err != nil {
		return fmt.Errorf("new session from %s via %s (%s): %w", src, listen, why, err)
	}
	defer f.close()
	local := f.conn.LocalAddr().String()
	r.probes[local] = probeNote{why: why, debug: debug}
	if g.code != 220 {
		return fmt.Errorf("new session from %s via %s (%s): greeting %q", src, listen, why, g.text)
	}
	if err := f.login(peers.User, peers.Password); err != nil {
		return fmt.Errorf("new session from %s via %s (%s): %w", src, listen, why, err)
	}
	x := f.retr(r.e.one.Name, xferOpts{mode: "epsv"})
	if v := judgeRetr(x, r.e.one); v != vOK {
		return fmt.Errorf("new session from %s via %s (%s): %s -> %s", src, listen, why, x, v)
	}
	q, err := f.cmd("QUIT")
	if err != nil || q.code != 221 {
		return fmt.Errorf("new session from %s via %s (%s): QUIT: %v %v", src, listen, why, q, err)
	}
	r.note("  new session from %s via %s (%s): logged in, 1 MiB byte-exact, 221", local, listen, why)
	return nil
}

// probeRefused opens a new session from src through listen and wants a
// 421 greeting whose text holds want.
func (r *reloadRun) probeRefused(why, src, listen, want string) error {
	f, g, err := dialFTP(listen, src, 10*time.Second)
	if err != nil {
		return fmt.Errorf("new session from %s via %s (%s): %w", src, listen, why, err)
	}
	defer f.close()
	r.note("  new session from %s via %s (%s): %s", f.conn.LocalAddr(), listen, why, g)
	if g.code != 421 || !strings.Contains(g.text, want) {
		return fmt.Errorf("new session from %s via %s (%s): greeting %q, want 421 %s", src, listen, why, g.text, want)
	}
	return nil
}

// run is the body of one load session: it logs in, reports on ready, then
// alternates RETR and STOR of the file until stop is closed and it has
// started a transfer after stopAt, then QUITs.
func (r *reloadRun) run(ctx context.Context, s *loadSession, logins chan struct{}, ready chan<- error, stop <-chan struct{}, stopAt *atomic.Pointer[time.Time]) {
	logins <- struct{}{}
	f, g, err := dialFTP(s.listen, s.src, 20*time.Second)
	if err == nil && g.code != 220 {
		f.close()
		err = fmt.Errorf("greeting %q", g.text)
	}
	if err == nil {
		s.local = f.conn.LocalAddr().String()
		if err = f.login(peers.User, peers.Password); err != nil {
			f.close()
		}
	}
	<-logins
	ready <- err
	if err != nil {
		s.err = err
		return
	}
	defer f.close()
	for k := s.i % 2; ; k++ {
		select {
		case <-stop:
			if t := stopAt.Load(); t != nil && s.lastStart.After(*t) {
				s.quit, err = f.cmd("QUIT")
				if err != nil {
					s.err = fmt.Errorf("QUIT: %w", err)
				} else if s.quit.code != 221 {
					s.err = fmt.Errorf("QUIT: %s", s.quit)
				}
				return
			}
		default:
		}
		if ctx.Err() != nil {
			s.err = fmt.Errorf("not done in time: %d transfers ok", s.ok)
			return
		}
		s.lastStart = time.Now()
		o := xferOpts{mode: s.mode, rate: reloadRate}
		var x xferResult
		var v verdict
		r.inFlight.Add(1)
		if k%2 == 0 {
			x = f.retr(r.file.Name, o)
			r.inFlight.Add(-1)
			v = judgeRetr(x, r.file)
			s.retr++
		} else {
			name := r.e.uploadName("reload")
			x = f.stor(name, r.file.Path, o)
			r.inFlight.Add(-1)
			v = judgeStor(x, r.e.vs.Path(name), r.file)
			os.Remove(r.e.vs.Path(name))
			s.stor++
		}
		r.mu.Lock()
		r.verdicts[v]++
		r.mu.Unlock()
		if v != vOK {
			s.bad = append(s.bad, fmt.Sprintf("%s -> %s", x, v))
			s.err = fmt.Errorf("transfer %d: %s -> %s", k, x, v)
			return
		}
		s.ok++
	}
}

// configReload: 100 sessions download and upload through a proxy started
// with --config while the file is rewritten and SIGHUP sent 10 times: an
// invalid file (refused, the old configuration stays), a deny for the
// second client address, max-sessions down and up, log-level debug, a
// listen address removed (it stops accepting; its sessions go on), a per-address
// limit, and back. Every transfer must be byte-exact, every session must
// end with 221, every new rule must hold for new sessions, and /metrics
// must count 9 successful reloads and 1 refused.
func (e *env) configReload() {
	const name = "config-reload/100-sessions-10-reloads/vsftpd"
	if e.filter != nil && !e.filter.MatchString(name) {
		return
	}
	r := &reloadRun{e: e, cfgPath: filepath.Join(e.work, "ftpproxy-reload.yaml"), verdicts: map[verdict]int{}, probes: map[string]probeNote{}}
	base := reloadConf{listen: []string{reloadListenA, reloadListenB}, logLevel: "info", idleTimeout: "15m"}
	err := r.write(base)
	if err == nil {
		r.px, err = startConfigProxy(context.Background(), "reload", e.work, r.cfgPath, reloadListenA, reloadHealth)
	}
	if err != nil {
		e.setupFailed(name, err)
		return
	}
	defer r.px.kill()
	e.runCase(name, caseOpts{px: r.px, srv: func() *peers.Server { return e.vs }, limit: 120 * time.Second}, func(ctx context.Context, note func(string, ...any)) error {
		r.note = note
		return r.body(ctx, base)
	})
}

func (r *reloadRun) body(ctx context.Context, base reloadConf) error {
	e := r.e
	var err error
	if r.file, err = peers.WriteRandom(filepath.Join(e.work, "reload.bin"), reloadFileSize, 11); err != nil {
		return err
	}
	if err := stockFile(e.vs, r.file); err != nil {
		return err
	}
	start, err := r.px.reloadFigures()
	if err != nil {
		return err
	}
	r.note("reloads before: %d success, %d failure", start.ok, start.failed)

	// The load: 100 sessions, one in ten from otherIP, half through each
	// listener, the four data modes.
	modes := []string{"pasv", "epsv", "port", "eprt"}
	sessions := make([]*loadSession, reloadSessions)
	ready := make(chan error, reloadSessions)
	logins := make(chan struct{}, reloadLogins)
	stop := make(chan struct{})
	var stopAt atomic.Pointer[time.Time]
	var wg sync.WaitGroup
	for i := range sessions {
		s := &loadSession{i: i, src: clientIP, listen: reloadListenA, mode: modes[(i+i/10)%4]}
		if i%10 == 0 {
			s.src = otherIP
		}
		if i >= reloadSessions/2 {
			s.listen = reloadListenB
		}
		sessions[i] = s
		wg.Go(func() { r.run(ctx, s, logins, ready, stop, &stopAt) })
	}
	stopped := false
	finish := func() {
		if !stopped {
			stopped = true
			now := time.Now()
			stopAt.Store(&now)
			close(stop)
		}
	}
	defer func() { finish(); wg.Wait() }()
	var loginErrs []error
	for range sessions {
		if err := <-ready; err != nil {
			loginErrs = append(loginErrs, err)
		}
	}
	if len(loginErrs) > 0 {
		return fmt.Errorf("%d of %d sessions did not log in: %v", len(loginErrs), reloadSessions, errors.Join(loginErrs...))
	}
	for d := time.Now().Add(10 * time.Second); r.inFlight.Load() < reloadSessions*9/10; {
		if time.Now().After(d) {
			return fmt.Errorf("only %d of %d sessions transferring after 10s", r.inFlight.Load(), reloadSessions)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s, err := r.px.readHealth(); err == nil {
		r.note("load running: %s", s)
	}

	// The reloads, each followed by what a new session must find.
	cur := base
	var deniedAt, removedAt time.Time
	steps := []struct {
		what string
		conf func() reloadConf
		ok   bool
		then func() error
	}{
		{"idle-timeout 15m -> 10m", func() reloadConf { c := cur; c.idleTimeout = "10m"; return c }, true, func() error {
			return r.probeOK("after an ordinary reload", false, clientIP, reloadListenA)
		}},
		{"invalid: unknown key max_session, and a deny for " + clientIP, func() reloadConf {
			c := cur
			c.deny = clientIP + "/32"
			c.extra = []string{"max_session: 5"}
			return c
		}, false, func() error {
			return r.probeOK("after the refused file: the old configuration stays", false, clientIP, reloadListenA)
		}},
		{"deny " + otherIP, func() reloadConf { c := cur; c.deny = otherIP + "/32"; return c }, true, func() error {
			deniedAt = time.Now()
			return errors.Join(
				r.probeRefused("denied", otherIP, reloadListenA, "Access denied"),
				r.probeOK("not denied", false, clientIP, reloadListenB))
		}},
		{"max-sessions 0 -> 100 with 100 sessions running", func() reloadConf { c := cur; c.maxSessions = reloadSessions; return c }, true, func() error {
			if s, err := r.px.readHealth(); err == nil {
				r.note("  health: %s", s)
			}
			return r.probeRefused("over max-sessions", clientIP, reloadListenA, "Too many sessions")
		}},
		{"max-sessions 100 -> 150", func() reloadConf { c := cur; c.maxSessions = 150; return c }, true, func() error {
			return r.probeOK("under max-sessions", false, clientIP, reloadListenA)
		}},
		{"log-level info -> debug", func() reloadConf { c := cur; c.logLevel = "debug"; return c }, true, func() error {
			return r.probeOK("log-level debug", true, clientIP, reloadListenA)
		}},
		{"listen " + reloadListenB + " removed", func() reloadConf { c := cur; c.listen = []string{reloadListenA}; return c }, true, func() error {
			removedAt = time.Now()
			if f, g, err := dialFTP(reloadListenB, clientIP, 5*time.Second); err == nil {
				f.quit()
				return fmt.Errorf("a new connection to the removed %s was served: %s", reloadListenB, g)
			} else {
				r.note("  new connection to the removed %s: %v", reloadListenB, err)
			}
			return r.probeOK("listen removed", true, clientIP, reloadListenA)
		}},
		{"deny removed", func() reloadConf { c := cur; c.deny = ""; return c }, true, func() error {
			return r.probeOK("deny removed", true, otherIP, reloadListenA)
		}},
		{"max-sessions-per-ip 50 (" + clientIP + " has 90, " + otherIP + " 10)", func() reloadConf { c := cur; c.maxPerIP = 50; return c }, true, func() error {
			return errors.Join(
				r.probeRefused("over max-sessions-per-ip", clientIP, reloadListenA, "Too many sessions from your address"),
				r.probeOK("under max-sessions-per-ip", true, otherIP, reloadListenA))
		}},
		{"max-sessions and max-sessions-per-ip removed, log-level info", func() reloadConf {
			c := cur
			c.maxSessions, c.maxPerIP, c.logLevel = 0, 0, "info"
			return c
		}, true, func() error {
			return r.probeOK("log-level info again", false, clientIP, reloadListenA)
		}},
	}
	var errs []error
	for _, st := range steps {
		if err := ctx.Err(); err != nil {
			errs = append(errs, fmt.Errorf("reloads not done in time"))
			break
		}
		time.Sleep(reloadPause)
		c := st.conf()
		if err := r.hup(st.what, c, st.ok); err != nil {
			errs = append(errs, err)
			break
		}
		if st.ok {
			cur = c
		}
		if err := st.then(); err != nil {
			errs = append(errs, fmt.Errorf("reload %d (%s): %w", r.n, st.what, err))
			break
		}
	}

	// Every session starts one more transfer after the last reload, then
	// quits.
	finish()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("the sessions did not finish in time"))
		<-done
	}
	var sessErrs []string
	var total, retrs, stors, fromOther, viaB int
	for _, s := range sessions {
		total += s.ok
		retrs += s.retr
		stors += s.stor
		if s.err != nil {
			sessErrs = append(sessErrs, fmt.Sprintf("%s: %v", s, s.err))
			continue
		}
		if s.src == otherIP && s.lastStart.After(deniedAt) && !deniedAt.IsZero() {
			fromOther++
		}
		if s.listen == reloadListenB && s.lastStart.After(removedAt) && !removedAt.IsZero() {
			viaB++
		}
	}
	r.note("transfers: %v (%d RETR, %d STOR of %d bytes), %d of %d sessions ended with 221", r.verdicts, retrs, stors, r.file.Size, reloadSessions-len(sessErrs), reloadSessions)
	r.note("sessions from %s still transferring after the deny: %d; via the removed %s after its removal: %d", otherIP, fromOther, reloadListenB, viaB)
	if len(sessErrs) > 0 {
		sort.Strings(sessErrs)
		if len(sessErrs) > 10 {
			sessErrs = append(sessErrs[:10], fmt.Sprintf("... and %d more", len(sessErrs)-10))
		}
		errs = append(errs, fmt.Errorf("sessions cut or failed:\n%s", strings.Join(sessErrs, "\n")))
	}
	if r.verdicts[vLost] > 0 {
		errs = append(errs, fmt.Errorf("%d transfers LOST", r.verdicts[vLost]))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}

	// The counters.
	end, err := r.px.reloadFigures()
	if err != nil {
		return err
	}
	r.note("reloads after: %d success, %d failure; last good load %s", end.ok, end.failed, end.last.Format(time.RFC3339Nano))
	if end.ok-start.ok != 9 || end.failed-start.failed != 1 {
		errs = append(errs, fmt.Errorf("ftpproxy_config_reloads_total: %d success, %d failure more, want 9 and 1", end.ok-start.ok, end.failed-start.failed))
	}
	if !end.last.After(start.last) {
		errs = append(errs, fmt.Errorf("ftpproxy_config_last_reload_success_timestamp_seconds did not move: %v then %v", start.last, end.last))
	}

	// The log.
	lines, err := readLog(r.px.logPath)
	if err != nil {
		return err
	}
	errs = append(errs, r.checkLog(lines, sessions)...)
	return errors.Join(errs...)
}

// checkLog checks the proxy's log: one refused reload naming the bad key,
// nine that took, one listener removed, and debug
// lines exactly for the sessions started while log-level was debug.
func (r *reloadRun) checkLog(lines []logLine, sessions []*loadSession) []error {
	var errs []error
	var refused []logLine
	var reloaded, removed int
	debug := map[string]int{}
	for _, l := range lines {
		msg := l.str("message")
		switch {
		case strings.Contains(msg, "configuration reload refused"):
			refused = append(refused, l)
		case strings.Contains(msg, "configuration reloaded"):
			reloaded++
		case strings.Contains(msg, "listener removed by a reload"):
			removed++
		}
		if l.str("level") == "debug" {
			if c := l.str("client"); c != "" {
				debug[c]++
			}
		}
	}
	r.note("log: %d lines, %d reloads logged as done, %d refused, %d listeners removed, debug lines from %d clients", len(lines), reloaded, len(refused), removed, len(debug))
	if len(refused) != 1 {
		errs = append(errs, fmt.Errorf("log: %d lines \"configuration reload refused\", want 1", len(refused)))
	} else {
		r.note("log: refused: %s: %s", refused[0].str("message"), refused[0].str("error"))
		if !strings.Contains(refused[0].str("error"), "max_session") {
			errs = append(errs, fmt.Errorf("log: the refused reload's error %q does not name the key max_session", refused[0].str("error")))
		}
	}
	if reloaded != 9 {
		errs = append(errs, fmt.Errorf("log: %d lines \"configuration reloaded\", want 9", reloaded))
	}
	if removed != 1 {
		errs = append(errs, fmt.Errorf("log: %d lines \"listener removed by a reload\", want 1 (the reload that removed %s)", removed, reloadListenB))
	}
	for client, p := range r.probes {
		switch {
		case p.debug && debug[client] == 0:
			errs = append(errs, fmt.Errorf("log: no debug line for the new session %s (%s), started with log-level debug", client, p.why))
		case !p.debug && debug[client] > 0:
			errs = append(errs, fmt.Errorf("log: %d debug lines for the new session %s (%s), started with log-level info", debug[client], client, p.why))
		case p.debug:
			r.note("log: new session %s (%s): %d debug lines", client, p.why, debug[client])
		}
	}
	n := 0
	for _, s := range sessions {
		if debug[s.local] > 0 {
			n++
		}
	}
	if n > 0 {
		errs = append(errs, fmt.Errorf("log: %d of the sessions started at log-level info logged debug lines after the reload", n))
	}
	return errs
}
