//go:build interop

package faults

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

// Ports of the fault run (inside its own network namespace, and clear of
// the other suites' ports all the same).
const (
	mainHealth   = proxyIP + ":2150"
	mainListen   = proxyIP + ":2151"
	mainPassive  = "25000-25039"
	vsftpdPort   = 2152
	proftpdPort  = 2153
	gatePort     = 2155
	proHealth    = proxyIP + ":2166"
	proListen    = proxyIP + ":2156"
	proPassive   = "25040-25069"
	extraHealth  = proxyIP + ":2167"
	extraListen  = proxyIP + ":2157"
	extraPassive = "25070-25099"
)

// env is the fault run: the servers, the long-running proxies, the source
// files and the tally.
type env struct {
	t      *testing.T
	work   string
	vs     *peers.Server
	pro    *peers.Server
	pxVs   *proxyProc
	pxPro  *proxyProc
	gate   *gate
	big    peers.File // 64 MiB
	one    peers.File // 1 MiB
	filter *regexp.Regexp

	passed, failed int
	failures       []string // the failed cases, with their errors' first lines, repeated by report
	upload         atomic.Int64
}

// verdict says what a transfer's outcome means.
type verdict string

const (
	vOK      verdict = "ok"             // 2xx and the bytes are exact
	vLost    verdict = "LOST"           // 2xx but the bytes are not
	vFailed  verdict = "failed-clear"   // a 4xx/5xx reply
	vAborted verdict = "client-aborted" // the client broke the transfer itself
	// vDiscarded: a download the client reset after its own kernel had
	// acknowledged the last byte. The bytes arrived; the client threw away
	// what it had not read yet. TCP acknowledges data when it reaches the
	// receiving host, not when the application reads it, so neither a
	// server nor a proxy can tell this from a completed transfer. The
	// proxy says 226 only once the client's TCP has acknowledged every byte
	// (a reset before that gets 426: proxy.TestClientResetNeverGets226
	// checks it deterministically, which this verdict cannot).
	vDiscarded verdict = "client-discarded"
	vUnclear   verdict = "UNCLEAR" // no success, but no error reply either
)

// judgeRetr compares a download with the file it should have delivered.
func judgeRetr(x xferResult, want peers.File) verdict {
	exact := x.n == want.Size && x.sum == want.Sum
	if x.fault == faultResetData && x.code/100 == 2 && !exact {
		return vDiscarded
	}
	return judge(x, exact)
}

// judgeStor compares the server's copy after an upload with the source.
func judgeStor(x xferResult, stored string, want peers.File) verdict {
	exact := false
	if x.code/100 == 2 {
		if sum, n, err := peers.FileSum(stored); err == nil {
			exact = sum == want.Sum && n == want.Size
		}
	}
	return judge(x, exact)
}

func judge(x xferResult, exact bool) verdict {
	switch {
	case x.fault != "" && x.code/100 != 2:
		// The client broke the transfer itself and was not told it
		// succeeded.
		return vAborted
	case x.code/100 == 2 && exact:
		return vOK
	case x.code/100 == 2:
		return vLost
	case x.code >= 400:
		return vFailed
	}
	return vUnclear
}

func (e *env) logf(format string, args ...any) { fmt.Printf(format+"\n", args...) }

// caseOpts names the proxy a case runs against, the server behind it and
// the client address of the fresh session after the case.
type caseOpts struct {
	px    *proxyProc // nil: the case checks the proxy itself (drain)
	srv   func() *peers.Server
	src   string
	limit time.Duration
}

