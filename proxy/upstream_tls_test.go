package proxy_test

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ftpproxy/ftpproxy/proxy"
)

// tlsFTP is a fake server that requires FTPS, as vsftpd with
// force_local_logins_ssl, force_local_data_ssl and require_ssl_reuse does:
// no login before AUTH TLS, no transfer before PROT P, and data
// connections that must resume the control connection's TLS session.
type tlsFTP struct {
	pki            *testPKI
	implicit       bool
	file           []byte
	stored         chan []byte
	refused        bool         // the proxy is expected to abort the handshake
	protAfterLogin bool         // PBSZ and PROT before login get 530
	resumed        atomic.Int32 // data connections that resumed
	sawFresh       atomic.Int32 // data connections that did not
}

func (m *tlsFTP) serve(f *fakeConn) {
	conf := &tls.Config{Certificates: []tls.Certificate{m.pki.server}}
	upgrade := func() {
		tc := tls.Server(f.c, conf)
		tc.SetDeadline(time.Now().Add(ioTimeout))
		if err := tc.Handshake(); err != nil {
			if m.refused {
				panic(fakeAbort{})
			}
			f.fail("control handshake: %v", err)
		}
		tc.SetDeadline(time.Time{})
		f.c, f.br = tc, bufio.NewReader(tc)
	}
	if m.implicit {
		upgrade()
	}
	f.Send("220 TLS-only server")
	secure, prot, loggedIn := m.implicit, false, false
	var pasv *fakeListener
	dataConn := func() *tls.Conn {
		c := tls.Server(pasv.Accept(), conf)
		c.SetDeadline(time.Now().Add(ioTimeout))
		if err := c.Handshake(); err != nil {
			f.fail("data handshake: %v", err)
		}
		if c.ConnectionState().DidResume {
			m.resumed.Add(1)
		} else {
			m.sawFresh.Add(1)
		}
		return c
	}
	for {
		line, err := f.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch verb {
		case "AUTH":
			f.Send("234 Proceed with negotiation.")
			upgrade()
			secure = true
		case "USER":
			if !secure {
				f.Send("530 Non-anonymous sessions must use encryption.")
				continue
			}
			f.Send("331 Password please.")
		case "PASS":
			loggedIn = true
			f.Send("230 Login successful.")
		case "PBSZ", "PROT":
			switch {
			case m.protAfterLogin && !loggedIn:
				f.Send("530 Please login with USER and PASS.")
			case verb == "PBSZ":
				f.Send("200 PBSZ set to 0.")
			default:
				prot = arg == "P"
				f.Send("200 PROT now " + arg + ".")
			}
		case "PASV":
			if m.protAfterLogin && !loggedIn {
				f.Send("530 Please login with USER and PASS.")
				continue
			}
			pasv = f.Passive()
			f.Send(pasv.PASVReply("127,0,0,1"))
		case "RETR":
			if !prot {
				f.Send("522 Data connections must be encrypted.")
				continue
			}
			f.Send("150 Opening BINARY mode data connection.")
			dc := dataConn()
			dc.Write(m.file)
			dc.Close()
			f.Send("226 Transfer complete.")
		case "STOR":
			f.Send("150 Ok to send data.")
			dc := dataConn()
			b, err := io.ReadAll(dc)
			if err != nil {
				f.fail("STOR: %v", err)
			}
			dc.Close()
			m.stored <- b
			f.Send("226 Transfer complete.")
		case "QUIT":
			f.Send("221 Goodbye.")
			return
		default:
			f.Send("502 Not here.")
		}
	}
}

func upstreamTLSConfig(pki *testPKI, mode proxy.UpstreamTLSMode) func(*proxy.Config) {
	return func(c *proxy.Config) {
		c.UpstreamTLS = mode
		c.UpstreamTLSConfig = &tls.Config{RootCAs: pki.roots, ServerName: "127.0.0.1"}
	}
}

