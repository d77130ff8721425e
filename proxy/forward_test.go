package proxy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ftpproxy/ftpproxy/nat"
	"github.com/ftpproxy/ftpproxy/proxy"
)

// proxyUsersFile has proxy user "px" with password "proxy-secret" (bcrypt
// at its lowest cost, to keep the tests fast).
const proxyUsersFile = "px:$2a$04$d6lRPBXjLmhVKLILwq/K7eKZJ7TozDDjg6YWuOUivCK3CuXV3BIFK\n"

// forwardConfig returns a Config change that turns forward mode on with
// the given --allow-dest entries and ports, and the test's proxy user if
// users is set.
func forwardConfig(t testing.TB, allow []string, ports string, users bool, more func(*proxy.ForwardConfig)) func(*proxy.Config) {
	t.Helper()
	pol, err := nat.ParseDestPolicy(allow, ports)
	if err != nil {
		t.Fatal(err)
	}
	fc := &proxy.ForwardConfig{Dest: pol}
	if users {
		if fc.Users, err = proxy.ParseProxyUsers(strings.NewReader(proxyUsersFile)); err != nil {
			t.Fatal(err)
		}
	}
	if more != nil {
		more(fc)
	}
	return func(c *proxy.Config) {
		c.Upstream = ""
		c.Forward = fc
	}
}

// step is one command and the reply code the client must get.
type step struct {
	cmd  string
	code int
}

// Every login form real clients send to an FTP proxy reaches the server
// the client named, with the server's own user and password and nothing
// of the proxy's; the server's greeting never reaches the client.
func TestForwardLoginStyles(t *testing.T) {
	data := bytes.Repeat([]byte("forward mode\n"), 10000)
	m := &miniFTP{files: map[string][]byte{"f": data}}
	fs := newFakeServerAt(t, "127.0.0.2:0", m.serve)
	dest := fs.addr()
	_, port, _ := net.SplitHostPort(dest)

	for _, tt := range []struct {
		name  string
		users bool
		steps []step
	}{
		{"USER user@host", false, []step{{"USER alice@" + dest, 331}, {"PASS pw", 230}}},
		{"OPEN host", false, []step{{"OPEN " + dest, 220}, {"USER alice", 331}, {"PASS pw", 230}}},
		{"SITE host", false, []step{{"SITE " + dest, 220}, {"USER alice", 331}, {"PASS pw", 230}}},
		{"proxy USER and PASS, then USER user@host", true, []step{
			{"USER px", 331}, {"PASS proxy-secret", 230}, {"USER alice@" + dest, 331}, {"PASS pw", 230}}},
		{"proxy USER and PASS, then OPEN", true, []step{
			{"USER px", 331}, {"PASS proxy-secret", 230}, {"OPEN " + dest, 220}, {"USER alice", 331}, {"PASS pw", 230}}},
		{"USER proxyuser@host", true, []step{
			{"USER px@" + dest, 331}, {"PASS proxy-secret", 230}, {"USER alice", 331}, {"PASS pw", 230}}},
		{"USER user@proxyuser@host", true, []step{
			{"USER alice@px@" + dest, 331}, {"PASS pw@proxy-secret", 230}}},
		{"USER user@host proxyuser, ACCT", true, []step{
			{"USER alice@" + dest + " px", 331}, {"PASS pw", 332}, {"ACCT proxy-secret", 230}}},
	} {
		for _, pipelined := range []bool{false, true} {
			name := tt.name
			if pipelined {
				name += ", pipelined"
			}
			t.Run(name, func(t *testing.T) {
				e := startProxy(t, "", proxyOpts{config: forwardConfig(t, []string{"127.0.0.2/32"}, port, tt.users, nil)})
				m.mu.Lock()
				before := len(m.conns)
				m.mu.Unlock()
				c := dialProxy(t, e.addr)
				if r := c.Expect(220); !strings.Contains(r.text(), "ftpproxy forward proxy") {
					t.Fatalf("greeting %q, want the proxy's own", r.text())
				}
				if pipelined {
					var all []byte
					for _, s := range tt.steps {
						all = append(all, s.cmd+"\r\n"...)
					}
					c.SendRaw(all)
					for _, s := range tt.steps {
						c.Expect(s.code)
					}
				} else {
					for _, s := range tt.steps {
						c.Cmd(s.cmd, s.code)
					}
				}
				dc := c.DialData(c.PASV())
				c.Cmd("RETR f", 150)
				got, err := readAll(dc)
				if err != nil || !bytes.Equal(got, data) {
					t.Fatalf("RETR: %d bytes, err %v; want %d bytes", len(got), err, len(data))
				}
				c.Expect(226)
				c.Cmd("QUIT", 221)
				e.logs.waitFor(t, "session closed")
				m.mu.Lock()
				n := len(m.conns)
				m.mu.Unlock()
				if n != before+1 {
					t.Fatalf("the server saw %d control connections, want 1", n-before)
				}
				rcv := strings.Join(m.received(t, before), "\n")
				if !strings.HasPrefix(rcv, "USER alice\nPASS pw\n") {
					t.Errorf("the server received:\n%s\nwant USER alice, PASS pw first", rcv)
				}
				if strings.Contains(rcv, "px") || strings.Contains(rcv, "proxy-secret") || strings.Contains(rcv, "@") {
					t.Errorf("the proxy's login or the destination reached the server:\n%s", rcv)
				}
				if strings.Contains(e.logs.String(), "proxy-secret") || strings.Contains(e.logs.String(), `"pw"`) {
					t.Error("a password reached the log")
				}
			})
		}
	}
}