// runCase runs one case and its aftercare: a fresh session that logs in
// and downloads 1 MiB byte-exact, then goroutines, fds, sessions and
// passive ports back at their baseline.
func (e *env) runCase(name string, o caseOpts, fn func(ctx context.Context, note func(string, ...any)) error) {
	if e.filter != nil && !e.filter.MatchString(name) {
		return
	}
	if o.limit == 0 {
		o.limit = 90 * time.Second
	}
	if o.src == "" {
		o.src = clientIP
	}
	start := time.Now()
	var notes []string
	note := func(f string, a ...any) { notes = append(notes, fmt.Sprintf(f, a...)) }
	err := func() error {
		var base snapshot
		if o.px != nil {
			var err error
			if base, err = o.px.idle(15 * time.Second); err != nil {
				return fmt.Errorf("before the case: %w", err)
			}
			note("before: %s", base)
		}
		ctx, cancel := context.WithTimeout(context.Background(), o.limit)
		defer cancel()
		if err := fn(ctx, note); err != nil {
			return err
		}
		if o.px == nil {
			return nil
		}
		if o.px.exited() {
			return fmt.Errorf("the proxy exited: %v", o.px.exitErr)
		}
		if err := e.fresh(o.px, o.srv(), o.src); err != nil {
			return fmt.Errorf("fresh session after the case: %w", err)
		}
		after, err := o.px.settle(base, *flagSettle)
		note("after:  %s", after)
		return err
	}()
	d := time.Since(start)
	if err == nil {
		e.passed++
		e.logf("PASS %s %.2fs", name, d.Seconds())
	} else {
		e.failed++
		e.failures = append(e.failures, failureLine(name, err))
		e.logf("FAIL %s %.2fs: %s", name, d.Seconds(), strings.ReplaceAll(err.Error(), "\n", "\n    "))
	}
	for _, n := range notes {
		e.logf("    %s", n)
	}
}

// fresh logs in through px from src and downloads 1 MiB byte-exact.
func (e *env) fresh(px *proxyProc, srv *peers.Server, src string) error {
	f, _, err := dialFTP(px.listen, src, 15*time.Second)
	if err != nil {
		return err
	}
	defer f.quit()
	if err := f.login(peers.User, peers.Password); err != nil {
		return err
	}
	x := f.retr("one.bin", xferOpts{mode: "pasv"})
	if v := judgeRetr(x, e.one); v != vOK {
		return fmt.Errorf("%s -> %s", x, v)
	}
	return nil
}

// stock puts the test files made for this run into the server's root.
func (e *env) stock(srv *peers.Server) error {
	for _, f := range []peers.File{e.big, e.one} {
		if f.Path == "" {
			continue
		}
		if err := stockFile(srv, f); err != nil {
			return err
		}
	}
	return nil
}

// newEnv prepares a run of cases: its work directory, the 1 MiB test
// file (and the 64 MiB one with big), vsftpd and, with proftpd, proftpd,
// each stocked with the files and stopped when t ends.
func newEnv(t *testing.T, prefix string, big, proftpd bool) *env {
	ctx := context.Background()
	proxyGOGC = *flagGOGC
	e := &env{t: t, work: newWork(t, prefix)}
	if *flagCases != "" {
		e.filter = regexp.MustCompile(*flagCases)
	}
	var err error
	if big {
		if e.big, err = peers.WriteRandom(filepath.Join(e.work, "big.bin"), 64<<20, 64); err != nil {
			t.Fatal(err)
		}
	}
	if e.one, err = peers.WriteRandom(filepath.Join(e.work, "one.bin"), 1<<20, 1); err != nil {
		t.Fatal(err)
	}
	if e.vs, err = startVsftpd(ctx, e.work); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.vs.Stop() }) // e.vs as it is then: a case may restart it
	if err := e.stock(e.vs); err != nil {
		t.Fatal(err)
	}
	if proftpd {
		if e.pro, err = startProftpd(ctx, e.work); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.pro.Stop() })
		if err := e.stock(e.pro); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

// setupFailed counts a case whose setup failed as failed.
func (e *env) setupFailed(name string, err error) {
	e.failed++
	e.failures = append(e.failures, failureLine(name, err))
	e.logf("FAIL %s: %v", name, err)
}

// failureLine is a failed case as report repeats it: its name and the
// first lines of its error.
func failureLine(name string, err error) string {
	return name + ": " + strings.ReplaceAll(peers.FirstLines(strings.TrimSpace(err.Error()), 4), "\n", "\n    ")
}

// report prints the failed cases again (a CI log often shows only its
// tail) and the run's count line; a failed run fails t and keeps its work
// directory.
func (e *env) report() {
	for _, f := range e.failures {
		fmt.Printf("faults: failed %s\n", f)
	}
	fmt.Printf("faults: %d passed, %d failed\n", e.passed, e.failed)
	if e.failed > 0 {
		fmt.Printf("work directory kept: %s\n", e.work)
		e.t.Fail()
	} else if !*flagKeep && *flagWork == "" {
		e.t.Cleanup(func() { os.RemoveAll(e.work) })
	}
}

