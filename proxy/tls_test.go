package proxy_test

import (
	"bufio"
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
	"strings"
	"testing"
	"time"

	"github.com/ftpproxy/ftpproxy/proxy"
)

// testPKI is a CA made for one test run and a server certificate it
// signed for 127.0.0.1 and localhost.
type testPKI struct {
	roots  *x509.CertPool
	server tls.Certificate
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ftpproxy test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "ftpproxy"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(caCert)
	return &testPKI{roots: roots, server: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}
}

// clientConfig verifies the proxy against the test CA; data connections
// share its session cache, so they can resume the control session.
func (p *testPKI) clientConfig() *tls.Config {
	return &tls.Config{RootCAs: p.roots, ServerName: "127.0.0.1", ClientSessionCache: tls.NewLRUClientSessionCache(8)}
}

func (p *testPKI) proxyTLS(mode proxy.ClientTLSMode, reuse proxy.DataReuse) func(*proxy.Config) {
	return func(c *proxy.Config) {
		c.TLS = &tls.Config{Certificates: []tls.Certificate{p.server}, MinVersion: tls.VersionTLS12}
		c.ClientTLS = mode
		c.TLSDataReuse = reuse
	}
}

// startTLS sends AUTH TLS and runs the client's handshake.
func startTLS(t testing.TB, c *ftpClient, conf *tls.Config) {
	t.Helper()
	c.Cmd("AUTH TLS", 234)
	c.upgrade(conf)
}

// upgrade runs the client's TLS handshake on the control connection.
func (c *ftpClient) upgrade(conf *tls.Config) {
	c.t.Helper()
	tc := tls.Client(c.c, conf)
	tc.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake on the control connection: %v", err)
	}
	tc.SetDeadline(time.Time{})
	c.c, c.br = tc, bufio.NewReader(tc)
}

// dialTLSData opens a data connection and runs the client's handshake on
// it, as RFC 4217 has the client do whatever the mode.
func dialTLSData(t testing.TB, ap netip.AddrPort, conf *tls.Config) (*tls.Conn, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", ap.String(), ioTimeout)
	if err != nil {
		t.Fatalf("dial data %v: %v", ap, err)
	}
	t.Cleanup(func() { c.Close() })
	tc := tls.Client(c, conf)
	tc.SetDeadline(time.Now().Add(ioTimeout))
	return tc, tc.Handshake()
}

// retrTLS fetches name over a protected passive data connection and checks
// it is want, byte for byte.
func retrTLS(t testing.TB, c *ftpClient, e *proxyEnv, conf *tls.Config, name string, want []byte) {
	t.Helper()
	ap := checkPASVReply(t, e, c.Cmd("PASV", 227))
	c.Send("RETR " + name)
	dc, err := dialTLSData(t, ap, conf)
	if err != nil {
		t.Fatalf("RETR %s: data handshake: %v", name, err)
	}
	c.Expect(150)
	got, err := io.ReadAll(dc)
	if err != nil {
		t.Fatalf("RETR %s: reading data: %v", name, err)
	}
	dc.Close()
	c.Expect(226)
	checkSame(t, "RETR "+name+" over TLS", got, want)
}

