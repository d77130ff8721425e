//go:build interop

package faults

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

var flagUpgradeSrc = flag.String("upgrade-src", "../..", "module root the upgrade case builds the replacement binary from (go build -ldflags -X main.version=...)")

// The upgrade case: its own ports, so that a process left over by a failed
// run cannot answer for another case.
const (
	upgradeListen  = proxyIP + ":2160"
	upgradeHealth  = proxyIP + ":2170"
	upgradePassive = "25600-25639"
	upgradeDrain   = 30 * time.Second
	upgradeVersion = "upgrade-test-next" // main.version of the replacement binary
	upgradeRate    = 6 << 20             // the download's pace: about 11 s for 64 MiB
	upgradeHookAt  = 4 << 20             // the swap starts once this much has arrived
	upgradeEvery   = 5 * time.Millisecond
	upgradeLead    = 300 * time.Millisecond  // probes before the binary is replaced
	upgradeTail    = 1500 * time.Millisecond // probes after the old process stops accepting
	upgradeLog     = "ftpproxy-upgrade.log"
)

// TestUpgrade runs the upgrade case on its own against vsftpd:
// run.sh -test.run '^TestUpgrade$'.
func TestUpgrade(t *testing.T) {
	e := newEnv(t, "ftpproxy-upgrade-", true, false)
	e.upgradeInPlace()
	e.report()
}

// upgradeInPlace: the proxy runs from a copy of its binary in the work
// directory; while a 64 MiB download runs through it, a build with another
// version is installed over that file (written under a temporary name,
// then renamed over it) and the PID in --pid-file gets SIGUSR2, while new
// control connections arrive every few milliseconds. Every one of them
// must be greeted with 220; the download finishes byte-exact with 226; the
// PID file names the new process, which serves the sessions from then on
// (the socket's owner in /proc, the version in the log, the health
// endpoint); the old process exits 0 by itself once its session ends; and
// at the end the new process alone runs, until SIGTERM to its PID.
func (e *env) upgradeInPlace() {
	name := "upgrade/binary-replaced-mid-download"
	if e.filter != nil && !e.filter.MatchString(name) {
		return
	}
	e.runCase(name, caseOpts{limit: 60 * time.Second}, func(ctx context.Context, note func(string, ...any)) error {
		// The swap notes from a goroutine of its own.
		var mu sync.Mutex
		u := &upgradeRun{e: e, note: func(f string, a ...any) {
			mu.Lock()
			defer mu.Unlock()
			note(f, a...)
		}}
		defer u.cleanup()
		return u.run(ctx)
	})
}

// upgradeRun is one run of the upgrade case.
type upgradeRun struct {
	e       *env
	note    func(string, ...any)
	dir     string // the installed binary, the PID file, the replacement build
	bin     string // the installed binary: os.Args[0] of every process
	next    string // the replacement build
	pidFile string
	logPath string
	old     *proxyProc
	oldPID  int

	mu     sync.Mutex
	newPID int // once the PID file names it
}

// upgradeSwap is what the swap saw.
type upgradeSwap struct {
	errs     []error
	sigAt    time.Time // SIGUSR2 sent
	readyAt  time.Time // the PID file named another process
	stopAt   time.Time // the old process logged that it stopped accepting
	finished time.Time
	probes   []upgradeProbe
}

// upgradeProbe is one control connection opened during the swap.
type upgradeProbe struct {
	start time.Time
	took  time.Duration // connect, greeting and QUIT
	dial  time.Duration // connect
	err   error
	owner int // PID of the process that held the proxy's side, 0: not found
}

func (u *upgradeRun) getNewPID() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.newPID
}

