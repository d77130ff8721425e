//go:build interop

package faults

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

var (
	flagProxyBin = flag.String("ftpproxy", "../../bin/ftpproxy", "the ftpproxy binary")
	flagPeers    = flag.String("peers", "../.peers", "directory the servers were unpacked into by install-peers.sh")
	flagSlowPy   = flag.String("slowftplib", "slow_ftplib.py", "the paced ftplib client script")
	flagWork     = flag.String("work", "", "work directory (default: a new directory under $TMPDIR)")
	flagKeep     = flag.Bool("keep", false, "keep the work directory even when every case passed")
	flagCases    = flag.String("cases", "", "run only the fault cases whose name matches this regexp")
	flagSessions = flag.Int("churn", 2000, "sessions opened and closed in the churn case")
	flagSettle   = flag.Duration("settle", 20*time.Second, "how long goroutines and fds may take to return to their baseline")
	flagGOGC     = flag.String("proxy-gogc", "1", "GOGC for the proxy processes of the fault run (empty: unset); a low value makes the Go runtime free its cached splice pipes soon after the transfers, so pipe fds come back to the baseline within the settle time")
)

// proxyGOGC is the GOGC the proxies run with: -proxy-gogc or -soak-gogc.
var proxyGOGC string

// Addresses inside the namespace.
const (
	proxyIP  = "127.0.0.2"
	serverIP = "127.0.0.3"
	clientIP = "127.0.0.4"
	otherIP  = "127.0.0.5"
)

// --- the proxy process ----------------------------------------------------

// proxyProc is one running ftpproxy, started by the suite so that it can
// signal it and see its exit status.
type proxyProc struct {
	name    string
	listen  string
	health  string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error
}

// startProxy runs ftpproxy with --health and waits for a greeting through
// it (so the upstream must answer when it starts).
func startProxy(ctx context.Context, name, dir, listen, health, upstream, passive string, extra ...string) (*proxyProc, error) {
	args := append([]string{"--listen", listen, "--upstream", upstream, "--passive-ports", passive,
		"--health", health, "--log-format", "json"}, extra...)
	return runProxy(ctx, name, dir, listen, health, args)
}