// FTPS at the proxy in front of a plain server: AUTH TLS, PBSZ, PROT P,
// and TLS data connections that resume the control session, in passive
// mode both ways; the upstream sees plain FTP and never a TLS command.
func TestFTPSOffload(t *testing.T) {
	for _, version := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(version), func(t *testing.T) {
			checkFDs(t)
			pki := newTestPKI(t)
			file := randomBytes(t, 512<<10)
			m := &miniFTP{files: map[string][]byte{"f": file}, stored: make(chan storedFile, 1)}
			fs := newFakeServer(t, m.serve)
			e := startProxy(t, fs.addr(), proxyOpts{config: pki.proxyTLS(proxy.ClientTLSAllow, proxy.DataReuseRequire)})
			conf := pki.clientConfig()
			conf.MinVersion, conf.MaxVersion = version, version

			c := dialLogin(t, e.addr)
			feat := c.Cmd("FEAT", 211)
			for _, f := range []string{" AUTH TLS", " PBSZ", " PROT"} {
				n := 0
				for _, l := range feat.lines {
					if l == f {
						n++
					}
				}
				if n != 1 {
					t.Errorf("FEAT lists %q %d times, want once:\n%s", f, n, feat.text())
				}
			}
			startTLS(t, c, conf)
			c.Cmd("USER anonymous", 331)
			c.Cmd("PASS guest", 230)
			c.Cmd("PBSZ 0", 200)
			c.Cmd("PROT P", 200)
			c.Cmd("TYPE I", 200)

			// DataReuseRequire: each data connection must resume the
			// control session, the second one too.
			retrTLS(t, c, e, conf, "f", file)
			retrTLS(t, c, e, conf, "f", file)

			up := randomBytes(t, 300<<10)
			ap := checkEPSVReply(t, e, c.Cmd("EPSV", 229))
			c.Send("STOR u")
			dc, err := dialTLSData(t, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), ap), conf)
			if err != nil {
				t.Fatalf("STOR data handshake: %v", err)
			}
			c.Expect(150)
			if _, err := dc.Write(up); err != nil {
				t.Fatal(err)
			}
			dc.Close() // close_notify, then FIN
			c.Expect(226)
			stored := withTimeout(t, m.stored, "the stored file")
			checkSame(t, "STOR over TLS", stored.data, up)

			c.Cmd("CCC", 534)
			c.Cmd("QUIT", 221)
			for _, v := range upstreamCommands(m.received(t, 0), "AUTH", "PBSZ", "PROT", "CCC") {
				t.Errorf("the upstream received %q", v)
			}
			e.logs.waitFor(t, "client TLS established", tls.VersionName(version))
			e.logs.waitFor(t, `"message":"transfer"`, `"resumed":true`, `"cmd":"STOR"`)
		})
	}
}

// Plaintext the client sent after AUTH TLS, before the proxy's 234, could
// have been put there by anyone on the path: it is discarded, never
// executed (the STARTTLS command injection).
func TestFTPSPlaintextAfterAUTHDiscarded(t *testing.T) {
	checkFDs(t)
	pki := newTestPKI(t)
	m := &miniFTP{}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{config: pki.proxyTLS(proxy.ClientTLSAllow, proxy.DataReuseAuto)})
	c := dialLogin(t, e.addr)
	c.SendRaw([]byte("AUTH TLS\r\nUSER injected\r\nDELE everything\r\n"))
	c.Expect(234)
	c.upgrade(pki.clientConfig())
	c.Cmd("NOOP", 200)
	c.Cmd("QUIT", 221)
	e.logs.waitFor(t, "plaintext sent after AUTH TLS discarded")
	if got := upstreamCommands(m.received(t, 0), "USER", "DELE"); len(got) != 0 {
		t.Errorf("the upstream received %q after AUTH TLS", got)
	}
}

// With ClientTLSRequire, nobody logs in before AUTH TLS and nothing moves
// on an unprotected data connection; with DataReuseRequire, a data
// connection that does not resume this session is refused (a full
// handshake, or another session's ticket).
func TestFTPSRequire(t *testing.T) {
	checkFDs(t)
	pki := newTestPKI(t)
	file := randomBytes(t, 64<<10)
	m := &miniFTP{files: map[string][]byte{"f": file}, resetOK: true}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{config: pki.proxyTLS(proxy.ClientTLSRequire, proxy.DataReuseRequire)})

	c := dialLogin(t, e.addr)
	c.Cmd("USER anonymous", 530)
	c.Cmd("PROT P", 503)
	conf := pki.clientConfig()
	startTLS(t, c, conf)
	c.Cmd("PROT P", 503) // PBSZ first
	c.Cmd("USER anonymous", 331)
	c.Cmd("PASS guest", 230)
	c.Cmd("PBSZ 0", 200)
	c.Cmd("PROT C", 200)
	c.Cmd("PASV", 227)
	c.Cmd("RETR f", 521)
	c.Cmd("PROT P", 200)

	// A data connection with a full handshake: no session to resume.
	ap := checkPASVReply(t, e, c.Cmd("PASV", 227))
	c.Send("RETR f")
	fresh := pki.clientConfig()
	if dc, err := dialTLSData(t, ap, fresh); err == nil {
		io.Copy(io.Discard, dc)
	}
	if r := c.Reply(); r.code == 150 {
		if r = c.Reply(); r.code != 425 || !strings.Contains(r.text(), "not resumed") {
			t.Fatalf("a data connection without resumption got %q, want 425 not resumed", r.text())
		}
	} else if r.code != 425 || !strings.Contains(r.text(), "not resumed") {
		t.Fatalf("a data connection without resumption got %q, want 425 not resumed", r.text())
	}

	// One that resumes works.
	retrTLS(t, c, e, conf, "f", file)
	c.Cmd("REIN", 502)
	c.Cmd("QUIT", 221)
}

