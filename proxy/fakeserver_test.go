package proxy_test

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/ftpproxy/ftpproxy/nat"
	"github.com/ftpproxy/ftpproxy/proxy"
	"github.com/ftpproxy/ftpproxy/rewrite"
)

// ioTimeout bounds every blocking call of the fake server and the test
// client: a proxy that stalls fails the test instead of hanging it.
const ioTimeout = 5 * time.Second

func TestMain(m *testing.M) {
	// The runtime's network poller opens its descriptors on first use; open
	// them now so the descriptor counts of the first test are not off.
	if ln, err := net.Listen("tcp", "127.0.0.1:0"); err == nil {
		ln.Close()
	}
	goleak.VerifyTestMain(m)
}

// ---------------------------------------------------------------------------
// Log buffer

// syncBuffer is a bytes.Buffer safe for the proxy's goroutines to log into
// while a test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls until the log holds a line containing every one of parts,
// or ioTimeout passes.
func (s *syncBuffer) waitFor(t testing.TB, parts ...string) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		for line := range strings.SplitSeq(s.String(), "\n") {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(line, p)
			}
			if ok {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line contains %q; log:\n%s", parts, s.String())
		}
		<-tick.C
	}
}

// ---------------------------------------------------------------------------
// Descriptor leak check

// countFDs returns the number of open socket descriptors of the process,
// or -1 where /proc/self/fd does not exist. Other descriptors are left
// out: the runtime keeps a cache of pipes for splice(2), which io.Copy
// between TCP connections uses, and frees them on its own schedule.
func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	n := 0
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n
}

func listFDs() string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var b strings.Builder
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		fmt.Fprintf(&b, "  %s -> %s\n", e.Name(), target)
	}
	return b.String()
}

// checkFDs records the number of open sockets now and, when the test
// and all its cleanups registered later are done, checks that it has come
// back down. Call it first in a test, so its cleanup runs last. Closing a
// socket can trail the goroutine that closed it, so the check polls for a
// short while.
func checkFDs(t testing.TB) {
	start := countFDs()
	if start < 0 {
		return
	}
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			n := countFDs()
			if n <= start {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("file descriptors leaked: %d at start, %d at end\n%s", start, n, listFDs())
				return
			}
			<-tick.C
		}
	})
}

// ---------------------------------------------------------------------------
// Fake upstream FTP server

// fakeServer is a scriptable FTP server on 127.0.0.1. Its handler runs once
// per accepted control connection; the test's cleanup waits for every
// handler to return.
type fakeServer struct {
	t       testing.TB
	ln      net.Listener
	handler func(*fakeConn)
	wg      sync.WaitGroup
}

// fakeAbort unwinds a handler that has reported a failure.
type fakeAbort struct{}

func newFakeServer(t testing.TB, handler func(*fakeConn)) *fakeServer {
	t.Helper()
	return newFakeServerAt(t, "127.0.0.1:0", handler)
}

// newFakeServerAt is newFakeServer listening on addr ("127.0.0.2:0").
func newFakeServerAt(t testing.TB, addr string, handler func(*fakeConn)) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fs := &fakeServer{t: t, ln: ln, handler: handler}
	fs.wg.Go(fs.acceptLoop)
	t.Cleanup(fs.close)
	return fs
}

func (fs *fakeServer) addr() string { return fs.ln.Addr().String() }

func (fs *fakeServer) acceptLoop() {
	for {
		c, err := fs.ln.Accept()
		if err != nil {
			return
		}
		fc := &fakeConn{t: fs.t, c: c, br: bufio.NewReader(c)}
		fs.wg.Go(func() { fc.run(fs.handler) })
	}
}

// close stops accepting and waits for the handlers. They all end by
// themselves: every call they make has a deadline.
func (fs *fakeServer) close() {
	fs.ln.Close()
	fs.wg.Wait()
}

// fakeConn is one control connection of the fake server.
type fakeConn struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader

	mu      sync.Mutex
	closers []io.Closer // data listeners and connections, closed when the handler returns
	cmds    []string    // every line received, in order
}

