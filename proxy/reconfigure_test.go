package proxy_test

import (
	"net"
	"net/netip"
	"testing"

	"github.com/ftpproxy/ftpproxy/proxy"
)

// Reconfigure applies to the sessions that start afterwards: a transfer
// running through it finishes byte-exact with the configuration it
// started with, while a new session meets the new access list and the new
// upstream.
func TestReconfigure(t *testing.T) {
	checkFDs(t)
	file := randomBytes(t, 256<<10)
	gate := make(chan struct{})
	first := &miniFTP{files: map[string][]byte{"f": file}, closeGate: gate}
	fsA := newFakeServer(t, first.serve)
	fsB := newFakeServer(t, func(f *fakeConn) {
		f.Send("220 the second server")
		f.Expect("QUIT")
		f.Send("221 bye")
	})
	var cfg proxy.Config
	e := startProxy(t, fsA.addr(), proxyOpts{config: func(c *proxy.Config) { cfg = *c }})

	running := dialFrom(t, "127.0.0.5", e.addr)
	running.Expect(220)
	running.Cmd("USER u", 331)
	running.Cmd("PASS p", 230)
	ap := checkPASVReply(t, e, running.Cmd("PASV", 227))
	d := net.Dialer{Timeout: ioTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.5")}}
	dc, err := d.Dial("tcp", ap.String())
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	running.Send("RETR f")
	running.Expect(150)

	next := cfg
	next.Upstream = fsB.addr()
	next.Deny = []netip.Prefix{netip.MustParsePrefix("127.0.0.5/32")}
	e.srv.Reconfigure(next)

	refused := dialFrom(t, "127.0.0.5", e.addr)
	refused.Expect(421)
	moved := dialFrom(t, "127.0.0.6", e.addr)
	if r := moved.Expect(220); r.text() != "220 the second server" {
		t.Errorf("a new session was greeted with %q, want the new upstream's", r.text())
	}
	moved.Cmd("QUIT", 221)

	close(gate)
	got, err := readAll(dc)
	if err != nil {
		t.Fatal(err)
	}
	running.Expect(226)
	checkSame(t, "RETR across a reconfiguration", got, file)
	running.Cmd("NOOP", 200)
	running.Cmd("QUIT", 221)
}