// A client that never starts the data connection's handshake gets 425,
// and the session goes on.
func TestFTPSDataHandshakeNeverStarts(t *testing.T) {
	checkFDs(t)
	pki := newTestPKI(t)
	small := randomBytes(t, 4<<10)
	fs := newFakeServer(t, func(f *fakeConn) {
		f.Send("220 ready")
		f.Expect("USER")
		f.Send("230 ok")
		for range 2 {
			l := f.AnswerPASV("127,0,0,1")
			f.Expect("RETR")
			dc := l.Accept()
			f.Send("150 here")
			dc.SetWriteDeadline(time.Now().Add(ioTimeout))
			dc.Write(small)
			dc.Close()
			f.Send("226 done")
		}
		f.ExpectEOF()
	})
	e := startProxy(t, fs.addr(), proxyOpts{config: func(c *proxy.Config) {
		pki.proxyTLS(proxy.ClientTLSAllow, proxy.DataReuseAuto)(c)
		c.DataAcceptTimeout = 300 * time.Millisecond
	}})
	conf := pki.clientConfig()
	c := dialLogin(t, e.addr)
	startTLS(t, c, conf)
	c.Cmd("USER a", 230)
	c.Cmd("PBSZ 0", 200)
	c.Cmd("PROT P", 200)
	ap := checkPASVReply(t, e, c.Cmd("PASV", 227))
	c.Send("RETR f")
	silent := c.DialData(ap) // connects, never says hello
	c.Expect(150)
	if r := c.Reply(); r.code != 425 || !strings.Contains(r.text(), "TLS") {
		t.Fatalf("got %q, want 425 naming TLS", r.text())
	}
	silent.Close()
	retrTLS(t, c, e, conf, "f", small)
	c.Cmd("QUIT", 221)
}

// Implicit FTPS: TLS from the first byte, the greeting inside it.
func TestFTPSImplicit(t *testing.T) {
	checkFDs(t)
	pki := newTestPKI(t)
	file := randomBytes(t, 100<<10)
	m := &miniFTP{files: map[string][]byte{"f": file}}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{config: pki.proxyTLS(proxy.ClientTLSAllow, proxy.DataReuseAuto)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go e.srv.ServeImplicitTLS(ln)
	conf := pki.clientConfig()
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", ln.Addr().String(), conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tc.Close() })
	c := newFTPClient(t, tc)
	c.Expect(220)
	c.Cmd("AUTH TLS", 503)
	c.Cmd("USER anonymous", 331)
	c.Cmd("PASS x", 230)
	c.Cmd("PBSZ 0", 200)
	c.Cmd("PROT P", 200)
	retrTLS(t, c, e, conf, "f", file)
	c.Cmd("QUIT", 221)
}

// A data connection that presents another session's ticket cannot resume
// here: each session has ticket keys of its own, so under
// DataReuseRequire it is refused like a full handshake.
func TestFTPSTicketOfAnotherSession(t *testing.T) {
	checkFDs(t)
	pki := newTestPKI(t)
	m := &miniFTP{files: map[string][]byte{"f": randomBytes(t, 16<<10)}, resetOK: true}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{config: pki.proxyTLS(proxy.ClientTLSAllow, proxy.DataReuseRequire)})
	login := func(conf *tls.Config) *ftpClient {
		c := dialLogin(t, e.addr)
		startTLS(t, c, conf)
		c.Cmd("USER anonymous", 331)
		c.Cmd("PASS x", 230)
		c.Cmd("PBSZ 0", 200)
		c.Cmd("PROT P", 200)
		return c
	}
	thief := pki.clientConfig() // holds the first session's ticket
	login(thief)
	victim := login(pki.clientConfig())
	ap := checkPASVReply(t, e, victim.Cmd("PASV", 227))
	victim.Send("RETR f")
	if dc, err := dialTLSData(t, ap, thief); err == nil {
		if dc.ConnectionState().DidResume {
			t.Errorf("a data connection resumed another session's TLS session")
		}
		io.Copy(io.Discard, dc)
	}
	r := victim.Reply()
	if r.code == 150 {
		r = victim.Reply()
	}
	if r.code != 425 || !strings.Contains(r.text(), "not resumed") {
		t.Fatalf("got %q, want 425 not resumed", r.text())
	}
	victim.Cmd("QUIT", 221)
}