func (f *fakeConn) run(h func(*fakeConn)) {
	defer func() {
		f.mu.Lock()
		for _, c := range f.closers {
			c.Close()
		}
		f.mu.Unlock()
		f.c.Close()
		if r := recover(); r != nil {
			if _, ok := r.(fakeAbort); !ok {
				panic(r)
			}
		}
	}()
	h(f)
}

// fail reports a failure of the script and ends the handler.
func (f *fakeConn) fail(format string, args ...any) {
	f.t.Errorf("fake server: "+format, args...)
	panic(fakeAbort{})
}

func (f *fakeConn) track(c io.Closer) {
	f.mu.Lock()
	f.closers = append(f.closers, c)
	f.mu.Unlock()
}

// received returns the lines received so far.
func (f *fakeConn) received() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.cmds...)
}

// Send writes one reply line with CRLF.
func (f *fakeConn) Send(line string) { f.SendRaw([]byte(line + "\r\n")) }

// SendRaw writes b as it is.
func (f *fakeConn) SendRaw(b []byte) {
	f.c.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := f.c.Write(b); err != nil {
		f.fail("write %q: %v", clipText(string(b)), err)
	}
}

// ReadLine reads one command line, without its line ending.
func (f *fakeConn) ReadLine() (string, error) {
	f.c.SetReadDeadline(time.Now().Add(ioTimeout))
	line, err := f.br.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	f.mu.Lock()
	f.cmds = append(f.cmds, line)
	f.mu.Unlock()
	return line, nil
}

// Expect reads one command line and checks that it starts with prefix.
func (f *fakeConn) Expect(prefix string) string {
	line, err := f.ReadLine()
	if err != nil {
		f.fail("waiting for %q: %v", prefix, err)
	}
	if !strings.HasPrefix(line, prefix) {
		f.fail("got command %q, want %q...", clipText(line), prefix)
	}
	return line
}

// ExpectEOF waits for the proxy to close the control connection, or for
// QUIT, which it answers 221 before it closes the connection itself. Any
// other command is a failure.
func (f *fakeConn) ExpectEOF() {
	for {
		line, err := f.ReadLine()
		switch {
		case err == nil && strings.EqualFold(line, "QUIT"):
			f.Send("221 Goodbye.")
			return
		case err == nil:
			f.fail("unexpected command %q", clipText(line))
		case isTimeout(err):
			f.fail("the proxy did not close the control connection: %v", err)
		default:
			return
		}
	}
}

// waitErr waits for a result of a goroutine the handler started.
func (f *fakeConn) waitErr(ch <-chan error, what string) error {
	select {
	case err := <-ch:
		return err
	case <-time.After(2 * ioTimeout):
		f.fail("timed out waiting for %s", what)
		return nil
	}
}

// fakeListener is a passive data listener of the fake server.
type fakeListener struct {
	f    *fakeConn
	ln   *net.TCPListener
	port int
}

// Passive opens a data listener on the address of the control connection
// (127.0.0.1 unless the server listens elsewhere).
func (f *fakeConn) Passive() *fakeListener {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: f.c.LocalAddr().(*net.TCPAddr).IP})
	if err != nil {
		f.fail("passive listen: %v", err)
	}
	f.track(ln)
	return &fakeListener{f: f, ln: ln, port: ln.Addr().(*net.TCPAddr).Port}
}

// SendData writes data on a data connection, failing the handler if it
// cannot.
func (f *fakeConn) SendData(dc net.Conn, data []byte) {
	dc.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := dc.Write(data); err != nil {
		f.fail("write data: %v", err)
	}
}

// serveRETR greets, answers the proxy's PASV, takes a RETR of name and
// its data connection, and says 150: a server about to send.
func (f *fakeConn) serveRETR(name string) *net.TCPConn {
	f.Send("220 ready")
	l := f.AnswerPASV("127,0,0,1")
	f.Expect("RETR " + name)
	dc := l.Accept()
	f.Send("150 Opening data connection.")
	return dc
}

