package probe

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ftpproxy/ftpproxy/rewrite"
)

// TestMain fails the package if a test leaves a goroutine behind: the
// probe's accept and lookup goroutines and the fake's handlers must all
// end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeTimeout bounds every wait of the fake server, so that a test that
// goes wrong ends.
const fakeTimeout = 10 * time.Second

// fakeOpts tells the fake FTP server how to misbehave. The zero value is a
// well-behaved server with anonymous login, PASV, EPSV, PORT, EPRT and LIST.
type fakeOpts struct {
	banner       string      // sent instead of the 220 greeting, then nothing
	silent       bool        // accept and say nothing
	hangUp       bool        // accept and close
	implicitTLS  *tls.Config // a TLS handshake first, then the greeting over TLS
	busy         bool        // 120 before the 220
	greeting421  bool        // 421 and close
	authTLS      *tls.Config // AUTH TLS answers 234 and handshakes
	pasvIP       string      // the address a 227 names (default: 127.0.0.1)
	pasvDead     bool        // the 227 names a port nobody listens on
	epsvRefused  bool        // EPSV gets 500
	loginRefused bool        // PASS gets 530, quoting the password
	activeSilent bool        // after PORT/EPRT, LIST is never answered and nobody connects
	listing      string      // what LIST sends (default: two lines)
	lingerData   bool        // 226 only once the client has closed its end of the data connection (proftpd)
}

// fakeFTP is a small FTP server on 127.0.0.1 for the probe's tests.
type fakeFTP struct {
	t    testing.TB
	opts fakeOpts
	ln   net.Listener
	addr netip.AddrPort

	mu     sync.Mutex
	closed bool
	conns  map[io.Closer]struct{}
	pass   []string // PASS arguments received
	wg     sync.WaitGroup
}

func startFake(t testing.TB, opts fakeOpts) *fakeFTP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeFTP{t: t, opts: opts, ln: ln, addr: addrPortOf(ln.Addr()), conns: map[io.Closer]struct{}{}}
	f.wg.Go(f.serve)
	t.Cleanup(f.close)
	return f
}

// close stops the listener and every connection, and waits for the
// handlers.
func (f *fakeFTP) close() {
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.ln.Close()
	f.wg.Wait()
}

// track registers c to be closed by close; it reports false (and closes c)
// once the fake is closing.
func (f *fakeFTP) track(c io.Closer) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		c.Close()
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *fakeFTP) untrack(c io.Closer) {
	f.mu.Lock()
	delete(f.conns, c)
	f.mu.Unlock()
	c.Close()
}

func (f *fakeFTP) serve() {
	for {
		conn, err := f.ln.Accept()
		if err != nil {
			return
		}
		if !f.track(conn) {
			return
		}
		f.wg.Go(func() {
			defer f.untrack(conn)
			f.session(conn)
		})
	}
}

// session is one control connection.
func (f *fakeFTP) session(conn net.Conn) {
	conn.SetDeadline(time.Now().Add(fakeTimeout))
	o := f.opts
	var rw io.ReadWriter = conn
	switch {
	case o.silent:
		io.Copy(io.Discard, conn)
		return
	case o.hangUp:
		return
	case o.banner != "":
		io.WriteString(conn, o.banner)
		io.Copy(io.Discard, conn)
		return
	case o.implicitTLS != nil:
		tc := tls.Server(conn, o.implicitTLS)
		if tc.Handshake() != nil {
			return
		}
		rw = tc
	case o.greeting421:
		io.WriteString(conn, "421 Too many connections (10) from this IP\r\n")
		return
	case o.busy:
		io.WriteString(conn, "120 Service ready in 1 minute.\r\n")
		time.Sleep(20 * time.Millisecond)
	}
	io.WriteString(rw, "220 fake FTP ready\r\n")
	s := &fakeSession{f: f, conn: conn, w: rw, r: bufio.NewReader(rw)}
	defer s.closeData()
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
		if !s.handle(strings.ToUpper(verb), arg) {
			return
		}
	}
}

// fakeSession is the state of one control connection.
type fakeSession struct {
	f      *fakeFTP
	conn   net.Conn
	w      io.Writer
	r      *bufio.Reader
	pasv   net.Listener   // waiting for a passive data connection
	active netip.AddrPort // where to connect for a transfer
}

func (s *fakeSession) reply(format string, a ...any) {
	fmt.Fprintf(s.w, format+"\r\n", a...)
}

func (s *fakeSession) closeData() {
	if s.pasv != nil {
		s.f.untrack(s.pasv)
		s.pasv = nil
	}
	s.active = netip.AddrPort{}
}

