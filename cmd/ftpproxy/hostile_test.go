package main_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestHostileUpstream runs the ftpproxy binary against a fake FTP server
// that sends what a broken or malicious server may send: replies of tens of
// megabytes, replies no command asked for, and a bare LF that turns one
// reply into two. The proxy must keep each session's memory bounded and
// show its client one well-formed answer per command.
func TestHostileUpstream(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads the proxy's memory from /proc/<pid>/status and socket queues from /proc/net/tcp")
	}
	bin := buildProxy(t)
	fx := newFixtures(t)

	t.Run("huge replies in concurrent sessions", func(t *testing.T) {
		testHugeReplies(t, bin, fx)
	})
	t.Run("unsolicited replies are not passed on", func(t *testing.T) {
		testUnsolicited(t, bin, fx)
	})
	t.Run("bare LF splits a reply", func(t *testing.T) {
		testBareLF(t, bin, fx)
	})
}

// fixtures are what the fake upstream sends.
type fixtures struct {
	payload []byte // the file RETR fetches
	filler  string // path of a file of hugeReplyLines continuation lines
}

// newFixtures makes a random payload and the middle of a huge reply. The
// fake sends the huge replies from a file, with sendfile, so that the race
// detector does not look at each of the test's gigabytes twice.
func newFixtures(t *testing.T) fixtures {
	t.Helper()
	fx := fixtures{payload: make([]byte, payloadSize), filler: filepath.Join(t.TempDir(), "filler")}
	rand.NewChaCha8([32]byte{'f', 't', 'p'}).Read(fx.payload)
	// A filler line starts with a space, so it can never end a reply, and
	// has no digits a 227 parser could take for an address.
	line := (" " + strings.Repeat("hostile filler ", hugeLineLen/15+1))[:hugeLineLen] + "\r\n"
	block := []byte(strings.Repeat(line, 100))
	f, err := os.Create(fx.filler)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for range hugeReplyLines / 100 {
		if _, err := f.Write(block); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return fx
}

const (
	hostileSessions = 20      // sessions at once in the memory case
	hugeReplyLines  = 50_000  // continuation lines in a huge reply
	hugeLineLen     = 1_000   // bytes in each, well under --max-reply-line-length
	junkLines       = 10_000  // continuation lines in the unsolicited reply
	payloadSize     = 1 << 20 // the file each RETR fetches

	// maxBytesPerSession bounds the proxy's peak memory per busy session,
	// over its resident memory with one idle session. A session reads a
	// long reply in chunks of at most 64 lines or 64 KiB and keeps at most
	// 32 lines of a reply it must hold, so its live heap stays near
	// 0.2 MiB; what a peak adds to that is the garbage collector's
	// headroom while 20 sessions relay 100 MB of reply text each (measured
	// peaks: 0.6 to 1.6 MiB per session). One 50,000-line reply kept whole
	// is 50 MB, and the proxy that kept them took 176 MiB per session.
	maxBytesPerSession = 4 << 20

	// runawayRSS is where the test stops a proxy that keeps growing, long
	// before it could take the machine's memory.
	runawayRSS = 6 << 30

	stepTimeout    = 30 * time.Second // one exchange: a command and its reply, a transfer, a huge reply
	startTimeout   = 10 * time.Second // the proxy's start, and the proxy reading what the fake sent
	sessionTimeout = 2 * time.Minute  // the whole life of a control connection at the fake
	buildTimeout   = 2 * time.Minute
)

// testHugeReplies runs hostileSessions sessions at once, each with a huge
// 227 (scenario 1) and then a huge 226 (scenario 2), and holds the proxy's
// peak memory to maxBytesPerSession per session.
func testHugeReplies(t *testing.T, bin string, fx fixtures) {
	up := newHostileUpstream(t, fx)
	p := startProxy(t, bin, up.addr())

	idle, err := dialClient(p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.close()
	if err := idle.login("idle"); err != nil {
		t.Fatal(err)
	}
	base, err := procStatus(p.pid())
	if err != nil {
		t.Fatal(err)
	}

	mem := p.sampleMemory()
	want := sha256.Sum256(fx.payload)
	errs := make([]error, hostileSessions)
	var wg sync.WaitGroup
	for i := range hostileSessions {
		wg.Go(func() { errs[i] = hugeRepliesSession(p, want) })
	}
	wg.Wait()
	peak := mem.stop()

	for i, err := range errs {
		if err != nil {
			t.Errorf("session %d: %v", i, err)
		}
	}
	if peak.runaway {
		t.Errorf("the proxy's resident memory passed %d MiB; it was stopped", runawayRSS>>20)
	}
	perSession := float64(peak.hwm-base.rss) / hostileSessions
	t.Logf("proxy memory: %.1f MiB resident with one idle session, peak %.1f MiB (VmHWM; highest VmRSS sampled %.1f MiB) with %d sessions: %.2f MiB per session",
		mib(base.rss), mib(peak.hwm), mib(peak.rss), hostileSessions, perSession/(1<<20))
	if perSession >= maxBytesPerSession {
		t.Errorf("the proxy took %.2f MiB per session over its idle size; want under %.2f MiB",
			perSession/(1<<20), float64(maxBytesPerSession)/(1<<20))
	}
}

// hugeRepliesSession is one client of testHugeReplies.
func hugeRepliesSession(p *proxyProcess, want [32]byte) error {
	c, err := dialClient(p.addr)
	if err != nil {
		return err
	}
	defer c.close()
	if err := c.login("huge"); err != nil {
		return err
	}

	// Scenario 1: the fake answers the first PASV with 50,000 lines.
	data, err := c.pasv(p)
	if err != nil {
		return fmt.Errorf("huge 227: %w", err)
	}
	r, err := c.retr("RETR file", data, want)
	if err != nil {
		return fmt.Errorf("RETR after the huge 227: %w", err)
	}
	if r.code != 226 {
		return fmt.Errorf("RETR after the huge 227: completion %s", r)
	}

	// Scenario 2: the fake ends the transfer with a 50,000-line 226. The
	// proxy may leave lines out of its middle.
	if data, err = c.pasv(p); err != nil {
		return fmt.Errorf("second PASV: %w", err)
	}
	r, err = c.retr("RETR huge-226", data, want)
	if err != nil {
		return fmt.Errorf("RETR with a huge 226: %w", err)
	}
	if r.code != 226 || r.last != "226 done" {
		return fmt.Errorf("RETR with a huge 226: completion %s, want 226 ... 226 done", r)
	}
	return c.quit()
}

// testUnsolicited is scenario 3: after the 230, with no command pending,
// the fake sends a 10,002-line 200 reply and a 227. The client's NOOP
// must get the fake's answer to it and nothing before it.
func testUnsolicited(t *testing.T, bin string, fx fixtures) {
	up := newHostileUpstream(t, fx)
	p := startProxy(t, bin, up.addr())
	c, err := dialClient(p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if err := c.login("unsolicited"); err != nil {
		t.Fatal(err)
	}
	c.quietThen(t, up, "NOOP", "200 NOOP ok")
	if err := c.quit(); err != nil {
		t.Error(err)
	}
	if c.lines227 > 0 {
		t.Errorf("%d lines starting with 227 reached the client", c.lines227)
	}
}

// testBareLF is scenario 4: the fake answers SYST with "215 UNIX", a bare
// LF and a 227 line. The 227 answers nothing and must not reach the client.
func testBareLF(t *testing.T, bin string, fx fixtures) {
	up := newHostileUpstream(t, fx)
	p := startProxy(t, bin, up.addr())
	c, err := dialClient(p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if err := c.login("barelf"); err != nil {
		t.Fatal(err)
	}
	r, err := c.do("SYST")
	if err != nil {
		t.Fatal(err)
	}
	if !r.is("215 UNIX") {
		t.Fatalf("SYST: got %s, want 215 UNIX", r)
	}
	c.quietThen(t, up, "NOOP", "200 ok")
	if err := c.quit(); err != nil {
		t.Error(err)
	}
	if c.lines227 > 0 {
		t.Errorf("%d lines starting with 227 reached the client", c.lines227)
	}
}

// --- the proxy process ------------------------------------------------------

// buildProxy builds this command, without the race detector, into a
// temporary directory.
func buildProxy(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build ftpproxy with:", err)
	}
	bin := filepath.Join(t.TempDir(), "ftpproxy")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, goBin, "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// proxyProcess is a running ftpproxy.
type proxyProcess struct {
	t       *testing.T
	cmd     *exec.Cmd
	exited  chan struct{} // closed once the process has been waited for
	addr    string        // where clients connect
	host    netip.Addr    // the host in addr
	lo, hi  int           // its --passive-ports
	logPath string
}

// startProxy starts ftpproxy in front of upstream and waits until it
// listens. The process is killed when the test ends.
func startProxy(t *testing.T, bin, upstream string) *proxyProcess {
	t.Helper()
	listen := freeAddr(t)
	lo, hi := passiveRange(t, 64)
	logPath := filepath.Join(t.TempDir(), "ftpproxy.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--listen", listen.String(), "--upstream", upstream,
		"--passive-ports", fmt.Sprintf("%d-%d", lo, hi), "--log-format", "json", "--log-level", "info")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	p := &proxyProcess{t: t, cmd: cmd, exited: make(chan struct{}), addr: listen.String(),
		host: listen.Addr(), lo: lo, hi: hi, logPath: logPath}
	go func() {
		cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	t.Cleanup(p.stop)
	if err := p.waitListening(); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *proxyProcess) pid() int { return p.cmd.Process.Pid }

// waitListening waits for the proxy's "ftpproxy listening" log line.
func (p *proxyProcess) waitListening() error {
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, _ := os.ReadFile(p.logPath); bytes.Contains(b, []byte(`"message":"ftpproxy listening"`)) {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("ftpproxy exited at start: %s", p.logTail())
		case <-deadline.C:
			return fmt.Errorf("ftpproxy not listening after %v: %s", startTimeout, p.logTail())
		case <-tick.C:
		}
	}
}

// stop kills the proxy by its PID and waits for it; when the test has
// failed, it logs the end of the proxy's log.
func (p *proxyProcess) stop() {
	p.cmd.Process.Kill()
	select {
	case <-p.exited:
	case <-time.After(startTimeout):
		p.t.Errorf("ftpproxy (pid %d) still running %v after SIGKILL", p.pid(), startTimeout)
	}
	if p.t.Failed() {
		p.t.Logf("end of the ftpproxy log:\n%s", p.logTail())
	}
}

func (p *proxyProcess) logTail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	const keep = 4000
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return string(b)
}

// memStatus is what /proc/<pid>/status says of a process's memory, in
// bytes.
type memStatus struct {
	rss, hwm int64 // VmRSS, VmHWM (the highest VmRSS so far)
}

// procStatus reads VmRSS and VmHWM of process pid.
func procStatus(pid int) (memStatus, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memStatus{}, err
	}
	var m memStatus
	for line := range strings.Lines(string(b)) {
		name, value, _ := strings.Cut(line, ":")
		var dst *int64
		switch name {
		case "VmRSS":
			dst = &m.rss
		case "VmHWM":
			dst = &m.hwm
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return memStatus{}, fmt.Errorf("/proc/%d/status: %s: %w", pid, strings.TrimSpace(line), err)
		}
		*dst = kb << 10
	}
	if m.rss == 0 || m.hwm == 0 {
		return memStatus{}, fmt.Errorf("/proc/%d/status has no VmRSS or VmHWM", pid)
	}
	return m, nil
}

// memSampler follows a process's memory while sessions run.
type memSampler struct {
	p    *proxyProcess
	quit chan struct{}
	done chan memPeak
}

// memPeak is what a memSampler saw.
type memPeak struct {
	rss, hwm int64 // the highest VmRSS sampled, the last VmHWM
	runaway  bool  // VmRSS passed runawayRSS and the proxy was killed
}

// sampleMemory reads the proxy's memory every few milliseconds until stop,
// and kills the proxy if it passes runawayRSS.
func (p *proxyProcess) sampleMemory() *memSampler {
	s := &memSampler{p: p, quit: make(chan struct{}), done: make(chan memPeak, 1)}
	go func() {
		var peak memPeak
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		sample := func() {
			m, err := procStatus(p.pid())
			if err != nil {
				return // the proxy has gone; its last sample stands
			}
			peak.rss, peak.hwm = max(peak.rss, m.rss), max(peak.hwm, m.hwm)
			if m.rss > runawayRSS && !peak.runaway {
				peak.runaway = true
				p.cmd.Process.Kill()
			}
		}
		for {
			sample()
			select {
			case <-s.quit:
				sample()
				s.done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *memSampler) stop() memPeak {
	close(s.quit)
	return <-s.done
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr(t *testing.T) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return addrPort(ln.Addr())
}

// passiveRange finds n consecutive free ports below Linux's ephemeral range
// (32768 and up), so no port the fake or the client is given can be taken
// for one of the proxy's passive ports.
func passiveRange(t *testing.T, n int) (lo, hi int) {
	t.Helper()
	for range 50 {
		lo = 20000 + rand.IntN(32768-20000-n)
		if portsFree(lo, lo+n-1) {
			return lo, lo + n - 1
		}
	}
	t.Fatalf("no %d free consecutive ports below 32768", n)
	return 0, 0
}

func portsFree(lo, hi int) bool {
	for port := lo; port <= hi; port++ {
		ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return false
		}
		ln.Close()
	}
	return true
}

func addrPort(a net.Addr) netip.AddrPort {
	ap := a.(*net.TCPAddr).AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// --- the hostile upstream -----------------------------------------------------

// hostileUpstream is a fake FTP server. It greets with "220 hostile",
// answers USER with 331 and PASS with 230, and then behaves as the user
// name says:
//
//	huge         the first PASV gets a 50,000-line 227; "RETR huge-226" ends
//	             with a 50,000-line 226
//	unsolicited  right after the 230, a 10,002-line 200 reply and a 227 line
//	barelf       SYST gets "215 UNIX\n227 ...\r\n"; NOOP gets "200 ok"
//	idle         nothing more
//
// RETR sends the payload over the data connection of the last PASV.
type hostileUpstream struct {
	t  *testing.T
	ln net.Listener
	fx fixtures

	// wrote names the control connection as soon as the fake has written
	// lines that no command asked for.
	wrote chan connAddrs

	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]bool
}

// connAddrs are the two ends of a control connection between the proxy
// and the fake.
type connAddrs struct{ fake, proxy netip.AddrPort }

func newHostileUpstream(t *testing.T, fx fixtures) *hostileUpstream {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &hostileUpstream{t: t, ln: ln, fx: fx, wrote: make(chan connAddrs, 4), conns: map[net.Conn]bool{}}
	u.wg.Go(u.accept)
	t.Cleanup(u.close)
	return u
}

func (u *hostileUpstream) addr() string { return u.ln.Addr().String() }

func (u *hostileUpstream) accept() {
	for {
		c, err := u.ln.Accept()
		if err != nil {
			return
		}
		u.mu.Lock()
		u.conns[c] = true
		u.mu.Unlock()
		u.wg.Go(func() {
			defer func() {
				u.mu.Lock()
				delete(u.conns, c)
				u.mu.Unlock()
				c.Close()
			}()
			if err := u.serve(c); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				u.t.Logf("fake upstream: %v", err)
			}
		})
	}
}

// close stops the fake and waits for its goroutines.
func (u *hostileUpstream) close() {
	u.ln.Close()
	u.mu.Lock()
	for c := range u.conns {
		c.Close()
	}
	u.mu.Unlock()
	u.wg.Wait()
}

// waitWrote waits for the fake to have written lines no command asked for.
func (u *hostileUpstream) waitWrote(t *testing.T) connAddrs {
	t.Helper()
	select {
	case a := <-u.wrote:
		return a
	case <-time.After(stepTimeout):
		t.Fatalf("the fake did not write its unsolicited lines within %v", stepTimeout)
		return connAddrs{}
	}
}

// fakeSession is the fake's side of one control connection.
type fakeSession struct {
	u      *hostileUpstream
	c      net.Conn
	bw     *bufio.Writer
	user   string
	pasvs  int
	dataLn net.Listener
}

func (u *hostileUpstream) serve(c net.Conn) error {
	c.SetDeadline(time.Now().Add(sessionTimeout))
	s := &fakeSession{u: u, c: c, bw: bufio.NewWriterSize(c, 64<<10)}
	defer func() {
		if s.dataLn != nil {
			s.dataLn.Close()
		}
	}()
	br := bufio.NewReaderSize(c, 4096)
	if err := s.reply("220 hostile"); err != nil {
		return err
	}
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		verb, arg, _ := strings.Cut(strings.TrimRight(string(line), "\r\n"), " ")
		if err := s.command(strings.ToUpper(verb), arg); err != nil {
			return err
		}
		if verb == "QUIT" {
			return nil
		}
	}
}

// command answers one command.
func (s *fakeSession) command(verb, arg string) error {
	switch verb {
	case "USER":
		s.user = arg
		return s.reply("331 password please")
	case "PASS":
		if s.user != "unsolicited" {
			return s.reply("230 logged in")
		}
		s.bw.WriteString("230 logged in\r\n")
		s.bw.WriteString("200-junk\r\n")
		for i := range junkLines {
			fmt.Fprintf(s.bw, "junk line %d\r\n", i)
		}
		s.bw.WriteString("200 end\r\n")
		return s.hostile("227 Entering Passive Mode (127,0,0,1,1,1)\r\n")
	case "SYST":
		if s.user == "barelf" {
			return s.hostile("215 UNIX\n227 Entering Passive Mode (127,0,0,1,128,9)\r\n")
		}
		return s.reply("215 UNIX Type: L8")
	case "NOOP":
		if s.user == "barelf" {
			return s.reply("200 ok")
		}
		return s.reply("200 NOOP ok")
	case "PASV":
		return s.pasv()
	case "RETR":
		return s.retr(arg)
	case "QUIT":
		return s.reply("221 bye")
	default:
		return s.reply("502 not here")
	}
}

func (s *fakeSession) reply(line string) error {
	s.bw.WriteString(line)
	s.bw.WriteString("\r\n")
	return s.flush()
}

func (s *fakeSession) flush() error {
	s.c.SetWriteDeadline(time.Now().Add(stepTimeout))
	return s.bw.Flush()
}

// hostile writes raw and tells the test that lines no command asked for
// are on their way.
func (s *fakeSession) hostile(raw string) error {
	s.bw.WriteString(raw)
	if err := s.flush(); err != nil {
		return err
	}
	select {
	case s.u.wrote <- connAddrs{fake: addrPort(s.c.LocalAddr()), proxy: addrPort(s.c.RemoteAddr())}:
	default: // nobody waits for this connection
	}
	return nil
}

// pasv opens a data listener and announces it, in a 50,000-line reply the
// first time for user "huge".
func (s *fakeSession) pasv() error {
	if s.dataLn != nil {
		s.dataLn.Close()
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.dataLn = ln
	s.pasvs++
	port := addrPort(ln.Addr()).Port()
	final := fmt.Sprintf("227 Entering Passive Mode (127,0,0,1,%d,%d).", port>>8, port&0xff)
	if s.user == "huge" && s.pasvs == 1 {
		return s.huge("227-here comes the address", final)
	}
	return s.reply(final)
}

// retr sends the payload over the data connection, and ends with a
// 50,000-line 226 for "RETR huge-226".
func (s *fakeSession) retr(arg string) error {
	if s.dataLn == nil {
		return s.reply("425 use PASV first")
	}
	ln := s.dataLn
	s.dataLn = nil
	defer ln.Close()
	if err := s.reply("150 here it comes"); err != nil {
		return err
	}
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(stepTimeout))
	dc, err := ln.Accept()
	if err != nil {
		return s.reply("425 no data connection")
	}
	dc.SetDeadline(time.Now().Add(stepTimeout))
	_, err = dc.Write(s.u.fx.payload)
	dc.Close()
	if err != nil {
		return s.reply("426 data connection broken")
	}
	if arg == "huge-226" {
		return s.huge("226-transfer report follows", "226 done")
	}
	return s.reply("226 transfer complete")
}

// huge writes a multi-line reply: first, hugeReplyLines filler lines of
// hugeLineLen bytes, and last.
func (s *fakeSession) huge(first, last string) error {
	s.bw.WriteString(first + "\r\n")
	if err := s.flush(); err != nil {
		return err
	}
	f, err := os.Open(s.u.fx.filler)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := s.c.(*net.TCPConn).ReadFrom(f); err != nil {
		return err
	}
	return s.reply(last)
}

// --- the client -----------------------------------------------------------------

// ftpClient is a raw FTP client that checks the form of every reply.
type ftpClient struct {
	c        net.Conn
	br       *bufio.Reader
	lines227 int // lines received that start with 227
}

// reply is a reply as the client saw it. A long reply keeps its first
// lines and its last.
type reply struct {
	code  int
	lines []string // up to keepLines of them
	last  string
	n     int // lines in all
}

const (
	keepLines       = 8
	clientMaxLine   = 8 << 10            // the longest reply line the client accepts
	clientMaxLines  = 2 * hugeReplyLines // the most lines it reads in one reply
	pasvReplyPrefix = "227 Entering Passive Mode ("
)

func (r reply) String() string {
	if r.n == 0 {
		return "no reply"
	}
	s := fmt.Sprintf("%q", r.lines)
	if r.n > len(r.lines) {
		s += fmt.Sprintf(" ... %q (%d lines)", r.last, r.n)
	}
	return s
}

// is reports whether r is the one-line reply line.
func (r reply) is(line string) bool { return r.n == 1 && r.lines[0] == line }

func dialClient(addr string) (*ftpClient, error) {
	c, err := net.DialTimeout("tcp", addr, stepTimeout)
	if err != nil {
		return nil, err
	}
	return &ftpClient{c: c, br: bufio.NewReaderSize(c, clientMaxLine)}, nil
}

func (c *ftpClient) close() { c.c.Close() }

func (c *ftpClient) send(line string) error {
	c.c.SetWriteDeadline(time.Now().Add(stepTimeout))
	_, err := io.WriteString(c.c, line+"\r\n")
	return err
}

// readReply reads one reply and checks its form (RFC 959 section 4.2):
// CRLF line ends, a first line of three digits and a space or a hyphen,
// and after a hyphen, lines up to one that starts with the same code and
// a space.
func (c *ftpClient) readReply() (reply, error) {
	c.c.SetReadDeadline(time.Now().Add(stepTimeout))
	var r reply
	for {
		b, err := c.br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return r, fmt.Errorf("reply line longer than %d bytes after %s", clientMaxLine, r)
		}
		if err != nil {
			return r, fmt.Errorf("reading a reply after %s: %w", r, err)
		}
		if !bytes.HasSuffix(b, []byte("\r\n")) {
			return r, fmt.Errorf("reply line %q does not end in CRLF", b)
		}
		// Lines are copied only when kept: the race detector makes every
		// copied byte of a huge reply count.
		line := b[:len(b)-2]
		if bytes.HasPrefix(line, []byte("227")) {
			c.lines227++
		}
		r.n++
		if len(r.lines) < keepLines {
			r.lines = append(r.lines, string(line))
		}
		if r.n == 1 {
			code, sep, ok := parseCode(line)
			if !ok {
				return r, fmt.Errorf("malformed first reply line %q", line)
			}
			r.code, r.last = code, r.lines[0]
			if sep != '-' {
				return r, nil
			}
			continue
		}
		if code, sep, ok := parseCode(line); ok && code == r.code && sep != '-' {
			r.last = string(line)
			return r, nil
		}
		if r.n >= clientMaxLines {
			return r, fmt.Errorf("reply of more than %d lines: %s", clientMaxLines, r)
		}
	}
}

// parseCode parses "ddd", "ddd text" or "ddd-text"; sep is 0 for "ddd".
func parseCode(line []byte) (code int, sep byte, ok bool) {
	if len(line) < 3 || line[0] < '1' || line[0] > '5' {
		return 0, 0, false
	}
	for _, d := range line[:3] {
		if d < '0' || d > '9' {
			return 0, 0, false
		}
		code = code*10 + int(d-'0')
	}
	if len(line) > 3 {
		sep = line[3]
		if sep != ' ' && sep != '-' {
			return 0, 0, false
		}
	}
	return code, sep, true
}

// do sends a command and reads its reply.
func (c *ftpClient) do(cmd string) (reply, error) {
	if err := c.send(cmd); err != nil {
		return reply{}, fmt.Errorf("%s: %w", cmd, err)
	}
	r, err := c.readReply()
	if err != nil {
		return r, fmt.Errorf("%s: %w", strings.Fields(cmd)[0], err)
	}
	return r, nil
}

// login reads the greeting and logs in as user.
func (c *ftpClient) login(user string) error {
	r, err := c.readReply()
	if err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if !r.is("220 hostile") {
		return fmt.Errorf("greeting: %s, want 220 hostile", r)
	}
	if r, err = c.do("USER " + user); err != nil || r.code != 331 {
		return fmt.Errorf("USER: %s %v", r, err)
	}
	if r, err = c.do("PASS secret"); err != nil || r.code != 230 {
		return fmt.Errorf("PASS: %s %v", r, err)
	}
	return nil
}

var pasvRE = regexp.MustCompile(`^227 Entering Passive Mode \((\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})\)`)

// pasv sends PASV and returns the data address from the reply, which must
// be one line naming the proxy's address and a port of its passive range.
// (The fake's own ports are ephemeral, from 32768 up, above that range.)
func (c *ftpClient) pasv(p *proxyProcess) (netip.AddrPort, error) {
	r, err := c.do("PASV")
	if err != nil {
		return netip.AddrPort{}, err
	}
	m := pasvRE.FindStringSubmatch(r.last)
	if r.n != 1 || m == nil {
		return netip.AddrPort{}, fmt.Errorf("got %s, want one line %q...", r, pasvReplyPrefix)
	}
	var n [6]byte
	for i := range n {
		v, _ := strconv.Atoi(m[i+1])
		if v > 255 {
			return netip.AddrPort{}, fmt.Errorf("number %d out of range in %q", v, r.last)
		}
		n[i] = byte(v)
	}
	ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte(n[:4])), uint16(n[4])<<8|uint16(n[5]))
	if ap.Addr() != p.host || int(ap.Port()) < p.lo || int(ap.Port()) > p.hi {
		return ap, fmt.Errorf("%q names %v, want %v and a port in %d-%d", r.last, ap, p.host, p.lo, p.hi)
	}
	return ap, nil
}