// fakeResolver answers from a table and counts the lookups.
type fakeResolver struct {
	answers map[string][][]netip.Addr // successive answers per name
	calls   atomic.Int32
}

func (r *fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	n := int(r.calls.Add(1)) - 1
	a := r.answers[host]
	if len(a) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return a[min(n, len(a)-1)], nil
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

// A destination the policy does not allow gets 530 with the reason, a
// log line, and no connection; the session stays usable.
func TestForwardRefusals(t *testing.T) {
	connected := atomic.Int32{}
	fs := newFakeServer(t, func(f *fakeConn) { connected.Add(1); f.Send("220 should not be reached") })
	_, fsPort, _ := net.SplitHostPort(fs.addr())
	res := &fakeResolver{answers: map[string][][]netip.Addr{
		"loop.example":  {addrs("127.0.0.1")},
		"mixed.example": {addrs("192.0.2.10", "127.0.0.1")},
		"meta.example":  {addrs("169.254.169.254")},
	}}
	withRes := func(fc *proxy.ForwardConfig) { fc.Resolver = res }
	for _, tt := range []struct {
		name   string
		allow  []string
		ports  string
		more   func(*proxy.ForwardConfig)
		users  bool
		steps  []string // sent first, each answered with a code below 400
		cmd    string
		reason string
	}{
		{name: "nothing allowed", cmd: "USER a@192.0.2.1", reason: "no destination is allowed"},
		{name: "not in the list", allow: []string{"10.0.0.0/8"}, cmd: "USER a@192.0.2.1", reason: "192.0.2.1:21 is not in --allow-dest"},
		{name: "loopback inside 0.0.0.0/0", allow: []string{"0.0.0.0/0"}, ports: fsPort, cmd: "USER a@" + fs.addr(), reason: "loopback address 127.0.0.1"},
		{name: "IPv4-mapped loopback", allow: []string{"0.0.0.0/0", "::/0"}, ports: fsPort, cmd: "USER a@[::ffff:127.0.0.1]:" + fsPort, reason: "loopback address 127.0.0.1"},
		{name: "a name that resolves to loopback", allow: []string{"loop.example", "0.0.0.0/0"}, ports: fsPort, more: withRes, cmd: "USER a@loop.example:" + fsPort, reason: "loopback address 127.0.0.1"},
		{name: "a name with one loopback address among others", allow: []string{"0.0.0.0/0"}, ports: fsPort, more: withRes, cmd: "USER a@mixed.example:" + fsPort, reason: "loopback address 127.0.0.1"},
		{name: "cloud metadata", allow: []string{"0.0.0.0/0"}, ports: "80", cmd: "USER a@169.254.169.254:80", reason: "link-local address 169.254.169.254"},
		{name: "cloud metadata by name", allow: []string{"meta.example"}, more: withRes, cmd: "USER a@meta.example", reason: "link-local address 169.254.169.254"},
		{name: "unspecified", allow: []string{"0.0.0.0/0"}, cmd: "USER a@0.0.0.0", reason: "unspecified address"},
		{name: "a port outside the list", allow: []string{"127.0.0.0/8"}, cmd: "USER a@" + fs.addr(), reason: "port " + fsPort + " is not allowed"},
		{name: "a name that does not resolve", allow: []string{"0.0.0.0/0"}, more: withRes, cmd: "USER a@nowhere.example", reason: "nowhere.example does not exist"},
		{name: "a trusted balancer", allow: []string{"0.0.0.0/0"}, more: nil, cmd: "USER a@192.0.2.1", reason: "a trusted load balancer 192.0.2.1", ports: "21"},
		{name: "OPEN to loopback", allow: []string{"0.0.0.0/0"}, ports: fsPort, cmd: "OPEN " + fs.addr(), reason: "loopback"},
		{name: "joined form to loopback", allow: []string{"0.0.0.0/0"}, ports: fsPort, users: true, steps: []string{"USER a@px@" + fs.addr()}, cmd: "PASS pw@proxy-secret", reason: "loopback"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := forwardConfig(t, tt.allow, tt.ports, tt.users, tt.more)
			if tt.name == "a trusted balancer" {
				next := cfg
				cfg = func(c *proxy.Config) {
					next(c)
					c.ProxyProtocolFrom = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
				}
			}
			e := startProxy(t, "", proxyOpts{config: cfg})
			c := dialLogin(t, e.addr)
			for _, s := range tt.steps {
				c.Send(s)
				if r := c.Reply(); r.code >= 400 {
					t.Fatalf("%s: %d %s", s, r.code, r.text())
				}
			}
			r := c.Cmd(tt.cmd, 530)
			if !strings.Contains(r.text(), "Destination refused") || !strings.Contains(r.text(), tt.reason) {
				t.Errorf("reply %q, want a refusal naming %q", r.text(), tt.reason)
			}
			e.logs.waitFor(t, `"message":"forward refused"`, tt.reason)
			// The session goes on: the client may name another server.
			c.Cmd("NOOP", 200)
			if n := connected.Load(); n != 0 {
				t.Fatalf("the refused destination was connected to %d times", n)
			}
		})
	}
}