// AnswerPASV waits for PASV, opens a data listener and announces it at
// host (four comma-separated octets) in its 227 reply.
func (f *fakeConn) AnswerPASV(host string) *fakeListener {
	f.Expect("PASV")
	l := f.Passive()
	f.Send(l.PASVReply(host))
	return l
}

// PASVReply is a 227 reply announcing the listener's port at host, given
// as four comma-separated octets: the fake can announce an address nobody
// can reach, as servers behind NAT do.
func (l *fakeListener) PASVReply(host string) string {
	return fmt.Sprintf("227 Entering Passive Mode (%s,%d,%d).", host, l.port>>8, l.port&0xff)
}

// EPSVReply is a 229 reply announcing the listener's port.
func (l *fakeListener) EPSVReply() string {
	return fmt.Sprintf("229 Entering Extended Passive Mode (|||%d|)", l.port)
}

// Accept waits for the data connection and closes the listener.
func (l *fakeListener) Accept() *net.TCPConn {
	defer l.ln.Close()
	l.ln.SetDeadline(time.Now().Add(ioTimeout))
	c, err := l.ln.AcceptTCP()
	if err != nil {
		l.f.fail("accept data connection: %v", err)
	}
	l.f.track(c)
	return c
}

// DialActive connects to the address of a "PORT ..." or "EPRT ..."
// command line.
func (f *fakeConn) DialActive(line string) *net.TCPConn {
	verb, arg, _ := strings.Cut(line, " ")
	var ap netip.AddrPort
	var err error
	switch strings.ToUpper(verb) {
	case "PORT":
		ap, err = rewrite.ParsePORT(arg)
	case "EPRT":
		ap, err = rewrite.ParseEPRT(arg)
	default:
		err = fmt.Errorf("not an active-mode command")
	}
	if err != nil {
		f.fail("data address %q: %v", line, err)
	}
	// From the server's own address, as a real server connects.
	d := net.Dialer{Timeout: ioTimeout, LocalAddr: &net.TCPAddr{IP: f.c.LocalAddr().(*net.TCPAddr).IP}}
	c, err := d.Dial("tcp", ap.String())
	if err != nil {
		f.fail("dial %v: %v", ap, err)
	}
	f.track(c)
	return c.(*net.TCPConn)
}

// ---------------------------------------------------------------------------
// A small FTP server for the common paths

// miniFTP serves files for RETR and takes files with STOR, in passive
// and active mode. Tests that need an unusual server write a handler of
// their own.
type miniFTP struct {
	files map[string][]byte

	// pasvHost is the address its 227 replies announce, "10,0,0,5" if
	// empty: unreachable, so the transfer only works if the proxy uses
	// the control connection's address.
	pasvHost string

	// noEPSV makes EPSV fail with 500, as old servers do.
	noEPSV bool

	// closeGate, if set, makes RETR send 226 first and close the data
	// connection only once the test closes the gate, as some servers
	// reply before they close: the proxy must hold the 226 until the
	// last byte has reached the client.
	closeGate chan struct{}

	// resetOK makes a data connection reset by the proxy a 426, as real
	// servers answer it, rather than a failure of the test.
	resetOK bool

	// stored receives the files uploaded with STOR.
	stored chan storedFile

	mu    sync.Mutex // guards conns
	conns []*fakeConn
}

type storedFile struct {
	name string
	data []byte
}