// Garbage instead of a ClientHello after AUTH TLS ends that session and
// only that one.
func TestFTPSGarbageHandshake(t *testing.T) {
	checkFDs(t)
	pki := newTestPKI(t)
	fs := newFakeServer(t, (&miniFTP{}).serve)
	e := startProxy(t, fs.addr(), proxyOpts{config: pki.proxyTLS(proxy.ClientTLSAllow, proxy.DataReuseAuto)})
	other := dialLogin(t, e.addr)
	startTLS(t, other, pki.clientConfig())
	c := dialLogin(t, e.addr)
	c.Cmd("AUTH TLS", 234)
	c.SendRaw([]byte("USER admin\r\nthis is not TLS\r\n"))
	c.ExpectEOF()
	e.logs.waitFor(t, "TLS handshake with the client failed")
	other.Cmd("NOOP", 200)
	other.Cmd("QUIT", 221)
}

// Behind a balancer the PROXY header comes first, then TLS: on the
// control connection of implicit FTPS and on a protected data connection.
func TestFTPSBehindProxyProtocol(t *testing.T) {
	checkFDs(t)
	pki := newTestPKI(t)
	file := randomBytes(t, 64<<10)
	m := &miniFTP{files: map[string][]byte{"f": file}, pasvHost: "127,0,0,1"}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{config: func(c *proxy.Config) {
		pki.proxyTLS(proxy.ClientTLSAllow, proxy.DataReuseAuto)(c)
		trustLoopback(c)
	}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go e.srv.ServeImplicitTLS(ln)
	raw, err := net.DialTimeout("tcp", ln.Addr().String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	raw.Write([]byte("PROXY TCP4 127.0.0.9 127.0.0.1 40000 990\r\n"))
	conf := pki.clientConfig()
	tc := tls.Client(raw, conf)
	tc.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	tc.SetDeadline(time.Time{})
	c := newFTPClient(t, tc)
	c.Expect(220)
	c.Cmd("USER anonymous", 331)
	c.Cmd("PASS x", 230)
	c.Cmd("PBSZ 0", 200)
	c.Cmd("PROT P", 200)
	ap := checkPASVReply(t, e, c.Cmd("PASV", 227))
	c.Send("RETR f")
	draw, err := net.DialTimeout("tcp", ap.String(), ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { draw.Close() })
	fmt.Fprintf(draw, "PROXY TCP4 127.0.0.9 127.0.0.1 40001 %d\r\n", ap.Port())
	dc := tls.Client(draw, conf)
	dc.SetDeadline(time.Now().Add(ioTimeout))
	c.Expect(150)
	got, err := io.ReadAll(dc)
	if err != nil {
		t.Fatal(err)
	}
	c.Expect(226)
	checkSame(t, "RETR behind a balancer", got, file)
	c.Cmd("QUIT", 221)
	e.logs.waitFor(t, `"client":"127.0.0.9:40000"`, "client TLS established")
}