// The other refusals: a client outside --forward-from, a wrong proxy
// password, OPEN before the proxy login.
func TestForwardClientRefusals(t *testing.T) {
	connected := atomic.Int32{}
	fs := newFakeServer(t, func(f *fakeConn) { connected.Add(1); f.Send("220 should not be reached") })
	_, port, _ := net.SplitHostPort(fs.addr())
	t.Run("client outside --forward-from", func(t *testing.T) {
		from := func(fc *proxy.ForwardConfig) { fc.From = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} }
		e := startProxy(t, "", proxyOpts{config: forwardConfig(t, []string{"127.0.0.0/8"}, port, false, from)})
		c := dialLogin(t, e.addr)
		if r := c.Cmd("USER a@"+fs.addr(), 530); !strings.Contains(r.text(), "not allowed from your address") {
			t.Errorf("reply %q", r.text())
		}
		e.logs.waitFor(t, `"message":"forward refused"`, "--forward-from")
	})
	t.Run("wrong proxy password", func(t *testing.T) {
		e := startProxy(t, "", proxyOpts{config: forwardConfig(t, []string{"127.0.0.0/8"}, port, true, nil)})
		c := dialLogin(t, e.addr)
		c.Cmd("USER px", 331)
		c.Cmd("PASS Wr0ngSecret", 530)
		c.Cmd("USER a@px@"+fs.addr(), 331)
		c.Cmd("PASS pw@Wr0ngSecret", 530)
		c.Cmd("USER nobody@"+fs.addr(), 331) // read as proxy user "nobody"
		c.Cmd("PASS x", 530)
		c.Cmd("OPEN "+fs.addr(), 530)
		c.Cmd("USER a@"+fs.addr()+" px", 331)
		c.Cmd("PASS pw", 332)
		c.Cmd("ACCT Wr0ngSecret", 530)
		e.logs.waitFor(t, `"message":"proxy login failed"`)
		if strings.Contains(e.logs.String(), "Wr0ngSecret") {
			t.Error("a proxy password reached the log")
		}
	})
	t.Run("ban after failed proxy logins", func(t *testing.T) {
		ban := func(c *proxy.Config) {
			forwardConfig(t, []string{"127.0.0.0/8"}, port, true, nil)(c)
			c.MaxLoginFailures = 3
		}
		e := startProxy(t, "", proxyOpts{config: ban})
		c := dialLogin(t, e.addr)
		for range 2 {
			c.Cmd("USER px", 331)
			c.Cmd("PASS wrong", 530)
		}
		c.Cmd("USER px", 331)
		c.Cmd("PASS wrong", 421)
		c.ExpectEOF()
	})
	if n := connected.Load(); n != 0 {
		t.Fatalf("a refused destination was connected to %d times", n)
	}
}