func (u *upgradeRun) run(ctx context.Context) error {
	if err := u.prepare(); err != nil {
		return err
	}
	// Once the old process exits, the new one is re-parented to this
	// process, which can then reap it and see its exit status.
	if err := upgradeSubreaper(true); err != nil {
		return fmt.Errorf("PR_SET_CHILD_SUBREAPER: %w", err)
	}
	defer upgradeSubreaper(false)

	var err error
	u.logPath = filepath.Join(u.e.work, upgradeLog)
	u.old, err = upgradeStartProxy(ctx, u.bin, u.logPath, "--listen", upgradeListen, "--upstream", u.e.vs.Addr(),
		"--passive-ports", upgradePassive, "--health", upgradeHealth, "--log-format", "json", "--log-level", "debug",
		"--pid-file", u.pidFile, "--drain-timeout", upgradeDrain.String(), "--data-accept-timeout", "3s", "--dial-timeout", "5s")
	if err != nil {
		return err
	}
	u.oldPID = u.old.pid()
	if pid, err := upgradeWaitPIDFile(u.pidFile, func(pid int) bool { return pid != 0 }, 5*time.Second); err != nil {
		return err
	} else if pid != u.oldPID {
		return fmt.Errorf("PID file says %d, the proxy started is %d", pid, u.oldPID)
	}
	base, err := u.old.idle(10 * time.Second)
	if err != nil {
		return err
	}
	u.note("old process %d (%s): %s", u.oldPID, u.versionOf(u.bin), base)

	f, err := loggedIn(u.old, clientIP)
	if err != nil {
		return err
	}
	defer f.close()
	swapped := make(chan upgradeSwap, 1)
	hooked := false
	x := f.retr(u.e.big.Name, xferOpts{mode: "epsv", rate: upgradeRate, hookAt: upgradeHookAt, hook: func() {
		hooked = true
		go func() { swapped <- u.swap() }()
	}})
	downloadEnd := time.Now()
	v := judgeRetr(x, u.e.big)
	var errs []error
	var sw upgradeSwap
	if hooked {
		// The swap's goroutine ends before the case does, whatever the
		// download's outcome.
		select {
		case sw = <-swapped:
			errs = sw.errs
		case <-time.After(30 * time.Second):
			return fmt.Errorf("the swap did not finish within 30s of the download's end")
		}
	} else {
		errs = append(errs, fmt.Errorf("the download ended before %d bytes: no upgrade was tried", upgradeHookAt))
	}
	if err := record(u.note, x, v); err != nil {
		errs = append(errs, err)
	} else if v != vOK || x.code != 226 {
		errs = append(errs, fmt.Errorf("download across the upgrade: %s -> %s, want 226 byte-exact", x, v))
	}
	if !sw.sigAt.IsZero() {
		u.note("download finished %.2fs after SIGUSR2", downloadEnd.Sub(sw.sigAt).Seconds())
	}
	if sw.finished.After(downloadEnd) {
		errs = append(errs, fmt.Errorf("the download ended %.2fs before the swap's checks were over: it must outlast them", sw.finished.Sub(downloadEnd).Seconds()))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}

	// The old process holds the session until the client quits, then
	// exits by itself.
	if u.old.exited() {
		return fmt.Errorf("the old process exited before its session ended: %v", u.old.exitErr)
	}
	quitAt := time.Now()
	f.quit()
	code, ok := u.old.wait(10 * time.Second)
	if !ok {
		return fmt.Errorf("the old process %d did not exit within 10s of its last session's QUIT", u.oldPID)
	}
	u.note("old process exit status %d, %.2fs after SIGUSR2, %.2fs after its session's QUIT", code,
		time.Since(sw.sigAt).Seconds(), time.Since(quitAt).Seconds())
	if code != 0 {
		return fmt.Errorf("old process exit status %d, want 0", code)
	}
	if d := time.Since(sw.sigAt); d >= upgradeDrain {
		return fmt.Errorf("the old process exited %.1fs after SIGUSR2, beyond --drain-timeout %v", d.Seconds(), upgradeDrain)
	}
	return u.afterOldExit()
}