func (m *miniFTP) serve(f *fakeConn) {
	m.mu.Lock()
	m.conns = append(m.conns, f)
	m.mu.Unlock()
	host := m.pasvHost
	if host == "" {
		host = "10,0,0,5"
	}
	f.Send("220 fake FTP server ready")
	var pasv *fakeListener
	var active string
	dataConn := func() *net.TCPConn {
		switch {
		case pasv != nil:
			c := pasv.Accept()
			pasv = nil
			return c
		case active != "":
			c := f.DialActive(active)
			active = ""
			return c
		}
		f.fail("transfer without PASV/EPSV/PORT/EPRT")
		return nil
	}
	newPassive := func() *fakeListener {
		if pasv != nil {
			pasv.ln.Close()
		}
		active = ""
		return f.Passive()
	}
	for {
		line, err := f.ReadLine()
		if err != nil {
			if isTimeout(err) {
				f.fail("no command: %v", err)
			}
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "USER":
			f.Send("331 Password required.")
		case "PASS":
			f.Send("230 Logged in.")
		case "TYPE":
			f.Send("200 Type set.")
		case "NOOP":
			f.Send("200 NOOP ok.")
		case "FEAT":
			f.SendRaw([]byte("211-Features:\r\n AUTH TLS\r\n PBSZ\r\n PROT\r\n EPSV\r\n UTF8\r\n211 End\r\n"))
		case "PASV":
			pasv = newPassive()
			f.Send(pasv.PASVReply(host))
		case "EPSV":
			if m.noEPSV {
				f.Send("500 EPSV not understood.")
				continue
			}
			pasv = newPassive()
			f.Send(pasv.EPSVReply())
		case "PORT", "EPRT":
			if pasv != nil {
				pasv.ln.Close()
				pasv = nil
			}
			active = line
			f.Send("200 " + strings.ToUpper(verb) + " command successful.")
		case "RETR":
			data, ok := m.files[arg]
			if !ok {
				f.Send("550 No such file.")
				continue
			}
			dc := dataConn()
			f.Send("150 Opening BINARY mode data connection.")
			dc.SetWriteDeadline(time.Now().Add(ioTimeout))
			if _, err := dc.Write(data); err != nil {
				if !m.resetOK {
					f.fail("RETR %s: write data: %v", arg, err)
				}
				dc.Close()
				f.Send("426 Connection closed; transfer aborted.")
				continue
			}
			if m.closeGate != nil {
				f.Send("226 Transfer complete.")
				select {
				case <-m.closeGate:
				case <-time.After(ioTimeout):
				}
				dc.Close()
			} else {
				dc.Close()
				f.Send("226 Transfer complete.")
			}
		case "STOR":
			dc := dataConn()
			f.Send("150 Ok to send data.")
			dc.SetReadDeadline(time.Now().Add(ioTimeout))
			data, err := io.ReadAll(dc)
			if err != nil {
				f.fail("STOR %s: read data: %v", arg, err)
			}
			dc.Close()
			if m.stored != nil {
				m.stored <- storedFile{name: arg, data: data}
			}
			f.Send("226 Transfer complete.")
		case "QUIT":
			f.Send("221 Goodbye.")
			return
		default:
			f.Send("502 Command not implemented.")
		}
	}
}

// received returns the command lines the n-th control connection (from
// 0) has received so far.
func (m *miniFTP) received(t testing.TB, n int) []string {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if n >= len(m.conns) {
		t.Fatalf("the fake server has had %d control connections, want more than %d", len(m.conns), n)
	}
	return m.conns[n].received()
}

// ---------------------------------------------------------------------------
// The proxy under test

type proxyEnv struct {
	srv    *proxy.Server
	addr   string
	logs   *syncBuffer
	pool   *nat.PortPool
	lo, hi uint16
}

type proxyOpts struct {
	listen   string // default "127.0.0.1:0"
	poolSize int    // passive ports in the pool, default 16
	config   func(*proxy.Config)
}

// startProxy runs a proxy in front of upstream until the test ends.
func startProxy(t testing.TB, upstream string, o proxyOpts) *proxyEnv {
	t.Helper()
	if o.listen == "" {
		o.listen = "127.0.0.1:0"
	}
	if o.poolSize == 0 {
		o.poolSize = 16
	}
	lo := freePortRange(t, o.poolSize)
	hi := lo + uint16(o.poolSize) - 1
	pool, err := nat.NewPortPool(lo, hi)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	cfg := proxy.Config{
		Upstream:          upstream,
		PassivePorts:      pool,
		Logger:            zerolog.New(logs).Level(zerolog.DebugLevel),
		DialTimeout:       ioTimeout,
		GreetingTimeout:   ioTimeout,
		DataAcceptTimeout: ioTimeout,
		DataLinger:        2 * time.Second,
		WriteTimeout:      ioTimeout,
	}
	if o.config != nil {
		o.config(&cfg)
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		t.Fatal(err)
	}
	srv := proxy.New(cfg)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		select {
		case err := <-served:
			if !errors.Is(err, proxy.ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		case <-time.After(ioTimeout):
			t.Errorf("Serve did not return after Close")
		}
		if t.Failed() {
			t.Logf("proxy log:\n%s", clipText(logs.String()))
		}
	})
	return &proxyEnv{srv: srv, addr: ln.Addr().String(), logs: logs, pool: pool, lo: lo, hi: hi}
}