// The name is looked up once: the address checked is the address dialled,
// so a DNS answer that changes between the check and the dial (rebinding)
// cannot aim the proxy elsewhere.
func TestForwardResolvesOnce(t *testing.T) {
	m := &miniFTP{files: map[string][]byte{"f": []byte("right server\n")}}
	good := newFakeServerAt(t, "127.0.0.2:0", m.serve)
	_, port, _ := net.SplitHostPort(good.addr())
	victim := atomic.Int32{}
	ln, err := net.Listen("tcp", "127.0.0.3:"+port)
	if err != nil {
		t.Skipf("cannot listen on 127.0.0.3:%s: %v", port, err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			victim.Add(1)
			c.Close()
		}
	}()
	res := &fakeResolver{answers: map[string][][]netip.Addr{
		"rebind.example": {addrs("127.0.0.2"), addrs("127.0.0.3"), addrs("127.0.0.3")},
	}}
	cfg := forwardConfig(t, []string{"127.0.0.2/32"}, port, false, func(fc *proxy.ForwardConfig) { fc.Resolver = res })
	e := startProxy(t, "", proxyOpts{config: cfg})
	c := dialLogin(t, e.addr)
	c.Cmd("USER alice@rebind.example:"+port, 331)
	c.Cmd("PASS pw", 230)
	dc := c.DialData(c.PASV())
	c.Cmd("RETR f", 150)
	if got, err := readAll(dc); err != nil || string(got) != "right server\n" {
		t.Fatalf("RETR: %q, %v", got, err)
	}
	c.Expect(226)
	if n := res.calls.Load(); n != 1 {
		t.Errorf("%d lookups, want 1", n)
	}
	if n := victim.Load(); n != 0 {
		t.Errorf("the second answer's address was connected to %d times", n)
	}
	e.logs.waitFor(t, `"upstream":"rebind.example:`+port+`"`, `"upstream_addr":"127.0.0.2:`+port+`"`)
}