// handle answers one command; false ends the session.
func (s *fakeSession) handle(verb, arg string) bool {
	o := s.f.opts
	switch verb {
	case "USER":
		s.reply("331 Please specify the password.")
	case "PASS":
		s.f.mu.Lock()
		s.f.pass = append(s.f.pass, arg)
		s.f.mu.Unlock()
		if o.loginRefused {
			s.reply("530 Login incorrect: password %s not accepted.", arg)
		} else {
			s.reply("230 Login successful.")
		}
	case "FEAT":
		s.reply("211-Features:")
		if o.authTLS != nil {
			s.reply(" AUTH TLS")
		}
		s.reply(" EPSV\r\n PASV\r\n UTF8\r\n211 End")
	case "AUTH":
		if o.authTLS == nil {
			s.reply("502 AUTH not supported.")
			return true
		}
		s.reply("234 Proceed with negotiation.")
		tc := tls.Server(s.conn, o.authTLS)
		if tc.Handshake() != nil {
			return false
		}
		s.w, s.r = tc, bufio.NewReader(tc)
	case "PASV", "EPSV":
		if verb == "EPSV" && o.epsvRefused {
			s.reply("500 Unknown command.")
			return true
		}
		s.closeData()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil || !s.f.track(ln) {
			s.reply("425 Cannot open passive listener.")
			return true
		}
		port := addrPortOf(ln.Addr()).Port()
		if o.pasvDead {
			s.f.untrack(ln) // the port is announced, nobody listens on it
		} else {
			s.pasv = ln
		}
		if verb == "EPSV" {
			s.reply("%s", rewrite.FormatEPSVReply(port))
			return true
		}
		ip := netip.MustParseAddr("127.0.0.1")
		if o.pasvIP != "" {
			ip = netip.MustParseAddr(o.pasvIP)
		}
		r, _ := rewrite.FormatPASVReply(netip.AddrPortFrom(ip, port))
		s.reply("%s", r)
	case "PORT", "EPRT":
		var ap netip.AddrPort
		var err error
		if verb == "PORT" {
			ap, err = rewrite.ParsePORT(arg)
		} else {
			ap, err = rewrite.ParseEPRT(arg)
		}
		if err != nil {
			s.reply("501 Illegal %s command.", verb)
			return true
		}
		s.closeData()
		s.active = ap
		s.reply("200 %s command successful.", verb)
	case "LIST":
		return s.list()
	case "TYPE":
		s.reply("200 Switching to Binary mode.")
	case "QUIT":
		s.reply("221 Goodbye.")
		return false
	default:
		s.reply("502 Command not implemented.")
	}
	return true
}

// list sends the listing over the data connection PASV, EPSV, PORT or
// EPRT prepared.
func (s *fakeSession) list() bool {
	o := s.f.opts
	var data net.Conn
	switch {
	case s.pasv != nil:
		s.pasv.(*net.TCPListener).SetDeadline(time.Now().Add(fakeTimeout))
		c, err := s.pasv.Accept()
		if err != nil {
			s.reply("425 Failed to establish connection.")
			return true
		}
		data = c
		s.reply("150 Here comes the directory listing.")
	case s.active.IsValid():
		if o.activeSilent {
			return true // neither a connection nor a reply
		}
		d := net.Dialer{Timeout: fakeTimeout}
		c, err := d.Dial("tcp", s.active.String())
		if err != nil {
			s.reply("425 Failed to establish connection.")
			return true
		}
		data = c
		s.reply("150 Here comes the directory listing.")
	default:
		s.reply("425 Use PORT or PASV first.")
		return true
	}
	if !s.f.track(data) {
		return false
	}
	listing := o.listing
	if listing == "" {
		listing = "-rw-r--r-- 1 ftp ftp 5 Jan 01 00:00 a.txt\r\ndrwxr-xr-x 2 ftp ftp 4096 Jan 01 00:00 pub\r\n"
	}
	io.WriteString(data, listing)
	if o.lingerData {
		// A lingering close: the server's end first, then the client's
		// before the reply.
		data.(*net.TCPConn).CloseWrite()
		data.SetReadDeadline(time.Now().Add(fakeTimeout))
		io.Copy(io.Discard, data)
	}
	s.f.untrack(data)
	s.closeData()
	s.reply("226 Directory send OK.")
	return true
}

// passwords returns the PASS arguments the fake received.
func (f *fakeFTP) passwords() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.pass...)
}

// testNet stands in for the network beyond loopback: a dial to any other
// address, or to a loopback address drop says to, times out at once; one
// unreach names is unreachable.
type testNet struct {
	drop    func(netip.AddrPort) bool
	unreach func(netip.AddrPort) bool
}

func (n testNet) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, err
	}
	if n.unreach != nil && n.unreach(ap) {
		return nil, &net.OpError{Op: "dial", Net: network, Err: &os.SyscallError{Syscall: "connect", Err: syscall.EHOSTUNREACH}}
	}
	if !ap.Addr().IsLoopback() || n.drop != nil && n.drop(ap) {
		return nil, &net.OpError{Op: "dial", Net: network, Err: os.ErrDeadlineExceeded}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, address)
}

// testResolver answers from a table; a name it does not have does not
// exist.
type testResolver map[string][]netip.Addr

func (r testResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, a := range r[host] {
		if a.Is4() == (network == "ip4") {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return out, nil
}

// mappedResolver answers as testResolver, with IPv4 addresses in their
// IPv6-mapped form, as Go's resolver may give them.
type mappedResolver map[string][]netip.Addr

func (r mappedResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	out, err := testResolver(r).LookupNetIP(ctx, network, host)
	for i, a := range out {
		out[i] = netip.AddrFrom16(a.As16())
	}
	return out, err
}

// testCert makes a self-signed certificate for 127.0.0.1 and ftp.test,
// valid for the given span around now.
func testCert(t testing.TB, notBefore, notAfter time.Time) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ftp.test"},
		DNSNames:              []string{"ftp.test"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}}}, pool
}