// freePortRange picks the first port of n consecutive ports below the
// kernel's ephemeral range that are free now. The proxy copes with a
// port taken later on (it tries another one of the pool).
func freePortRange(t testing.TB, n int) uint16 {
	t.Helper()
	for range 100 {
		r, err := rand.Int(rand.Reader, big.NewInt(int64(30000-20000-n)))
		if err != nil {
			t.Fatal(err)
		}
		lo := 20000 + int(r.Int64())
		free := true
		for p := lo; p < lo+n && free; p++ {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if err != nil {
				free = false
				continue
			}
			ln.Close()
		}
		if free {
			return uint16(lo)
		}
	}
	t.Fatal("no free port range")
	return 0
}

// ---------------------------------------------------------------------------
// Test client

type ftpClient struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

type reply struct {
	code  int
	lines []string
}

func (r reply) text() string { return strings.Join(r.lines, "\n") }

// dialProxy opens a control connection to addr; it is closed when the test
// ends.
func dialProxy(t testing.TB, addr string) *ftpClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return newFTPClient(t, c)
}

// newFTPClient wraps an open control connection.
func newFTPClient(t testing.TB, c net.Conn) *ftpClient {
	return &ftpClient{t: t, c: c, br: bufio.NewReader(c)}
}

// dialLogin opens a control connection and reads the greeting.
func dialLogin(t testing.TB, addr string) *ftpClient {
	t.Helper()
	c := dialProxy(t, addr)
	c.Expect(220)
	return c
}

func (c *ftpClient) readLine() (string, error) {
	line, err := c.br.ReadString('\n')
	if err != nil {
		return line, err
	}
	if !strings.HasSuffix(line, "\r\n") {
		return line, fmt.Errorf("reply line %q does not end in CRLF", clipText(line))
	}
	return strings.TrimSuffix(line, "\r\n"), nil
}

// readReply reads one reply, following RFC 959's multi-line form.
func (c *ftpClient) readReply() (reply, error) {
	c.c.SetReadDeadline(time.Now().Add(ioTimeout))
	first, err := c.readLine()
	if err != nil {
		return reply{}, err
	}
	if len(first) < 3 {
		return reply{}, fmt.Errorf("malformed reply line %q", first)
	}
	code, err := strconv.Atoi(first[:3])
	if err != nil || code < 100 || code > 599 || (len(first) > 3 && first[3] != ' ' && first[3] != '-') {
		return reply{}, fmt.Errorf("malformed reply line %q", clipText(first))
	}
	r := reply{code: code, lines: []string{first}}
	if len(first) == 3 || first[3] != '-' {
		return r, nil
	}
	for {
		line, err := c.readLine()
		if err != nil {
			return r, fmt.Errorf("in multi-line %d reply: %w", code, err)
		}
		r.lines = append(r.lines, line)
		if strings.HasPrefix(line, first[:3]) && (len(line) == 3 || line[3] == ' ') {
			return r, nil
		}
	}
}

// Reply reads one reply.
func (c *ftpClient) Reply() reply {
	c.t.Helper()
	r, err := c.readReply()
	if err != nil {
		c.t.Fatalf("reading reply: %v", err)
	}
	return r
}

// Expect reads one reply and checks its code.
func (c *ftpClient) Expect(code int) reply {
	c.t.Helper()
	r := c.Reply()
	if r.code != code {
		c.t.Fatalf("got reply %q, want %d", clipText(r.text()), code)
	}
	return r
}

// Send writes one command line with CRLF.
func (c *ftpClient) Send(line string) { c.t.Helper(); c.SendRaw([]byte(line + "\r\n")) }

