package proxy_test

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ftpproxy/ftpproxy/proxy"
)

// dialFrom opens a control connection from a chosen loopback address.
func dialFrom(t testing.TB, from, addr string) *ftpClient {
	t.Helper()
	d := net.Dialer{Timeout: ioTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return newFTPClient(t, c)
}

// passwordServer accepts the password "good" and refuses any other.
func passwordServer(f *fakeConn) {
	f.Send("220 ready")
	for {
		line, err := f.ReadLine()
		if err != nil {
			return
		}
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "USER":
			f.Send("331 Password required.")
		case "PASS":
			if arg == "good" {
				f.Send("230 Logged in.")
			} else {
				f.Send("530 Login incorrect.")
			}
		case "NOOP":
			f.Send("200 NOOP ok.")
		case "QUIT":
			f.Send("221 Goodbye.")
			return
		default:
			f.Send("502 Command not implemented.")
		}
	}
}

func TestAccessControlAndLimits(t *testing.T) {
	tests := []struct {
		name   string
		config func(*proxy.Config)
		held   int    // sessions opened first, from 127.0.0.1
		want   string // the refusal
	}{
		{"denied network", func(c *proxy.Config) { c.Deny = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} }, 0, "Access denied"},
		{"not in allow list", func(c *proxy.Config) { c.Allow = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} }, 0, "Access denied"},
		{"per-address limit", func(c *proxy.Config) { c.MaxSessionsPerIP = 2 }, 2, "from your address"},
		{"total limit", func(c *proxy.Config) { c.MaxSessions = 1 }, 1, "Too many sessions"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			fs := newFakeServer(t, passwordServer)
			e := startProxy(t, fs.addr(), proxyOpts{config: tt.config})
			for range tt.held {
				c := dialFrom(t, "127.0.0.1", e.addr)
				c.Expect(220)
			}
			c := dialFrom(t, "127.0.0.1", e.addr)
			if r := c.Expect(421); !strings.Contains(r.text(), tt.want) {
				t.Errorf("refusal %q does not say %q", r.text(), tt.want)
			}
			c.ExpectEOF()
			e.logs.waitFor(t, "session refused")
		})
	}
}

// Repeated wrong passwords from one address ban it; another address still
// logs in.
func TestLoginFailureBan(t *testing.T) {
	checkFDs(t)
	fs := newFakeServer(t, passwordServer)
	e := startProxy(t, fs.addr(), proxyOpts{config: func(c *proxy.Config) {
		c.MaxLoginFailures = 20
		c.LoginFailureWindow = time.Minute
		c.BanDuration = time.Minute
	}})
	attempts, banned := 0, false
	for !banned {
		c := dialFrom(t, "127.0.0.1", e.addr)
		c.Expect(220)
		for range 5 {
			attempts++
			c.Cmd("USER alice", 331)
			c.Cmd("PASS wrong", 530)
			if attempts < 20 {
				continue
			}
			// The ban is in force once the 20th 530 has arrived: a
			// client connecting again at once is refused.
			at := dialFrom(t, "127.0.0.1", e.addr)
			if r := at.Expect(421); !strings.Contains(r.text(), "failed logins") {
				t.Errorf("a session opened right after the 20th 530 got %q", r.text())
			}
			at.ExpectEOF()
			// The 20th failure is relayed, then the ban is announced.
			if r := c.Expect(421); !strings.Contains(r.text(), "failed logins") {
				t.Errorf("ban reply %q", r.text())
			}
			c.ExpectEOF()
			banned = true
			break
		}
		if !banned {
			c.Cmd("QUIT", 221)
		}
	}
	e.logs.waitFor(t, "address banned after failed logins", `"client":"127.0.0.1:`)

	again := dialFrom(t, "127.0.0.1", e.addr)
	if r := again.Expect(421); !strings.Contains(r.text(), "failed logins") {
		t.Errorf("banned address got %q", r.text())
	}
	again.ExpectEOF()

	other := dialFrom(t, "127.0.0.2", e.addr)
	other.Expect(220)
	other.Cmd("USER bob", 331)
	other.Cmd("PASS good", 230)
	other.Cmd("QUIT", 221)
}

func TestLoginTimeout(t *testing.T) {
	checkFDs(t)
	fs := newFakeServer(t, passwordServer)
	const timeout = 300 * time.Millisecond
	e := startProxy(t, fs.addr(), proxyOpts{config: func(c *proxy.Config) { c.LoginTimeout = timeout }})

	lazy := dialFrom(t, "127.0.0.1", e.addr)
	lazy.Expect(220)
	if r := lazy.Expect(421); !strings.Contains(r.text(), "Login timeout") {
		t.Errorf("got %q", r.text())
	}
	lazy.ExpectEOF()

	// A session that logged in is not cut by the login timeout.
	c := dialFrom(t, "127.0.0.1", e.addr)
	c.Expect(220)
	c.Cmd("USER bob", 331)
	c.Cmd("PASS good", 230)
	<-time.After(2 * timeout)
	c.Cmd("NOOP", 200)
	c.Cmd("QUIT", 221)
}

// A transfer in which no byte moves for DataStallTimeout is aborted: the
// client sees the data connection end and the upstream's failure reply,
// never a success.
func TestDataStall(t *testing.T) {
	checkFDs(t)
	release := make(chan struct{})
	defer close(release)
	fs := newFakeServer(t, func(f *fakeConn) {
		f.Send("220 ready")
		l := f.AnswerPASV("127,0,0,1")
		f.Expect("RETR")
		dc := l.Accept()
		f.Send("150 Opening data connection.")
		dc.Write(make([]byte, 1000))
		// Stall until the proxy gives up on the data connection.
		dc.SetReadDeadline(time.Now().Add(ioTimeout))
		if _, err := dc.Read(make([]byte, 1)); err == nil {
			f.fail("the data connection got a byte from the proxy")
		}
		f.Send("426 Connection closed; transfer aborted.")
		f.ExpectEOF()
	})
	e := startProxy(t, fs.addr(), proxyOpts{config: func(c *proxy.Config) { c.DataStallTimeout = 300 * time.Millisecond }})
	c := dialLogin(t, e.addr)
	dc := c.DialData(c.PASV())
	c.Send("RETR f")
	c.Expect(150)
	got, _ := readAll(dc)
	if len(got) != 1000 {
		t.Errorf("got %d bytes before the stall, want 1000", len(got))
	}
	c.Expect(426)
	e.logs.waitFor(t, "data transfer stalled")
	e.logs.waitFor(t, `"message":"transfer"`, "stalled")
	c.Cmd("QUIT", 221)
}