// retr connects to data, sends cmd, reads the file, checks its SHA-256,
// and returns the completion reply.
func (c *ftpClient) retr(cmd string, data netip.AddrPort, want [32]byte) (reply, error) {
	dc, err := net.DialTimeout("tcp", data.String(), stepTimeout)
	if err != nil {
		return reply{}, fmt.Errorf("data connection: %w", err)
	}
	defer dc.Close()
	r, err := c.do(cmd)
	if err != nil {
		return r, err
	}
	if r.code != 150 && r.code != 125 {
		return r, fmt.Errorf("got %s, want 150", r)
	}
	dc.SetDeadline(time.Now().Add(stepTimeout))
	h := sha256.New()
	n, err := io.Copy(h, dc)
	if err != nil {
		return r, fmt.Errorf("data after %d bytes: %w", n, err)
	}
	if got := h.Sum(nil); n != payloadSize || !bytes.Equal(got, want[:]) {
		return r, fmt.Errorf("data: %d bytes, sha256 %x; want %d bytes, %x", n, got, payloadSize, want)
	}
	return c.readReply()
}

// quit sends QUIT and reads up to the end of the connection; every reply
// must be a 221.
func (c *ftpClient) quit() error {
	if err := c.send("QUIT"); err != nil {
		return err
	}
	for {
		r, err := c.readReply()
		if r.n == 0 && errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("QUIT: %w", err)
		}
		if r.code != 221 {
			return fmt.Errorf("QUIT: got %s, want 221", r)
		}
	}
}