// An upstream the client chose is held at arm's length: a greeting other
// than 220 ends the session with the proxy's own 421, not the server's
// words; its 227 address is never followed; replies nobody asked for are
// dropped.
func TestForwardHostileUpstream(t *testing.T) {
	t.Run("greeting refused", func(t *testing.T) {
		fs := newFakeServerAt(t, "127.0.0.2:0", func(f *fakeConn) { f.Send("421 go away, visit evil.example") })
		_, port, _ := net.SplitHostPort(fs.addr())
		e := startProxy(t, "", proxyOpts{config: forwardConfig(t, []string{"127.0.0.2/32"}, port, false, nil)})
		c := dialLogin(t, e.addr)
		r := c.Cmd("USER a@"+fs.addr(), 421)
		if strings.Contains(r.text(), "evil") {
			t.Errorf("the server's greeting reached the client: %q", r.text())
		}
		c.ExpectEOF()
	})
	t.Run("unsolicited replies and a foreign 227", func(t *testing.T) {
		data := []byte("through the control address\n")
		fs := newFakeServerAt(t, "127.0.0.2:0", func(f *fakeConn) {
			f.Send("220 hi")
			f.Expect("USER a")
			f.Send("230 in")
			f.Send("200 unsolicited") // no command pending
			f.Expect("PASV")
			l := f.Passive()
			f.Send(l.PASVReply("192,0,2,99")) // not where the proxy connects
			f.Expect("RETR f")
			dc := l.Accept()
			f.Send("150 here")
			f.SendData(dc, data)
			dc.Close()
			f.Send("226 done")
			f.Expect("QUIT")
			f.Send("221 bye")
		})
		_, port, _ := net.SplitHostPort(fs.addr())
		e := startProxy(t, "", proxyOpts{config: forwardConfig(t, []string{"127.0.0.2/32"}, port, false, nil)})
		c := dialLogin(t, e.addr)
		c.Cmd("USER a@"+fs.addr(), 230)
		e.logs.waitFor(t, "unsolicited reply from upstream dropped")
		dc := c.DialData(c.PASV())
		c.Cmd("RETR f", 150)
		if got, err := readAll(dc); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("RETR: %q, %v", got, err)
		}
		c.Expect(226)
		c.Cmd("QUIT", 221)
	})
}

// A session that named its server in USER stays with it: USER user@host
// again for the same server is taken (the host taken off), one for
// another server is refused, so the password that follows never reaches
// a server it was not meant for; OPEN is the proxy's, never relayed.
func TestForwardSessionKeepsItsServer(t *testing.T) {
	m := &miniFTP{}
	fs := newFakeServerAt(t, "127.0.0.2:0", m.serve)
	other := newFakeServerAt(t, "127.0.0.3:0", func(f *fakeConn) { f.fail("the other server was connected to") })
	_, port, _ := net.SplitHostPort(fs.addr())
	_, otherPort, _ := net.SplitHostPort(other.addr())
	e := startProxy(t, "", proxyOpts{config: forwardConfig(t, []string{"127.0.0.0/8"}, port+","+otherPort, false, nil)})
	c := dialLogin(t, e.addr)
	c.Cmd("USER alice@"+fs.addr(), 331)
	c.Cmd("USER alice@"+other.addr(), 530)
	c.Cmd("PASS pw", 230)
	c.Cmd("USER bob@"+fs.addr(), 331)
	c.Cmd("OPEN "+other.addr(), 530)
	c.Cmd("QUIT", 221)
	e.logs.waitFor(t, "session closed")
	got := strings.Join(m.received(t, 0), "\n")
	if got != "USER alice\nPASS pw\nUSER bob\nQUIT" {
		t.Errorf("the server received:\n%s", got)
	}
	e.logs.waitFor(t, "names another server than the session's")

	// A client outside --forward-from cannot try proxy passwords.
	from := func(fc *proxy.ForwardConfig) { fc.From = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} }
	e2 := startProxy(t, "", proxyOpts{config: forwardConfig(t, []string{"127.0.0.0/8"}, port, true, from)})
	c2 := dialLogin(t, e2.addr)
	if r := c2.Cmd("USER px", 530); !strings.Contains(r.text(), "not allowed from your address") {
		t.Errorf("USER from outside --forward-from: %q", r.text())
	}
	c2.Cmd("OPEN "+fs.addr(), 530)
	e2.logs.waitFor(t, `"dest":"`+fs.addr()+`"`, "client not in --forward-from")
}