// A plain client in front of a server that requires FTPS: the proxy
// starts TLS itself, sends PBSZ 0 and PROT P before the first data
// command, and its data connections resume the control session.
func TestUpstreamTLS(t *testing.T) {
	for _, implicit := range []bool{false, true} {
		t.Run(map[bool]string{false: "explicit", true: "implicit"}[implicit], func(t *testing.T) {
			checkFDs(t)
			pki := newTestPKI(t)
			m := &tlsFTP{pki: pki, implicit: implicit, file: randomBytes(t, 300<<10), stored: make(chan []byte, 1)}
			fs := newFakeServer(t, m.serve)
			mode := proxy.UpstreamTLSExplicit
			if implicit {
				mode = proxy.UpstreamTLSImplicit
			}
			e := startProxy(t, fs.addr(), proxyOpts{config: upstreamTLSConfig(pki, mode)})
			c := dialLogin(t, e.addr)
			c.Cmd("USER u", 331)
			c.Cmd("PASS p", 230)
			for range 2 {
				ap := checkPASVReply(t, e, c.Cmd("PASV", 227))
				dc := c.DialData(ap)
				c.Send("RETR f")
				c.Expect(150)
				got, err := readAll(dc)
				if err != nil {
					t.Fatal(err)
				}
				c.Expect(226)
				checkSame(t, "RETR from a TLS server", got, m.file)
			}
			up := randomBytes(t, 200<<10)
			dc := c.DialData(checkPASVReply(t, e, c.Cmd("PASV", 227)))
			c.Send("STOR u")
			c.Expect(150)
			dc.Write(up)
			dc.Close()
			c.Expect(226)
			checkSame(t, "STOR to a TLS server", withTimeout(t, m.stored, "the upload"), up)
			c.Cmd("QUIT", 221)
			if r, f := m.resumed.Load(), m.sawFresh.Load(); r != 3 || f != 0 {
				t.Errorf("data connections: %d resumed, %d full handshakes; want every one resumed", r, f)
			}
			e.logs.waitFor(t, "upstream TLS established")
			e.logs.waitFor(t, `"message":"transfer"`, `"upstream_resumed":true`)
		})
	}
}

// A server that takes PBSZ and PROT only after the login: a data command
// before it goes upstream once without them (and is refused there), and
// they are sent again before the next one.
func TestUpstreamTLSPROTAfterLogin(t *testing.T) {
	checkFDs(t)
	pki := newTestPKI(t)
	m := &tlsFTP{pki: pki, protAfterLogin: true, file: randomBytes(t, 50<<10)}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{config: upstreamTLSConfig(pki, proxy.UpstreamTLSExplicit)})
	c := dialLogin(t, e.addr)
	c.Cmd("PASV", 530)
	c.Cmd("USER u", 331)
	c.Cmd("PASS p", 230)
	dc := c.DialData(checkPASVReply(t, e, c.Cmd("PASV", 227)))
	c.Send("RETR f")
	c.Expect(150)
	got, err := readAll(dc)
	if err != nil {
		t.Fatal(err)
	}
	c.Expect(226)
	checkSame(t, "RETR after PROT P", got, m.file)
	c.Cmd("QUIT", 221)
}

// TLS on both sides with UpstreamTLSMatch: the client's AUTH TLS brings
// the proxy's own to the upstream.
func TestUpstreamTLSMatch(t *testing.T) {
	checkFDs(t)
	pki := newTestPKI(t)
	m := &tlsFTP{pki: pki, file: randomBytes(t, 100<<10)}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{config: func(c *proxy.Config) {
		pki.proxyTLS(proxy.ClientTLSAllow, proxy.DataReuseRequire)(c)
		upstreamTLSConfig(pki, proxy.UpstreamTLSMatch)(c)
	}})
	conf := pki.clientConfig()
	c := dialLogin(t, e.addr)
	startTLS(t, c, conf)
	c.Cmd("USER u", 331)
	c.Cmd("PASS p", 230)
	c.Cmd("PBSZ 0", 200)
	c.Cmd("PROT P", 200)
	retrTLS(t, c, e, conf, "f", m.file)
	c.Cmd("QUIT", 221)
}

// No silent fallback to plain FTP: a server whose certificate does not
// verify, or one that refuses AUTH TLS, gets the client a 421 that names
// why, at once.
func TestUpstreamTLSRefused(t *testing.T) {
	t.Run("unknown CA", func(t *testing.T) {
		checkFDs(t)
		pki := newTestPKI(t)
		other := newTestPKI(t)
		m := &tlsFTP{pki: pki, refused: true}
		fs := newFakeServer(t, m.serve)
		e := startProxy(t, fs.addr(), proxyOpts{config: upstreamTLSConfig(other, proxy.UpstreamTLSExplicit)})
		c := dialProxy(t, e.addr)
		r := c.Reply()
		if r.code != 421 || !strings.Contains(r.text(), "certificate") {
			t.Fatalf("got %q, want 421 naming the certificate", r.text())
		}
		e.logs.waitFor(t, "TLS with the upstream failed")
	})
	t.Run("AUTH refused", func(t *testing.T) {
		checkFDs(t)
		pki := newTestPKI(t)
		fs := newFakeServer(t, (&miniFTP{}).serve) // answers AUTH with 502
		e := startProxy(t, fs.addr(), proxyOpts{config: upstreamTLSConfig(pki, proxy.UpstreamTLSExplicit)})
		c := dialProxy(t, e.addr)
		if r := c.Reply(); r.code != 421 || !strings.Contains(r.text(), "AUTH TLS") {
			t.Fatalf("got %q, want 421 naming AUTH TLS", r.text())
		}
		c.ExpectEOF()
	})
	t.Run("plain port, implicit TLS", func(t *testing.T) {
		checkFDs(t)
		pki := newTestPKI(t)
		fs := newFakeServer(t, func(f *fakeConn) {
			f.Send("220 plain")
			f.c.SetReadDeadline(time.Now().Add(ioTimeout))
			io.Copy(io.Discard, f.c)
		})
		e := startProxy(t, fs.addr(), proxyOpts{config: upstreamTLSConfig(pki, proxy.UpstreamTLSImplicit)})
		c := dialProxy(t, e.addr)
		if r := c.Reply(); r.code != 421 || !strings.Contains(r.text(), "TLS") {
			t.Fatalf("got %q, want 421 naming TLS", r.text())
		}
	})
}