// prepare installs a copy of the proxy binary in the work directory and
// builds the replacement.
func (u *upgradeRun) prepare() error {
	dir, err := filepath.Abs(filepath.Join(u.e.work, "upgrade"))
	if err != nil {
		return err
	}
	u.dir = dir
	u.bin = filepath.Join(dir, "ftpproxy")
	u.next = filepath.Join(dir, "build", "ftpproxy")
	u.pidFile = filepath.Join(dir, "ftpproxy.pid")
	if err := os.MkdirAll(filepath.Dir(u.next), 0o755); err != nil {
		return err
	}
	if err := upgradeCopy(*flagProxyBin, u.bin); err != nil {
		return err
	}
	src, err := filepath.Abs(*flagUpgradeSrc)
	if err != nil {
		return err
	}
	start := time.Now()
	cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+upgradeVersion, "-o", u.next, "./cmd/ftpproxy")
	cmd.Dir = src
	// The namespace has no network: everything must come from the module
	// cache, as for the build run.sh made a moment ago.
	cmd.Env = append(os.Environ(), "GOPROXY=off", "GOFLAGS=-mod=readonly", "GOTOOLCHAIN=local")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building the replacement in %s: %v\n%s", src, err, out)
	}
	oldV, nextV := u.versionOf(u.bin), u.versionOf(u.next)
	u.note("replacement built in %.1fs: %q, installed: %q", time.Since(start).Seconds(), nextV, oldV)
	if nextV != "ftpproxy "+upgradeVersion || oldV == nextV {
		return fmt.Errorf("versions: installed %q, replacement %q: want the replacement to say %q and differ", oldV, nextV, upgradeVersion)
	}
	return nil
}