func startVsftpd(ctx context.Context, work string) (*peers.Server, error) {
	return peers.StartServer(ctx, peers.Vsftpd, *flagPeers, work, serverIP, vsftpdPort, peers.PassivePorts(25100, 25199))
}

func startProftpd(ctx context.Context, work string) (*peers.Server, error) {
	return peers.StartServer(ctx, peers.ProFTPd, *flagPeers, work, serverIP, proftpdPort, peers.PassivePorts(25200, 25299))
}

// record prints a transfer and its verdict and returns an error for a
// loss.
func record(note func(string, ...any), x xferResult, v verdict) error {
	note("transfer %s -> %s", x, v)
	if v == vLost {
		return fmt.Errorf("lost: %s", x)
	}
	return nil
}

// newWork makes the work directory (mode 0755: sessions run as daemon).
func newWork(t *testing.T, prefix string) string {
	work := *flagWork
	if work == "" {
		var err error
		if work, err = os.MkdirTemp("", prefix); err != nil {
			t.Fatal(err)
		}
	} else if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(work, 0o755); err != nil {
		t.Fatal(err)
	}
	return work
}

func TestFaults(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "ftpproxy-faults-", true, true)
	var err error
	common := []string{"--log-level", "debug", "--data-accept-timeout", "3s", "--dial-timeout", "5s"}
	if e.pxVs, err = startProxy(ctx, "vsftpd", e.work, mainListen, mainHealth, e.vs.Addr(), mainPassive, common...); err != nil {
		t.Fatal(err)
	}
	defer e.pxVs.kill()
	if e.pxPro, err = startProxy(ctx, "proftpd", e.work, proListen, proHealth, e.pro.Addr(), proPassive, common...); err != nil {
		t.Fatal(err)
	}
	defer e.pxPro.kill()
	if e.gate, err = startGate(fmt.Sprintf("%s:%d", serverIP, gatePort), e.vs.Addr()); err != nil {
		t.Fatal(err)
	}
	defer e.gate.close()

	vs := caseOpts{px: e.pxVs, srv: func() *peers.Server { return e.vs }}
	pro := caseOpts{px: e.pxPro, srv: func() *peers.Server { return e.pro }}

	// Upstream session killed mid-transfer.
	e.runCase("upstream-session-killed/vsftpd/retr-pasv", vs, e.upstreamKill(func() *peers.Server { return e.vs }, e.pxVs, "RETR", "pasv"))
	e.runCase("upstream-session-killed/vsftpd/stor-port", vs, e.upstreamKill(func() *peers.Server { return e.vs }, e.pxVs, "STOR", "port"))
	e.runCase("upstream-session-killed/proftpd/retr-epsv", pro, e.upstreamKill(func() *peers.Server { return e.pro }, e.pxPro, "RETR", "epsv"))
	e.runCase("upstream-session-killed/proftpd/stor-eprt", pro, e.upstreamKill(func() *peers.Server { return e.pro }, e.pxPro, "STOR", "eprt"))
	// The whole server killed mid-transfer, then restarted.
	e.runCase("upstream-server-killed/vsftpd/retr-epsv", vs, e.serverKill(&e.vs, startVsftpd, e.pxVs, "RETR", "epsv"))
	e.runCase("upstream-server-killed/proftpd/stor-pasv", pro, e.serverKill(&e.pro, startProftpd, e.pxPro, "STOR", "pasv"))
	// Client processes killed mid-transfer.
	e.runCase("client-killed/curl/retr-epsv", vs, e.clientKill("curl", "RETR", "epsv"))
	e.runCase("client-killed/curl/stor-port", vs, e.clientKill("curl", "STOR", "port"))
	e.runCase("client-killed/ftplib/retr-port", vs, e.clientKill("ftplib", "RETR", "port"))
	e.runCase("client-killed/ftplib/stor-pasv", vs, e.clientKill("ftplib", "STOR", "pasv"))
	// Client connections reset mid-transfer (the Go client).
	for _, c := range []struct{ verb, mode, fault string }{
		{"RETR", "pasv", faultKill}, {"STOR", "epsv", faultKill},
		{"RETR", "port", faultResetData}, {"STOR", "eprt", faultResetData},
		{"RETR", "epsv", faultResetCtl}, {"STOR", "pasv", faultResetCtl},
	} {
		e.runCase(fmt.Sprintf("client-reset/%s/%s-%s", c.fault, strings.ToLower(c.verb), c.mode), pro, e.clientReset(func() *peers.Server { return e.pro }, e.pxPro, c.verb, c.mode, c.fault))
	}
	// Control: the same data reset straight to the servers, without the
	// proxy: what a server replies when its data connection is reset.
	for _, srv := range []func() *peers.Server{func() *peers.Server { return e.vs }, func() *peers.Server { return e.pro }} {
		e.runCase("control/direct-to-"+srv().Kind.Name+"/resetdata/stor-pasv", caseOpts{}, e.directReset(srv))
	}
	e.silentUpstream()
	e.runCase("pasv-never-connects/vsftpd", vs, e.pasvNeverConnects)
	e.runCase(fmt.Sprintf("churn-%d-sessions/vsftpd", *flagSessions), caseOpts{px: e.pxVs, srv: vs.srv, limit: 150 * time.Second}, e.churn)
	e.bruteForce()
	e.configReload()
	e.services()
	e.upgradeInPlace()
	e.drainFinishes()
	e.drainTimeout()
	e.drainSecondSignal()
	e.report()
}