// quietThen checks that nothing reaches the client after the fake's
// unsolicited lines, and that cmd then gets exactly the one-line reply
// want.
//
// The proxy reads replies and commands in separate goroutines, so a reply
// that arrives while nothing is pending can be told from the answer to the
// next command only once the proxy has read it: the command is sent when
// the proxy's socket has taken in every byte the fake wrote.
func (c *ftpClient) quietThen(t *testing.T, u *hostileUpstream, cmd, want string) {
	t.Helper()
	type result struct {
		r   reply
		err error
	}
	next := make(chan result, 1)
	go func() {
		r, err := c.readReply()
		next <- result{r, err}
	}()
	conn := u.waitWrote(t)
	if err := waitDrained(conn); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-next:
		if res.err != nil {
			t.Fatalf("before %s: %v", cmd, res.err)
		}
		t.Fatalf("before %s, the client got %s: a reply no command asked for was passed on", cmd, res.r)
	default:
	}
	if err := c.send(cmd); err != nil {
		t.Fatal(err)
	}
	res := <-next // readReply's deadline bounds the wait
	if res.err != nil {
		t.Fatalf("%s: %v", cmd, res.err)
	}
	if !res.r.is(want) {
		t.Fatalf("%s: got %s, want exactly %q", cmd, res.r, want)
	}
}