// versionOf runs `bin version`.
func (u *upgradeRun) versionOf(bin string) string {
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("version: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// swap runs while the download does: the probe loop starts, the binary is
// replaced on disk, the PID in the PID file gets SIGUSR2, the PID file must
// name a new process and the old one must stop accepting; then the health
// endpoint and a session with a 1 MiB download must be the new process's
// while the old one still has the download.
func (u *upgradeRun) swap() (sw upgradeSwap) {
	fail := func(format string, a ...any) { sw.errs = append(sw.errs, fmt.Errorf(format, a...)) }
	defer func() { sw.finished = time.Now() }()

	stop := make(chan struct{})
	probed := make(chan []upgradeProbe, 1)
	go func() { probed <- u.probeLoop(stop) }()
	stopProbes := func() {
		if stop != nil {
			close(stop)
			stop = nil
			sw.probes = <-probed
			u.judgeProbes(&sw, fail)
		}
	}
	defer stopProbes()
	time.Sleep(upgradeLead)

	// Installed as a package manager does: a new file, renamed over the
	// old one, whose inode the running process keeps.
	tmp := u.bin + ".new"
	if err := upgradeCopy(u.next, tmp); err != nil {
		fail("installing the replacement: %v", err)
		return
	}
	if err := os.Rename(tmp, u.bin); err != nil {
		fail("installing the replacement: %v", err)
		return
	}
	pid, err := upgradeReadPIDFile(u.pidFile)
	if err != nil || pid != u.oldPID {
		fail("PID file before SIGUSR2: %d %v, want %d", pid, err, u.oldPID)
		return
	}
	sw.sigAt = time.Now()
	if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
		fail("SIGUSR2 to %d: %v", pid, err)
		return
	}
	newPID, err := upgradeWaitPIDFile(u.pidFile, func(p int) bool { return p != u.oldPID }, 10*time.Second)
	if err != nil {
		fail("after SIGUSR2: %v", err)
		return
	}
	sw.readyAt = time.Now()
	u.mu.Lock()
	u.newPID = newPID
	u.mu.Unlock()
	u.note("PID file: %d -> %d, %.0fms after SIGUSR2", u.oldPID, newPID, sw.readyAt.Sub(sw.sigAt).Seconds()*1000)
	if ppid := upgradePPID(newPID); ppid != u.oldPID {
		fail("the new process %d has parent %d, want the old process %d", newPID, ppid, u.oldPID)
	}
	oldExe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", u.oldPID))
	newExe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", newPID))
	u.note("executables: old %s, new %s", oldExe, newExe)
	if newExe != u.bin || oldExe != u.bin+" (deleted)" {
		fail("executables: old %q, new %q: want the new one to run %s and the old one its replaced file", oldExe, newExe, u.bin)
	}
	if err := upgradeWaitLog(u.logPath, "upgraded: the new process accepts; draining this one", 5*time.Second); err != nil {
		fail("the old process: %v", err)
		return
	}
	sw.stopAt = time.Now()
	time.Sleep(upgradeTail)
	stopProbes()

	// The health endpoint is the new process's: 200 "ok" with none of
	// the old process's session or passive port while that one still
	// runs the download.
	npx := u.newProxy(newPID)
	var hs snapshot
	deadline := time.Now().Add(5 * time.Second)
	for {
		hs, err = npx.readHealth()
		if err == nil && hs.status == 200 && hs.state == "ok" && hs.sessions == 0 && hs.portsInUse == 0 {
			break
		}
		if time.Now().After(deadline) {
			fail("health after the swap: %d %s %s (%v), want 200 ok with no session: the new process's", hs.status, hs.state, hs, err)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	u.note("health after the swap, download still in the old process: %d %s, %s", hs.status, hs.state, hs)

	// A session during the overlap is the new process's, and downloads
	// through a passive port of its own while the old process still
	// holds one of the same range.
	g, err := loggedIn(npx, clientIP)
	if err != nil {
		fail("session during the overlap: %v", err)
		return
	}
	defer g.quit()
	if owner := u.owner(g.conn); owner != newPID {
		fail("session during the overlap served by PID %d, want the new process %d", owner, newPID)
	}
	gx := g.retr(u.e.one.Name, xferOpts{mode: "epsv"})
	gv := judgeRetr(gx, u.e.one)
	u.note("session during the overlap (new process): %s -> %s", gx, gv)
	if gv != vOK {
		fail("1 MiB download through the new process during the overlap: %s -> %s", gx, gv)
	}
	if u.old.exited() {
		fail("the old process exited with its download still running: %v", u.old.exitErr)
	}
	return
}

// probeLoop opens a control connection every upgradeEvery until stop,
// and reports each.
func (u *upgradeRun) probeLoop(stop <-chan struct{}) []upgradeProbe {
	var mu sync.Mutex
	var out []upgradeProbe
	var wg sync.WaitGroup
	tick := time.NewTicker(upgradeEvery)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			wg.Wait()
			return out
		case <-tick.C:
		}
		wg.Go(func() {
			p := u.probe()
			mu.Lock()
			out = append(out, p)
			mu.Unlock()
		})
	}
}

// probe connects, wants 220, sees which process serves it, and quits
// (221).
func (u *upgradeRun) probe() (p upgradeProbe) {
	p.start = time.Now()
	defer func() { p.took = time.Since(p.start) }()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientIP)}}
	c, err := d.Dial("tcp", upgradeListen)
	p.dial = time.Since(p.start)
	if err != nil {
		p.err = err
		return p
	}
	f := &ftpClient{conn: c.(*net.TCPConn), r: bufio.NewReader(c), src: clientIP, timeout: 5 * time.Second}
	defer f.close()
	rep, err := f.read()
	if err != nil {
		p.err = fmt.Errorf("greeting: %w", err)
		return p
	}
	if rep.code != 220 {
		p.err = fmt.Errorf("greeting %q, want 220", rep)
		return p
	}
	p.owner = u.owner(f.conn)
	r, err := f.cmd("QUIT")
	switch {
	case err != nil:
		p.err = fmt.Errorf("QUIT: %w", err)
	case r.code != 221:
		p.err = fmt.Errorf("QUIT: %q, want 221", r)
	}
	return p
}