var _ net.Conn = (*tls.Conn)(nil)

// An upstream that drops its TLS data connection in the middle of a file
// (a reset, no close_notify) fails the transfer: the client gets 426, never
// a success for a short file, and the session goes on. ABOR on a transfer
// protected on both sides works as it does in plain FTP.
func TestUpstreamTLSDropsMidTransfer(t *testing.T) {
	checkFDs(t)
	pki := newTestPKI(t)
	file := randomBytes(t, 1<<20)
	fs := newFakeServer(t, func(f *fakeConn) {
		conf := &tls.Config{Certificates: []tls.Certificate{pki.server}}
		f.Send("220 ready")
		f.Expect("AUTH TLS")
		f.Send("234 go")
		tc := tls.Server(f.c, conf)
		if err := tc.Handshake(); err != nil {
			f.fail("control handshake: %v", err)
		}
		f.c, f.br = tc, bufio.NewReader(tc)
		f.Expect("USER")
		f.Send("230 ok")
		f.Expect("PBSZ 0") // once, before the first data command
		f.Send("200 PBSZ=0")
		f.Expect("PROT P")
		f.Send("200 PROT P")
		for _, step := range []string{"drop", "abort"} {
			l := f.AnswerPASV("127,0,0,1")
			f.Expect("RETR")
			f.Send("150 here")
			raw := l.Accept()
			dc := tls.Server(raw, conf)
			if err := dc.Handshake(); err != nil {
				f.fail("data handshake: %v", err)
			}
			switch step {
			case "drop":
				dc.Write(file[:len(file)/2])
				raw.SetLinger(0)
				raw.Close()
				f.Send("426 Failure writing network stream.")
			case "abort":
				done := streamData(dc, file[:64<<10])
				if err := f.waitErr(done, "the aborted stream"); err == nil {
					f.fail("the ABOR did not end the data connection")
				}
				f.Send("426 Connection closed; transfer aborted.")
			}
		}
		// A QUIT that arrives before the aborted transfer's 426 is
		// answered by the proxy, which then closes: EOF or QUIT here.
		if line, err := f.ReadLine(); err == nil && line == "QUIT" {
			f.Send("221 bye")
		}
	})
	e := startProxy(t, fs.addr(), proxyOpts{config: func(c *proxy.Config) {
		pki.proxyTLS(proxy.ClientTLSAllow, proxy.DataReuseAuto)(c)
		upstreamTLSConfig(pki, proxy.UpstreamTLSMatch)(c)
	}})
	conf := pki.clientConfig()
	c := dialLogin(t, e.addr)
	startTLS(t, c, conf)
	c.Cmd("USER u", 230)
	c.Cmd("PBSZ 0", 200)
	c.Cmd("PROT P", 200)

	ap := checkPASVReply(t, e, c.Cmd("PASV", 227))
	c.Send("RETR f")
	var got []byte
	// The reset may reach the client before its connect or handshake is
	// over.
	if raw, err := net.DialTimeout("tcp", ap.String(), ioTimeout); err == nil {
		defer raw.Close()
		dc := tls.Client(raw, conf)
		dc.SetDeadline(time.Now().Add(ioTimeout))
		got, _ = io.ReadAll(dc)
	}
	c.Expect(150)
	if r := c.Reply(); r.code/100 == 2 || len(got) == len(file) {
		t.Fatalf("a transfer the upstream dropped after %d bytes got %q", len(got), r.text())
	}

	ap = checkPASVReply(t, e, c.Cmd("PASV", 227))
	c.Send("RETR f")
	dc, err := dialTLSData(t, ap, conf)
	if err != nil {
		t.Fatal(err)
	}
	c.Expect(150)
	if _, err := io.ReadFull(dc, make([]byte, 32<<10)); err != nil {
		t.Fatal(err)
	}
	c.Send("ABOR")
	c.Expect(426)
	c.Expect(226)
	c.Cmd("QUIT", 221)
}