// runProxy runs ftpproxy with args, its log in dir, and waits for a
// greeting on listen.
func runProxy(ctx context.Context, name, dir, listen, health string, args []string) (*proxyProc, error) {
	logPath := filepath.Join(dir, "ftpproxy-"+name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(*flagProxyBin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if proxyGOGC != "" {
		cmd.Env = append(os.Environ(), "GOGC="+proxyGOGC)
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &proxyProc{name: name, listen: listen, health: health, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	exited := make(chan error, 1)
	go func() {
		p.exitErr = cmd.Wait()
		logf.Close()
		exited <- p.exitErr
		close(p.done)
	}()
	if err := peers.WaitGreeting(ctx, listen, 10*time.Second, exited); err != nil {
		p.kill()
		out, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("ftpproxy %s did not come up on %s: %v\n%s", name, listen, err, peers.Tail(string(out), 2000))
	}
	return p, nil
}

func (p *proxyProc) pid() int { return p.cmd.Process.Pid }

func (p *proxyProc) signal(sig syscall.Signal) error { return syscall.Kill(p.pid(), sig) }

// wait waits up to d for the proxy to exit and returns its exit code (-1
// if it was killed by a signal) and whether it exited.
func (p *proxyProc) wait(d time.Duration) (int, bool) {
	select {
	case <-p.done:
	case <-time.After(d):
		return 0, false
	}
	var ee *exec.ExitError
	if errors.As(p.exitErr, &ee) {
		return ee.ExitCode(), true
	}
	if p.exitErr != nil {
		return -1, true
	}
	return 0, true
}

func (p *proxyProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill stops the proxy: SIGTERM, a second SIGTERM (stop at once), then
// SIGKILL if it still runs.
func (p *proxyProc) kill() {
	if p.exited() {
		return
	}
	p.signal(syscall.SIGTERM)
	time.Sleep(50 * time.Millisecond)
	p.signal(syscall.SIGTERM)
	if _, ok := p.wait(5 * time.Second); !ok {
		p.signal(syscall.SIGKILL)
		p.wait(5 * time.Second)
	}
}

// snapshot is what the health endpoint and /proc say about the proxy.
type snapshot struct {
	status     int
	state      string
	sessions   int
	portsInUse int
	portsSize  int
	goroutines int
	fds        int // all open files
	sockets    int
	pipes      int // mostly the runtime's cached splice pipes
}

func (s snapshot) String() string {
	return fmt.Sprintf("%d sessions, %d/%d passive ports in use, %d goroutines, %d fds (%d sockets, %d pipes)", s.sessions, s.portsInUse, s.portsSize, s.goroutines, s.fds, s.sockets, s.pipes)
}

// within reports whether s is back at or below base. Pipes are left out:
// the Go runtime keeps the pipes it splices through in a pool and closes
// them only after two garbage collections, which an idle proxy may not run
// for minutes; every other file (sockets above all) must be back.
func (s snapshot) within(base snapshot) bool {
	return s.sessions == 0 && s.portsInUse == 0 && s.goroutines <= base.goroutines &&
		s.sockets <= base.sockets && s.fds-s.pipes <= base.fds-base.pipes
}

var healthRe = regexp.MustCompile(`^(\w+), (\d+) sessions(?:, (\d+)/(\d+) passive ports in use)?, (\d+) goroutines`)

// healthClient opens a new connection per request, so that no idle
// keep-alive connection (and its goroutines) stays in the proxy.
var healthClient = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// readHealth fetches the health endpoint and counts the open fds.
func (p *proxyProc) readHealth() (snapshot, error) {
	resp, err := healthClient.Get("http://" + p.health + "/")
	if err != nil {
		return snapshot{}, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return snapshot{}, err
	}
	m := healthRe.FindStringSubmatch(string(body))
	if m == nil {
		return snapshot{}, fmt.Errorf("health body %q", body)
	}
	s := snapshot{status: resp.StatusCode, state: m[1]}
	s.sessions, _ = strconv.Atoi(m[2])
	s.portsInUse, _ = strconv.Atoi(m[3])
	s.portsSize, _ = strconv.Atoi(m[4])
	s.goroutines, _ = strconv.Atoi(m[5])
	// The health request's own connection may still be open for a moment:
	// counted by the caller's polling, which waits for the figures to fall.
	dir := fmt.Sprintf("/proc/%d/fd", p.pid())
	ents, err := os.ReadDir(dir)
	if err != nil {
		return s, err
	}
	s.fds = len(ents)
	for _, e := range ents {
		l, _ := os.Readlink(dir + "/" + e.Name())
		switch {
		case strings.HasPrefix(l, "socket:"):
			s.sockets++
		case strings.HasPrefix(l, "pipe:"):
			s.pipes++
		}
	}
	return s, nil
}

// idle waits until the proxy has no session and no passive port in use and
// its goroutine and fd counts have held still for a moment; it returns
// that state as a baseline.
func (p *proxyProc) idle(limit time.Duration) (snapshot, error) {
	deadline := time.Now().Add(limit)
	var last snapshot
	stable := 0
	for time.Now().Before(deadline) {
		s, err := p.readHealth()
		if err == nil && s.sessions == 0 && s.portsInUse == 0 {
			if s.goroutines == last.goroutines && s.fds == last.fds {
				stable++
				if stable >= 3 {
					return s, nil
				}
			} else {
				stable = 0
			}
			last = s
		}
		time.Sleep(150 * time.Millisecond)
	}
	return last, fmt.Errorf("proxy %s not idle within %v: %s", p.name, limit, last)
}

// settle waits until the proxy's figures are back at or below base.
func (p *proxyProc) settle(base snapshot, limit time.Duration) (snapshot, error) {
	deadline := time.Now().Add(limit)
	var last snapshot
	var err error
	for time.Now().Before(deadline) {
		last, err = p.readHealth()
		if err == nil && last.within(base) {
			return last, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		return last, fmt.Errorf("health: %v", err)
	}
	return last, fmt.Errorf("leak: after %v the proxy has %s; before the case %s", limit, last, base)
}

// --- server processes -----------------------------------------------------

// childMap maps each process to its children, from /proc.
func childMap() map[int][]int {
	ents, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		children[pp] = append(children[pp], pid)
	}
	return children
}

// descendants returns the PIDs of every process below pid.
func descendants(pid int) []int {
	children := childMap()
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		out = append(out, children[p]...)
		queue = append(queue, children[p]...)
	}
	return out
}

// sessionTrees returns, per session, the processes a forking server runs
// for it: each direct child of the server with its own descendants.
func sessionTrees(serverPID int) [][]int {
	children := childMap()
	var trees [][]int
	for _, c := range children[serverPID] {
		tree := []int{c}
		for i := 0; i < len(tree); i++ {
			tree = append(tree, children[tree[i]]...)
		}
		trees = append(trees, tree)
	}
	return trees
}

// killServer SIGKILLs the server's process group and every process below
// it (a session process may have left the group).
func killServer(srv *peers.Server) {
	pids := descendants(srv.PID())
	syscall.Kill(-srv.PID(), syscall.SIGKILL)
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGKILL)
	}
}

// killSessions SIGKILLs every session process of the server and returns
// how many it killed.
func killSessions(srv *peers.Server) int {
	n := 0
	for _, tree := range sessionTrees(srv.PID()) {
		for _, pid := range tree {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				n++
			}
		}
	}
	return n
}

// --- the gate: an upstream that can turn silent ---------------------------

// gate is a TCP front of an FTP server. While open it forwards each
// connection to the server from the connecting peer's own IP (so that the
// server's data-connection address checks still match the proxy); while
// silent it accepts connections and never says a word.
type gate struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	silent bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func startGate(addr, target string) (*gate, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	g := &gate{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	g.wg.Go(g.serve)
	return g, nil
}

func (g *gate) setSilent(v bool) {
	g.mu.Lock()
	g.silent = v
	g.mu.Unlock()
}

func (g *gate) track(c net.Conn, add bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if add {
		g.conns[c] = struct{}{}
	} else {
		delete(g.conns, c)
	}
}

func (g *gate) serve() {
	for {
		c, err := g.ln.Accept()
		if err != nil {
			return
		}
		g.mu.Lock()
		silent := g.silent
		g.mu.Unlock()
		g.track(c, true)
		g.wg.Go(func() {
			defer g.track(c, false)
			defer c.Close()
			if silent {
				// Accept, then sleep: read until the peer gives up.
				io.Copy(io.Discard, c)
				return
			}
			ip := c.RemoteAddr().(*net.TCPAddr).IP
			d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: ip}}
			up, err := d.Dial("tcp", g.target)
			if err != nil {
				return
			}
			g.track(up, true)
			defer g.track(up, false)
			defer up.Close()
			done := make(chan struct{}, 2)
			go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
			go func() { io.Copy(c, up); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
			<-done
			<-done
		})
	}
}

func (g *gate) close() {
	g.ln.Close()
	g.mu.Lock()
	for c := range g.conns {
		c.Close()
	}
	g.mu.Unlock()
	g.wg.Wait()
}

// --- subprocess clients ---------------------------------------------------

// startGroup starts argv in a process group of its own, output to logPath.
func startGroup(ctx context.Context, logPath string, argv ...string) (*exec.Cmd, error) {
	out, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, err
	}
	go func() { <-ctx.Done(); out.Close() }()
	return cmd, nil
}