// owner returns the PID of the proxy process holding the proxy's side of
// the client connection c: the old process, the new one (named by the PID
// file or not yet), or 0.
func (u *upgradeRun) owner(c net.Conn) int {
	inode, err := upgradeSocketInode(c)
	if err != nil {
		return 0
	}
	pids := []int{u.oldPID}
	if n := u.getNewPID(); n != 0 {
		pids = append(pids, n)
	} else {
		// Before it is ready the new process already serves on the
		// inherited listeners.
		pids = append(pids, upgradeChildren(u.oldPID)...)
	}
	for _, pid := range pids {
		if upgradeHoldsSocket(pid, inode) {
			return pid
		}
	}
	return 0
}

// judgeProbes checks the control connections of the swap: each greeted
// with 220 and quit with 221; they span the whole swap; the ones begun
// after the old process stopped accepting are all the new process's.
func (u *upgradeRun) judgeProbes(sw *upgradeSwap, fail func(string, ...any)) {
	n := len(sw.probes)
	if n == 0 {
		fail("no control connection was opened during the swap")
		return
	}
	slices.SortFunc(sw.probes, func(a, b upgradeProbe) int { return a.start.Compare(b.start) })
	zero := sw.sigAt
	if zero.IsZero() {
		zero = sw.probes[0].start
	}
	at := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return fmt.Sprintf("%+.0fms", t.Sub(zero).Seconds()*1000)
	}
	newPID := u.getNewPID()
	var byOld, byNew, unknown, during int
	var lastOld, firstNew, gapAt time.Time
	var gap, slowest, slowDial time.Duration
	var bad, late []string
	for i, p := range sw.probes {
		if i > 0 {
			if d := p.start.Sub(sw.probes[i-1].start); d > gap {
				gap, gapAt = d, sw.probes[i-1].start
			}
		}
		if p.took > slowest {
			slowest, slowDial = p.took, p.dial
		}
		if !sw.sigAt.IsZero() && !p.start.Before(sw.sigAt) && (sw.stopAt.IsZero() || p.start.Before(sw.stopAt)) {
			during++
		}
		if p.err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", at(p.start), p.err))
			continue
		}
		switch p.owner {
		case u.oldPID:
			byOld++
			lastOld = p.start
		case newPID:
			byNew++
			if firstNew.IsZero() {
				firstNew = p.start
			}
		default:
			unknown++
		}
		if !sw.stopAt.IsZero() && p.owner != newPID && p.start.After(sw.stopAt.Add(200*time.Millisecond)) {
			late = append(late, fmt.Sprintf("%s: PID %d", at(p.start), p.owner))
		}
	}
	u.note("control connections during the swap: %d, one every %v from %s to %s (old process stopped accepting by %s); "+
		"%d begun between SIGUSR2 and then, longest gap %.0fms after %s, slowest connect, greeting and QUIT %.0fms (connect %.0fms); "+
		"%d failed; served by the old process %d (last begun %s), by the new %d (first begun %s), owner not found %d",
		n, upgradeEvery, at(sw.probes[0].start), at(sw.probes[n-1].start), at(sw.stopAt),
		during, gap.Seconds()*1000, at(gapAt), slowest.Seconds()*1000, slowDial.Seconds()*1000,
		len(bad), byOld, at(lastOld), byNew, at(firstNew), unknown)
	if len(bad) > 0 {
		fail("%d of %d control connections during the swap were not greeted with 220 and quit with 221: %s", len(bad), n, upgradeFirst(bad, 10))
	}
	if len(late) > 0 {
		fail("%d control connections begun after the old process stopped accepting were not the new process's: %s", len(late), upgradeFirst(late, 10))
	}
	if !sw.stopAt.IsZero() && during == 0 {
		fail("no control connection began between SIGUSR2 and the old process's stop: the hand-over went untested")
	}
	if byOld == 0 || byNew == 0 {
		fail("control connections: %d served by the old process, %d by the new: want both", byOld, byNew)
	}
	if !sw.stopAt.IsZero() && (!sw.probes[0].start.Before(sw.sigAt) || !sw.probes[n-1].start.After(sw.stopAt.Add(time.Second))) {
		fail("the control connections did not span the swap")
	}
}