func (e *env) uploadName(prefix string) string {
	return fmt.Sprintf("%s-%d.bin", prefix, e.upload.Add(1))
}

// loggedIn opens a logged-in session through px.
func loggedIn(px *proxyProc, src string) (*ftpClient, error) {
	f, _, err := dialFTP(px.listen, src, 20*time.Second)
	if err != nil {
		return nil, err
	}
	if err := f.login(peers.User, peers.Password); err != nil {
		f.close()
		return nil, err
	}
	return f, nil
}

// transferWith runs one 64 MiB transfer with opts and judges it; the
// verdict must be one of want.
func (e *env) transferWith(srv func() *peers.Server, px *proxyProc, verb string, o xferOpts, note func(string, ...any), want ...verdict) error {
	f, err := loggedIn(px, clientIP)
	if err != nil {
		return err
	}
	defer f.close()
	var x xferResult
	var v verdict
	if verb == "RETR" {
		x = f.retr(e.big.Name, o)
		v = judgeRetr(x, e.big)
	} else {
		name := e.uploadName("up")
		x = f.stor(name, e.big.Path, o)
		v = judgeStor(x, srv().Path(name), e.big)
		if x.code/100 != 2 {
			note("server copy of the upload: %d of %d bytes", fileSize(srv().Path(name)), e.big.Size)
		}
	}
	if err := record(note, x, v); err != nil {
		return err
	}
	for _, w := range want {
		if v == w {
			return nil
		}
	}
	return fmt.Errorf("verdict %s, want %v: %s", v, want, x)
}

// upstreamKill kills the server's session processes once 4 MiB have moved.
func (e *env) upstreamKill(srv func() *peers.Server, px *proxyProc, verb, mode string) func(context.Context, func(string, ...any)) error {
	return func(ctx context.Context, note func(string, ...any)) error {
		killed := 0
		o := xferOpts{mode: mode, hookAt: 4 << 20, hook: func() {
			killed = killSessions(srv())
		}}
		err := e.transferWith(srv, px, verb, o, note, vFailed)
		note("session processes killed: %d", killed)
		if killed == 0 {
			return errors.Join(err, fmt.Errorf("no session process of %s found to kill", srv().Kind.Name))
		}
		return err
	}
}