// With an upstream configured beside forward mode, a login that names no
// server goes there, past the destination policy.
func TestForwardDefaultUpstream(t *testing.T) {
	m := &miniFTP{}
	fs := newFakeServer(t, m.serve)
	cfg := func(c *proxy.Config) {
		forwardConfig(t, nil, "", false, nil)(c)
		c.Upstream = fs.addr()
	}
	e := startProxy(t, fs.addr(), proxyOpts{config: cfg})
	c := dialLogin(t, e.addr)
	c.Cmd("FEAT", 211)
	c.Cmd("PWD", 530)
	c.Cmd("USER bob", 331)
	c.Cmd("PASS pw", 230)
	if got := strings.Join(m.received(t, 0), "\n"); !strings.HasPrefix(got, "USER bob\nPASS pw") {
		t.Errorf("the upstream received %q", got)
	}
}

// A login the proxy cannot read gets 501 or 503, and the session goes on.
func TestForwardMalformedLogin(t *testing.T) {
	e := startProxy(t, "", proxyOpts{config: forwardConfig(t, []string{"0.0.0.0/0"}, "", false, nil)})
	c := dialLogin(t, e.addr)
	c.Cmd("USER secret@", 501)
	c.Cmd("USER @host", 501)
	c.Cmd("USER a@bad host!", 501)
	c.Cmd("OPEN", 501)
	c.Cmd("OPEN a b", 501)
	c.Cmd("PASS x", 503)
	c.Cmd("ACCT x", 503)
	c.Cmd("QUIT", 221)
	e.logs.waitFor(t, "session closed")
}

// Forward mode beside the rest: AUTH TLS before the login is the
// proxy's, the login that names the server goes over TLS, data is
// protected; and active mode reaches the server the login named.
func TestForwardWithTLSAndActiveMode(t *testing.T) {
	pki := newTestPKI(t)
	file := randomBytes(t, 256<<10)
	m := &miniFTP{files: map[string][]byte{"f": file}}
	fs := newFakeServerAt(t, "127.0.0.2:0", m.serve)
	_, port, _ := net.SplitHostPort(fs.addr())
	cfg := func(c *proxy.Config) {
		forwardConfig(t, []string{"127.0.0.2/32"}, port, true, nil)(c)
		pki.proxyTLS(proxy.ClientTLSRequire, proxy.DataReuseAuto)(c)
	}
	e := startProxy(t, "", proxyOpts{config: cfg})
	conf := pki.clientConfig()

	c := dialLogin(t, e.addr)
	if r := c.Cmd("FEAT", 211); !strings.Contains(r.text(), "AUTH TLS") {
		t.Errorf("FEAT before the login: %q, want AUTH TLS", r.text())
	}
	c.Cmd("USER alice@px@"+fs.addr(), 530) // TLS is required first
	startTLS(t, c, conf)
	c.Cmd("PBSZ 0", 200)
	c.Cmd("PROT P", 200)
	c.Cmd("USER alice@px@"+fs.addr(), 331)
	c.Cmd("PASS pw@proxy-secret", 230)
	retrTLS(t, c, e, conf, "f", file)

	// Active mode: the proxy connects back to the client, which is the
	// TLS client on the data connection all the same (RFC 4217).
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ln.SetDeadline(time.Now().Add(ioTimeout))
	c.Cmd(fmt.Sprintf("EPRT |1|127.0.0.1|%d|", ln.Addr().(*net.TCPAddr).Port), 200)
	c.Send("RETR f")
	raw, err := ln.Accept()
	if err != nil {
		t.Fatalf("no active data connection: %v", err)
	}
	defer raw.Close()
	dc := tls.Client(raw, conf)
	dc.SetDeadline(time.Now().Add(ioTimeout))
	if err := dc.Handshake(); err != nil {
		t.Fatalf("active data handshake: %v", err)
	}
	c.Expect(150)
	got, err := io.ReadAll(dc)
	if err != nil || !bytes.Equal(got, file) {
		t.Fatalf("active RETR: %d bytes, %v", len(got), err)
	}
	c.Expect(226)
	if rcv := strings.Join(m.received(t, 0), "\n"); strings.Contains(rcv, "AUTH") || strings.Contains(rcv, "PROT") {
		t.Errorf("the client's TLS commands reached the server:\n%s", rcv)
	}
}