// SendRaw writes b as it is.
func (c *ftpClient) SendRaw(b []byte) {
	c.t.Helper()
	c.c.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := c.c.Write(b); err != nil {
		c.t.Fatalf("sending %q: %v", clipText(string(b)), err)
	}
}

// Cmd sends line and checks the code of its reply.
func (c *ftpClient) Cmd(line string, code int) reply {
	c.t.Helper()
	c.Send(line)
	return c.Expect(code)
}

// ExpectEOF checks that the proxy closes the control connection without
// sending anything more.
func (c *ftpClient) ExpectEOF() {
	c.t.Helper()
	c.c.SetReadDeadline(time.Now().Add(ioTimeout))
	b, err := c.br.ReadByte()
	switch {
	case err == nil:
		rest, _ := c.br.Peek(c.br.Buffered())
		c.t.Fatalf("got %q, want the connection closed", clipText(string(b)+string(rest)))
	case isTimeout(err):
		c.t.Fatalf("the proxy did not close the control connection: %v", err)
	}
}

// PASV sends PASV and returns the announced address.
func (c *ftpClient) PASV() netip.AddrPort {
	c.t.Helper()
	r := c.Cmd("PASV", 227)
	ap, err := rewrite.ParsePASVReply(r.lines[0])
	if err != nil {
		c.t.Fatalf("227 reply %q: %v", r.lines[0], err)
	}
	return ap
}

// EPSV sends EPSV and returns the proxy's control address with the
// announced port.
func (c *ftpClient) EPSV() netip.AddrPort {
	c.t.Helper()
	r := c.Cmd("EPSV", 229)
	port, err := rewrite.ParseEPSVReply(r.lines[0])
	if err != nil {
		c.t.Fatalf("229 reply %q: %v", r.lines[0], err)
	}
	host := c.c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
	return netip.AddrPortFrom(host, port)
}

// DialData opens a data connection to ap; it is closed when the test ends.
func (c *ftpClient) DialData(ap netip.AddrPort) *net.TCPConn {
	c.t.Helper()
	d := net.Dialer{Timeout: ioTimeout}
	conn, err := d.Dial("tcp", ap.String())
	if err != nil {
		c.t.Fatalf("dial data %v: %v", ap, err)
	}
	c.t.Cleanup(func() { conn.Close() })
	return conn.(*net.TCPConn)
}

// Close closes the control connection.
func (c *ftpClient) Close() { c.c.Close() }

// ---------------------------------------------------------------------------
// Helpers

// readAll reads c to EOF within ioTimeout.
func readAll(c net.Conn) ([]byte, error) {
	c.SetReadDeadline(time.Now().Add(ioTimeout))
	return io.ReadAll(c)
}

// listenActive opens the client's own data listener for PORT/EPRT.
func listenActive(t testing.TB, network, addr string) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

// acceptData accepts one connection within ioTimeout.
func acceptData(t testing.TB, ln *net.TCPListener) *net.TCPConn {
	t.Helper()
	ln.SetDeadline(time.Now().Add(ioTimeout))
	c, err := ln.AcceptTCP()
	if err != nil {
		t.Fatalf("accept data connection: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func clipText(s string) string {
	if len(s) > 4000 {
		return s[:4000] + fmt.Sprintf("... (%d bytes)", len(s))
	}
	return s
}

// withTimeout waits for ch to deliver a value. It allows twice ioTimeout,
// so that a deadline inside the producer fires first and says more.
func withTimeout[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(2 * ioTimeout):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// upload sends data over the client's data connection, half-closes it as
// a client does at the end of a file, and checks the proxy then ends the
// connection without sending anything back.
func upload(t testing.TB, dc *net.TCPConn, data []byte) {
	t.Helper()
	dc.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := dc.Write(data); err != nil {
		t.Fatalf("upload: writing data: %v", err)
	}
	if err := dc.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if rest, err := readAll(dc); err != nil || len(rest) != 0 {
		t.Fatalf("upload: data connection after the file: %d bytes, %v", len(rest), err)
	}
	dc.Close()
}