// serverKill kills the whole server (its process group) once 4 MiB have
// moved, then starts it again on the same port.
func (e *env) serverKill(sp **peers.Server, start func(context.Context, string) (*peers.Server, error), px *proxyProc, verb, mode string) func(context.Context, func(string, ...any)) error {
	return func(ctx context.Context, note func(string, ...any)) error {
		srv := *sp
		o := xferOpts{mode: mode, hookAt: 4 << 20, hook: func() {
			killServer(srv)
		}}
		err := e.transferWith(func() *peers.Server { return srv }, px, verb, o, note, vFailed)
		srv.Stop()
		ns, serr := start(ctx, e.work)
		if serr != nil {
			return errors.Join(err, fmt.Errorf("restart: %w", serr))
		}
		*sp = ns
		if serr := e.stock(ns); serr != nil {
			return errors.Join(err, serr)
		}
		note("server restarted, pid %d", ns.PID())
		return err
	}
}

// clientReset runs a Go-client transfer that breaks its own connections at
// 4 MiB.
func (e *env) clientReset(srv func() *peers.Server, px *proxyProc, verb, mode, fault string) func(context.Context, func(string, ...any)) error {
	return func(ctx context.Context, note func(string, ...any)) error {
		o := xferOpts{mode: mode, fault: fault, faultAt: 4 << 20, rate: 64 << 20}
		return e.transferWith(srv, px, verb, o, note, vAborted, vFailed)
	}
}

// directReset uploads straight to the server (no proxy) and resets the
// data connection at 4 MiB.
func (e *env) directReset(srv func() *peers.Server) func(context.Context, func(string, ...any)) error {
	return func(ctx context.Context, note func(string, ...any)) error {
		f, _, err := dialFTP(srv().Addr(), clientIP, 20*time.Second)
		if err != nil {
			return err
		}
		defer f.close()
		if err := f.login(peers.User, peers.Password); err != nil {
			return err
		}
		name := e.uploadName("direct")
		x := f.stor(name, e.big.Path, xferOpts{mode: "pasv", fault: faultResetData, faultAt: 4 << 20, rate: 64 << 20})
		v := judgeStor(x, srv().Path(name), e.big)
		note("server copy of the upload: %d of %d bytes", fileSize(srv().Path(name)), e.big.Size)
		return record(note, x, v)
	}
}

// clientKill runs curl or the paced ftplib client through the vsftpd proxy
// and SIGKILLs it once 2 MiB have moved.
func (e *env) clientKill(client, verb, mode string) func(context.Context, func(string, ...any)) error {
	return func(ctx context.Context, note func(string, ...any)) error {
		local := filepath.Join(e.work, e.uploadName("client-kill-local"))
		remote := e.uploadName("client-kill")
		url := "ftp://" + mainListen + "/"
		var argv []string
		switch {
		case client == "curl" && verb == "RETR":
			argv = curlArgv(mainListen, mode, "8M", "-o", local, url+e.big.Name)
		case client == "curl":
			argv = curlArgv(mainListen, mode, "8M", "-T", e.big.Path, url+remote)
		case verb == "RETR":
			argv = slowPyArgv(mainListen, mode, "get", e.big.Name, local, 8<<20)
		default:
			argv = slowPyArgv(mainListen, mode, "put", e.big.Path, remote, 8<<20)
		}
		watch := local
		if verb == "STOR" {
			watch = e.vs.Path(remote)
		}
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		logPath := filepath.Join(e.work, filepath.Base(local)+".out")
		cmd, err := startGroup(cctx, logPath, argv...)
		if err != nil {
			return err
		}
		growErr := waitGrow(watch, 2<<20, 20*time.Second)
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		werr := cmd.Wait()
		out, _ := os.ReadFile(logPath)
		note("%s killed at %d of %d bytes (%v); output: %q", client, fileSize(watch), e.big.Size, werr, peers.Tail(string(out), 300))
		if growErr != nil {
			return growErr
		}
		if werr == nil {
			return fmt.Errorf("%s finished before it was killed: %s", client, out)
		}
		if fileSize(watch) >= e.big.Size {
			return fmt.Errorf("%s moved the whole file before it was killed", client)
		}
		return nil
	}
}