// afterOldExit: the PID file still names the new process, which serves a
// fresh session and whose log lines carry the replacement's version; the
// new process is the only one running the binary until SIGTERM, on which
// it exits 0 and the listener is gone.
func (u *upgradeRun) afterOldExit() error {
	newPID := u.getNewPID()
	if pid, err := upgradeReadPIDFile(u.pidFile); err != nil || pid != newPID {
		return fmt.Errorf("PID file after the old process exited: %d %v, want %d", pid, err, newPID)
	}
	npx := u.newProxy(newPID)
	f, err := loggedIn(npx, clientIP)
	if err != nil {
		return fmt.Errorf("fresh session after the upgrade: %w", err)
	}
	owner := u.owner(f.conn)
	x := f.retr(u.e.one.Name, xferOpts{mode: "pasv"})
	f.quit()
	v := judgeRetr(x, u.e.one)
	u.note("fresh session after the upgrade (PID %d): %s -> %s", owner, x, v)
	if owner != newPID || v != vOK {
		return fmt.Errorf("fresh session after the upgrade: PID %d, %s -> %s; want PID %d and ok", owner, x, v, newPID)
	}
	hs, err := npx.idle(10 * time.Second)
	if err != nil {
		return err
	}
	u.note("new process %d idle: %s", newPID, hs)
	if hs.status != 200 || hs.state != "ok" {
		return fmt.Errorf("health of the new process: %d %s", hs.status, hs.state)
	}
	if err := u.checkLog(); err != nil {
		return err
	}
	if running := upgradeRunning(u.dir); !slices.Equal(running, []int{newPID}) {
		return fmt.Errorf("processes running %s: %v, want only the new process %d", u.bin, running, newPID)
	}

	stopAt := time.Now()
	if err := syscall.Kill(newPID, syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM to the new process %d: %w", newPID, err)
	}
	status, reaped, err := upgradeWaitExit(newPID, 10*time.Second)
	if err != nil {
		return fmt.Errorf("the new process after SIGTERM: %w", err)
	}
	if reaped {
		u.note("new process exit status %d, %.2fs after SIGTERM", status.ExitStatus(), time.Since(stopAt).Seconds())
		if !status.Exited() || status.ExitStatus() != 0 {
			return fmt.Errorf("new process ended with %v, want exit status 0", status)
		}
	} else {
		u.note("new process gone %.2fs after SIGTERM (reaped elsewhere: no exit status)", time.Since(stopAt).Seconds())
	}
	if running := upgradeRunning(u.dir); len(running) > 0 {
		return fmt.Errorf("still running %s after SIGTERM: %v", u.bin, running)
	}
	d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientIP)}}
	if c, err := d.Dial("tcp", upgradeListen); err == nil {
		c.Close()
		return fmt.Errorf("%s still accepts after both processes are gone", upgradeListen)
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s after both processes are gone: %v, want connection refused", upgradeListen, err)
	}
	return nil
}

// checkLog reads the log both processes wrote (the new one inherits the
// old one's stderr): the listener line of each with its version, the
// hand-over on both sides, and no drain cut short or failed upgrade.
func (u *upgradeRun) checkLog() error {
	b, err := os.ReadFile(u.logPath)
	if err != nil {
		return err
	}
	var versions []string
	seen := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		msg, _ := m["message"].(string)
		if msg == "" {
			msg, _ = m["msg"].(string)
		}
		seen[msg] = true
		if msg == "ftpproxy listening" {
			v, _ := m["version"].(string)
			versions = append(versions, v)
		}
	}
	u.note("log: listener lines with versions %q", versions)
	var errs []error
	if len(versions) != 2 || versions[1] != upgradeVersion || versions[0] == upgradeVersion {
		errs = append(errs, fmt.Errorf("log: listener versions %q, want the installed one then %q", versions, upgradeVersion))
	}
	for _, want := range []string{"upgrade: starting the new binary", "upgrade: taking over the listeners; the old process drains",
		"upgraded: the new process accepts; draining this one", "ftpproxy stopped"} {
		if !seen[want] {
			errs = append(errs, fmt.Errorf("log: no line %q", want))
		}
	}
	for _, bad := range []string{"drain cut short: remaining sessions were closed", "upgrade failed; this process goes on", "upgrade: cannot signal readiness"} {
		if seen[bad] {
			errs = append(errs, fmt.Errorf("log: %q", bad))
		}
	}
	return errors.Join(errs...)
}