// curlArgv is a curl command line through the proxy at addr in mode.
func curlArgv(addr, mode string, rate string, extra ...string) []string {
	a := []string{"curl", "-sS", "--max-time", "120", "--connect-timeout", "10",
		"--interface", clientIP, "--user", peers.User + ":" + peers.Password,
		"-w", "final %{response_code}\n"}
	if rate != "" {
		a = append(a, "--limit-rate", rate)
	}
	switch mode {
	case "epsv":
		a = append(a, "--ftp-pasv")
	case "pasv":
		a = append(a, "--ftp-pasv", "--disable-epsv")
	case "port":
		a = append(a, "-P", clientIP, "--disable-eprt")
	case "eprt":
		a = append(a, "-P", clientIP)
	}
	return append(a, extra...)
}

// slowPyArgv is a slow_ftplib.py command line through the proxy at addr.
func slowPyArgv(addr, mode, op, remote, local string, rate int64) []string {
	host, port, _ := net.SplitHostPort(addr)
	return []string{"python3", *flagSlowPy, "--host", host, "--port", port, "--user", peers.User,
		"--password", peers.Password, "--source", clientIP, "--mode", mode, "--rate", strconv.FormatInt(rate, 10),
		op, remote, local}
}

// fileSize returns the size of path, or -1.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return fi.Size()
}

// waitGrow polls path until it holds at least n bytes.
func waitGrow(path string, n int64, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if fileSize(path) >= n {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%s did not reach %d bytes within %v (has %d)", path, n, limit, fileSize(path))
}

// errorsAs is errors.As, for files that do not import errors.
func errorsAs(err error, target any) bool { return errors.As(err, target) }