// waitDrained waits until every byte the fake wrote on conn has been read
// by the proxy: the fake's send queue and the proxy's receive queue are
// both empty in /proc/net/tcp.
func waitDrained(conn connAddrs) error {
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		tx, _, okFake, err := tcpQueues(conn.fake, conn.proxy)
		if err != nil {
			return err
		}
		_, rx, okProxy, err := tcpQueues(conn.proxy, conn.fake)
		if err != nil {
			return err
		}
		if okFake && okProxy && tx == 0 && rx == 0 {
			return nil
		}
		select {
		case <-deadline.C:
			return fmt.Errorf("the proxy did not read what the fake sent within %v (fake's send queue %d, proxy's receive queue %d, sockets found %v %v)",
				startTimeout, tx, rx, okFake, okProxy)
		case <-tick.C:
		}
	}
}

// tcpQueues returns the send and receive queue lengths of the IPv4 TCP
// socket from local to remote, from /proc/net/tcp; ok is false if there is
// none.
func tcpQueues(local, remote netip.AddrPort) (tx, rx int64, ok bool, err error) {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return 0, 0, false, err
	}
	l, r := procNetAddr(local), procNetAddr(remote)
	for line := range strings.Lines(string(b)) {
		// sl local_address rem_address st tx_queue:rx_queue ...
		f := strings.Fields(line)
		if len(f) < 5 || f[1] != l || f[2] != r {
			continue
		}
		txs, rxs, _ := strings.Cut(f[4], ":")
		if tx, err = strconv.ParseInt(txs, 16, 64); err != nil {
			return 0, 0, false, fmt.Errorf("/proc/net/tcp: %q: %w", line, err)
		}
		if rx, err = strconv.ParseInt(rxs, 16, 64); err != nil {
			return 0, 0, false, fmt.Errorf("/proc/net/tcp: %q: %w", line, err)
		}
		return tx, rx, true, nil
	}
	return 0, 0, false, nil
}

// procNetAddr formats an IPv4 address and port as /proc/net/tcp does: the
// address as a 32-bit number in host byte order, both in hex.
func procNetAddr(ap netip.AddrPort) string {
	a := ap.Addr().As4()
	return fmt.Sprintf("%08X:%04X", binary.NativeEndian.Uint32(a[:]), ap.Port())
}