// newProxy is a proxyProc for the new process, which this process did
// not start: for its listener and health endpoint only.
func (u *upgradeRun) newProxy(pid int) *proxyProc {
	proc, _ := os.FindProcess(pid)
	return &proxyProc{name: "upgraded", listen: upgradeListen, health: upgradeHealth, logPath: u.logPath,
		cmd: &exec.Cmd{Process: proc}, done: make(chan struct{})}
}

// cleanup stops whatever of the case still runs, by PID.
func (u *upgradeRun) cleanup() {
	if u.old != nil {
		u.old.kill()
	}
	for _, pid := range upgradeRunning(u.dir) {
		syscall.Kill(pid, syscall.SIGKILL)
		upgradeWaitExit(pid, 5*time.Second)
	}
}

// --- helpers ----------------------------------------------------------------

// upgradeStartProxy is startProxy for a given binary and log file.
func upgradeStartProxy(ctx context.Context, bin, logPath string, args ...string) (*proxyProc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if proxyGOGC != "" {
		cmd.Env = append(os.Environ(), "GOGC="+proxyGOGC)
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &proxyProc{name: "upgrade", listen: upgradeListen, health: upgradeHealth, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	exited := make(chan error, 1)
	go func() {
		p.exitErr = cmd.Wait()
		logf.Close()
		exited <- p.exitErr
		close(p.done)
	}()
	if err := peers.WaitGreeting(ctx, upgradeListen, 10*time.Second, exited); err != nil {
		p.kill()
		out, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("ftpproxy did not come up on %s: %v\n%s", upgradeListen, err, peers.Tail(string(out), 2000))
	}
	return p, nil
}

// upgradeCopy copies the executable src to dst, synced to disk.
func upgradeCopy(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func upgradeReadPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// upgradeWaitPIDFile polls the PID file until ok accepts its PID.
func upgradeWaitPIDFile(path string, ok func(int) bool, limit time.Duration) (int, error) {
	deadline := time.Now().Add(limit)
	for {
		pid, err := upgradeReadPIDFile(path)
		if err == nil && ok(pid) {
			return pid, nil
		}
		if time.Now().After(deadline) {
			return pid, fmt.Errorf("PID file %s after %v: %d %v", path, limit, pid, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// upgradeWaitLog polls the JSON log until a line has message msg.
func upgradeWaitLog(path, msg string, limit time.Duration) error {
	want := fmt.Sprintf("%q", msg)
	deadline := time.Now().Add(limit)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no log line %s within %v", want, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// upgradeSubreaper makes this process the reaper of its descendants'
// orphans, or stops it.
func upgradeSubreaper(on bool) error {
	const prSetChildSubreaper = 36
	v := uintptr(0)
	if on {
		v = 1
	}
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, v, 0); errno != 0 {
		return errno
	}
	return nil
}

// upgradePPID returns the parent of pid, from /proc, or 0.
func upgradePPID(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return 0
	}
	pp, _ := strconv.Atoi(f[1])
	return pp
}

// upgradeChildren returns the children of pid, from each of its threads'
// /proc children list.
func upgradeChildren(pid int) []int {
	var out []int
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, w := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(w); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// upgradeGone reports whether pid no longer runs (no such process, or a
// zombie).
func upgradeGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && (f[0] == "Z" || f[0] == "X")
}

// upgradeWaitExit waits up to limit for pid to end. It reaps pid if pid is
// this process's child (reaped true, with its status); otherwise it only
// sees it go.
func upgradeWaitExit(pid int, limit time.Duration) (syscall.WaitStatus, bool, error) {
	deadline := time.Now().Add(limit)
	for {
		var ws syscall.WaitStatus
		wpid, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		if wpid == pid {
			return ws, true, nil
		}
		if errors.Is(err, syscall.ECHILD) && upgradeGone(pid) {
			return 0, false, nil
		}
		if time.Now().After(deadline) {
			return 0, false, fmt.Errorf("PID %d still runs after %v", pid, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// upgradeRunning returns the PIDs of the live processes whose executable
// lies in dir (replaced files included), in order.
func upgradeRunning(dir string) []int {
	if dir == "" {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink("/proc/" + e.Name() + "/exe")
		if err != nil || !strings.HasPrefix(exe, dir+"/") || upgradeGone(pid) {
			continue
		}
		pids = append(pids, pid)
	}
	slices.Sort(pids)
	return pids
}

// upgradeSocketInode returns the inode of the proxy's side of the client
// connection c: the TCP socket whose local address is c's remote one and
// whose remote address is c's local one. It asks the kernel for that one
// socket (sock_diag), as reading /proc/net/tcp with thousands of TIME_WAIT
// entries for every connection would load the machine under test.
func upgradeSocketInode(c net.Conn) (string, error) {
	local, remote := c.RemoteAddr().(*net.TCPAddr), c.LocalAddr().(*net.TCPAddr)
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, syscall.NETLINK_INET_DIAG)
	if err != nil {
		return "", err
	}
	defer syscall.Close(fd)
	tv := syscall.NsecToTimeval(int64(2 * time.Second))
	syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &tv)
	// struct nlmsghdr, then struct inet_diag_req_v2 for one TCP socket by
	// its addresses, any state, no cookie.
	const sockDiagByFamily, reqLen = 20, 16 + 56
	req := make([]byte, reqLen)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], reqLen)
	ne.PutUint16(req[4:], sockDiagByFamily)
	ne.PutUint16(req[6:], syscall.NLM_F_REQUEST)
	ne.PutUint32(req[8:], 1)
	r := req[16:]
	r[0], r[1] = syscall.AF_INET, syscall.IPPROTO_TCP
	ne.PutUint32(r[4:], 0xffffffff)
	binary.BigEndian.PutUint16(r[8:], uint16(local.Port))
	binary.BigEndian.PutUint16(r[10:], uint16(remote.Port))
	copy(r[12:], local.IP.To4())
	copy(r[28:], remote.IP.To4())
	ne.PutUint32(r[48:], 0xffffffff)
	ne.PutUint32(r[52:], 0xffffffff)
	if err := syscall.Sendto(fd, req, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return "", err
	}
	buf := make([]byte, 8192)
	n, _, err := syscall.Recvfrom(fd, buf, 0)
	if err != nil {
		return "", err
	}
	msgs, err := syscall.ParseNetlinkMessage(buf[:n])
	if err != nil {
		return "", err
	}
	for _, m := range msgs {
		switch {
		case m.Header.Type == syscall.NLMSG_ERROR && len(m.Data) >= 4:
			return "", fmt.Errorf("sock_diag %v <- %v: %w", local, remote, syscall.Errno(-int32(ne.Uint32(m.Data))))
		case m.Header.Type == sockDiagByFamily && len(m.Data) >= 72:
			// struct inet_diag_msg: the inode is its last field.
			return strconv.FormatUint(uint64(ne.Uint32(m.Data[68:])), 10), nil
		}
	}
	return "", fmt.Errorf("sock_diag %v <- %v: no answer", local, remote)
}

// upgradeHoldsSocket reports whether pid has the socket inode open.
func upgradeHoldsSocket(pid int, inode string) bool {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	want := "socket:[" + inode + "]"
	for _, e := range ents {
		if l, _ := os.Readlink(dir + "/" + e.Name()); l == want {
			return true
		}
	}
	return false
}

// upgradeFirst joins the first n items and says how many more there are.
func upgradeFirst(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, "; ")
	}
	return strings.Join(items[:n], "; ") + fmt.Sprintf("; and %d more", len(items)-n)
}