// silentUpstream: an upstream that accepts and never greets; the proxy
// must give up after --greeting-timeout with 421.
func (e *env) silentUpstream() {
	const name = "silent-upstream/greeting-timeout-2s"
	if e.filter != nil && !e.filter.MatchString(name) {
		return
	}
	e.gate.setSilent(false)
	px, err := startProxy(context.Background(), "gate", e.work, extraListen, extraHealth, fmt.Sprintf("%s:%d", serverIP, gatePort), extraPassive,
		"--log-level", "debug", "--greeting-timeout", "2s")
	if err != nil {
		e.setupFailed(name, err)
		return
	}
	defer px.kill()
	e.runCase(name, caseOpts{px: px, srv: func() *peers.Server { return e.vs }}, func(ctx context.Context, note func(string, ...any)) error {
		e.gate.setSilent(true)
		defer e.gate.setSilent(false)
		var wg sync.WaitGroup
		errs := make([]error, 5)
		for i := range errs {
			wg.Go(func() {
				start := time.Now()
				f, r, err := dialFTP(px.listen, clientIP, 15*time.Second)
				d := time.Since(start)
				if err != nil {
					errs[i] = fmt.Errorf("session %d: %v after %v", i, err, d)
					return
				}
				defer f.close()
				if i == 0 {
					note("first reply after %.2fs: %s", d.Seconds(), r)
				}
				if r.code != 421 || !strings.Contains(r.text, "greet") || d < 1500*time.Millisecond || d > 8*time.Second {
					errs[i] = fmt.Errorf("session %d: %q after %v, want 421 (no greeting) after about 2s", i, r.text, d)
				}
			})
		}
		wg.Wait()
		return errors.Join(errs...)
	})
}

// pasvNeverConnects: PASV/EPSV whose data connection never comes; the
// passive port must come back after --data-accept-timeout (3s).
func (e *env) pasvNeverConnects(ctx context.Context, note func(string, ...any)) error {
	f, err := loggedIn(e.pxVs, clientIP)
	if err != nil {
		return err
	}
	defer f.close()
	waitPorts := func(want int, limit time.Duration) (time.Duration, error) {
		start := time.Now()
		var s snapshot
		for time.Since(start) < limit {
			if s, err = e.pxVs.readHealth(); err == nil && s.portsInUse == want {
				return time.Since(start), nil
			}
			time.Sleep(100 * time.Millisecond)
		}
		return 0, fmt.Errorf("passive ports in use: %d after %v, want %d", s.portsInUse, limit, want)
	}
	for _, c := range []string{"PASV", "EPSV"} {
		r, err := f.cmd(c)
		if err != nil || r.code/100 != 2 {
			return fmt.Errorf("%s: %v %v", c, r, err)
		}
		if _, err := waitPorts(1, time.Second); err != nil {
			return fmt.Errorf("after %s: %w", c, err)
		}
		d, err := waitPorts(0, 8*time.Second)
		if err != nil {
			return fmt.Errorf("after %s: %w", c, err)
		}
		note("%s: passive port back after %.1fs", c, d.Seconds()+1)
	}
	// The session still works.
	x := f.retr(e.one.Name, xferOpts{mode: "epsv"})
	if v := judgeRetr(x, e.one); v != vOK {
		return fmt.Errorf("transfer after the timeouts: %s -> %s", x, v)
	}
	// PASV, then RETR without ever connecting.
	if r, err := f.cmd("PASV"); err != nil || r.code != 227 {
		return fmt.Errorf("PASV: %v %v", r, err)
	}
	f.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(f.conn, "RETR %s\r\n", e.big.Name)
	start := time.Now()
	d, err := waitPorts(0, 8*time.Second)
	if err != nil {
		return fmt.Errorf("PASV+RETR: %w", err)
	}
	note("PASV+RETR never connected: passive port back after %.1fs", d.Seconds())
	f.timeout = 5 * time.Second
	x = xferResult{verb: "RETR", name: e.big.Name, mode: "pasv"}
	f.finalReply(&x)
	note("PASV+RETR never connected: client's reply %.1fs after RETR: code %d %q (err %v)", time.Since(start).Seconds(), x.code, x.text, x.err)
	if x.code/100 == 2 {
		return fmt.Errorf("success reply for a transfer that never had a data connection: %s", x)
	}
	return nil
}

// churn opens and closes many short sessions, in four styles.
func (e *env) churn(ctx context.Context, note func(string, ...any)) error {
	n := *flagSessions
	jobs := make(chan int)
	var mu sync.Mutex
	var errs []string
	counts := map[string]int{}
	fail := func(i int, kind string, err error) {
		mu.Lock()
		defer mu.Unlock()
		if len(errs) < 10 {
			errs = append(errs, fmt.Sprintf("session %d (%s): %v", i, kind, err))
		} else if len(errs) == 10 {
			errs = append(errs, "...")
		}
		counts[kind+" failed"]++
	}
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for i := range jobs {
				var kind string
				var err error
				switch i % 4 {
				case 0:
					kind = "greeting+QUIT"
					var f *ftpClient
					if f, _, err = dialFTP(e.pxVs.listen, clientIP, 20*time.Second); err == nil {
						var r reply
						r, err = f.cmd("QUIT")
						if err == nil && r.code != 221 {
							err = fmt.Errorf("QUIT: %s", r)
						}
						f.close()
					}
				case 1:
					kind = "login+QUIT"
					var f *ftpClient
					if f, err = loggedIn(e.pxVs, clientIP); err == nil {
						var r reply
						r, err = f.cmd("QUIT")
						if err == nil && r.code != 221 {
							err = fmt.Errorf("QUIT: %s", r)
						}
						f.close()
					}
				case 2:
					kind = "connect+close"
					var c net.Conn
					d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientIP)}}
					if c, err = d.Dial("tcp", e.pxVs.listen); err == nil {
						c.Close()
					}
				case 3:
					kind = "greeting+reset"
					var f *ftpClient
					if f, _, err = dialFTP(e.pxVs.listen, clientIP, 20*time.Second); err == nil {
						f.reset()
					}
				}
				if err != nil {
					fail(i, kind, err)
					continue
				}
				mu.Lock()
				counts[kind]++
				mu.Unlock()
			}
		})
	}
	start := time.Now()
loop:
	for i := range n {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break loop
		}
	}
	close(jobs)
	wg.Wait()
	note("%d sessions in %.1fs: %v", n, time.Since(start).Seconds(), counts)
	if ctx.Err() != nil {
		return fmt.Errorf("not done in time")
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "\n"))
	}
	return nil
}

// bruteForce: 20 wrong passwords from 127.0.0.4 ban it; 127.0.0.5 still
// logs in.
func (e *env) bruteForce() {
	const name = "brute-force/max-login-failures-20"
	if e.filter != nil && !e.filter.MatchString(name) {
		return
	}
	px, err := startProxy(context.Background(), "brute", e.work, extraListen, extraHealth, e.vs.Addr(), extraPassive,
		"--log-level", "debug", "--max-login-failures", "20")
	if err != nil {
		e.setupFailed(name, err)
		return
	}
	defer px.kill()
	e.runCase(name, caseOpts{px: px, srv: func() *peers.Server { return e.vs }, src: otherIP}, func(ctx context.Context, note func(string, ...any)) error {
		var wg sync.WaitGroup
		var mu sync.Mutex
		codes := map[string]int{}
		for range 20 {
			wg.Go(func() {
				f, _, err := dialFTP(px.listen, clientIP, 20*time.Second)
				if err != nil {
					mu.Lock()
					codes["dial: "+err.Error()]++
					mu.Unlock()
					return
				}
				defer f.close()
				f.cmd("USER %s", peers.User)
				r, err := f.cmd("PASS wrong-password")
				mu.Lock()
				if err != nil {
					codes["error"]++
				} else {
					codes[fmt.Sprint(r.code)]++
				}
				mu.Unlock()
			})
		}
		wg.Wait()
		note("replies to the 20 wrong passwords: %v", codes)
		if codes["530"] != 20 {
			return fmt.Errorf("want 20 times 530, got %v", codes)
		}
		f, r, err := dialFTP(px.listen, clientIP, 10*time.Second)
		if err != nil {
			return fmt.Errorf("21st session from %s: %v", clientIP, err)
		}
		f.close()
		note("next session from %s: %s", clientIP, r)
		if r.code != 421 || !strings.Contains(r.text, "failed logins") {
			return fmt.Errorf("session from %s after 20 failures: %q, want 421 failed logins", clientIP, r.text)
		}
		g, err := loggedIn(px, otherIP)
		if err != nil {
			return fmt.Errorf("login from %s: %w", otherIP, err)
		}
		defer g.quit()
		note("login from %s: ok", otherIP)
		return nil
	})
}
