package proxy_test

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"

	"github.com/ftpproxy/ftpproxy/proxy"
	"github.com/ftpproxy/ftpproxy/rewrite"
)

// trustLoopback makes 127.0.0.1, where the tests' "load balancer" dials
// from, a trusted PROXY protocol peer.
func trustLoopback(c *proxy.Config) {
	c.ProxyProtocolFrom = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	c.ProxyHeaderTimeout = time.Second
}

// Behind a load balancer, the client's address is the one in the PROXY
// header, for control and data connections alike: the log shows it, PORT
// must name it, and a forwarded data connection must carry it.
func TestProxyProtocolClientAddress(t *testing.T) {
	checkFDs(t)
	file := randomBytes(t, 256<<10)
	m := &miniFTP{files: map[string][]byte{"f": file}}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{config: trustLoopback})

	c := dialProxy(t, e.addr)
	c.SendRaw([]byte("PROXY TCP4 127.0.0.9 127.0.0.1 40000 21\r\n"))
	c.Expect(220)
	e.logs.waitFor(t, `"client":"127.0.0.9:40000"`, `"via":"127.0.0.1:`, "session opened")

	// PORT may name the client from the header and nobody else: not the
	// balancer it came through either, or the proxy would open a data
	// connection onto the balancer host for the client (an FTP bounce).
	arg, _ := rewrite.FormatPORT(netip.MustParseAddrPort("127.0.0.8:5000"))
	c.Cmd("PORT "+arg, 501)
	arg, _ = rewrite.FormatPORT(netip.MustParseAddrPort("127.0.0.1:5000"))
	c.Cmd("PORT "+arg, 501)
	arg, _ = rewrite.FormatPORT(netip.MustParseAddrPort("127.0.0.9:5000"))
	c.Cmd("PORT "+arg, 200)

	pasv := c.PASV()
	// A forwarded data connection without a header is turned away...
	bad := c.DialData(pasv)
	bad.Write([]byte("not a header\r\n"))
	e.logs.waitFor(t, "data connection with a bad PROXY header refused")
	// ...and so is one whose header names somebody else.
	other := c.DialData(pasv)
	fmt.Fprintf(other, "PROXY TCP4 127.0.0.8 127.0.0.1 40001 %d\r\n", pasv.Port())
	e.logs.waitFor(t, "data connection from a foreign address refused", `"from":"127.0.0.8:40001"`)

	dc := c.DialData(pasv)
	fmt.Fprintf(dc, "PROXY TCP4 127.0.0.9 127.0.0.1 40002 %d\r\n", pasv.Port())
	c.Send("RETR f")
	c.Expect(150)
	got, err := readAll(dc)
	if err != nil {
		t.Fatalf("reading data: %v", err)
	}
	dc.Close()
	c.Expect(226)
	checkSame(t, "RETR", got, file)
	c.Cmd("QUIT", 221)
	c.ExpectEOF()
}

// A header where none may come, or none where one must, ends the session
// with 421 and a log line, and the listener goes on serving.
func TestProxyProtocolRefused(t *testing.T) {
	v2 := func() []byte {
		h := proxyproto.HeaderProxyFromAddrs(2, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 1}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 21})
		b, _ := h.Format()
		return b
	}()
	tests := []struct {
		name    string
		trusted bool
		send    []byte
		log     string
	}{
		{"trusted peer without header", true, []byte("USER anonymous\r\n"), "PROXY header missing"},
		{"trusted peer, header cut short", true, []byte("PROXY TCP4 127.0.0.9"), "PROXY header malformed"},
		{"trusted peer, v2 header cut short", true, v2[:20], "PROXY header malformed"},
		{"untrusted peer, v1 header", false, []byte("PROXY TCP4 127.0.0.9 127.0.0.1 40000 21\r\n"), "untrusted peer"},
		{"untrusted peer, v2 header", false, v2, "untrusted peer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			m := &miniFTP{}
			fs := newFakeServer(t, m.serve)
			o := proxyOpts{}
			if tt.trusted {
				o.config = trustLoopback
			}
			e := startProxy(t, fs.addr(), o)

			c := dialProxy(t, e.addr)
			if !tt.trusted {
				c.Expect(220)
			}
			c.SendRaw(tt.send)
			if tt.trusted && len(tt.send) < 32 {
				c.c.(*net.TCPConn).CloseWrite() // a header cut short
			}
			r := c.Expect(421)
			if !strings.Contains(r.text(), "PROXY") {
				t.Errorf("421 reply %q does not say why", r.text())
			}
			c.ExpectEOF()
			e.logs.waitFor(t, "PROXY header refused", tt.log)

			// The listener keeps serving.
			c2 := dialProxy(t, e.addr)
			if tt.trusted {
				c2.SendRaw([]byte("PROXY TCP4 127.0.0.9 127.0.0.1 40000 21\r\n"))
			}
			c2.Expect(220)
			c2.Cmd("NOOP", 200)
			c2.Cmd("QUIT", 221)
		})
	}
}

// With UpstreamProxyProtocol the upstream learns the client's address from
// a header before the FTP conversation starts.
func TestUpstreamProxyProtocol(t *testing.T) {
	for _, version := range []byte{1, 2} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			checkFDs(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			headers := make(chan *proxyproto.Header, 1)
			done := make(chan struct{})
			go func() {
				defer close(done)
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(ioTimeout))
				br := bufio.NewReader(c)
				h, err := proxyproto.Read(br)
				if err != nil {
					t.Errorf("upstream: reading PROXY header: %v", err)
					return
				}
				headers <- h
				c.Write([]byte("220 ready\r\n"))
				if line, _ := br.ReadString('\n'); line == "QUIT\r\n" {
					c.Write([]byte("221 bye\r\n"))
				}
			}()
			e := startProxy(t, ln.Addr().String(), proxyOpts{config: func(c *proxy.Config) { c.UpstreamProxyProtocol = version }})
			c := dialProxy(t, e.addr)
			c.Expect(220)
			h := <-headers
			src, dst, ok := h.TCPAddrs()
			client := c.c.LocalAddr().(*net.TCPAddr)
			if !ok || h.Version != version || src.Port != client.Port || !src.IP.Equal(client.IP) || dst.String() != e.addr {
				t.Errorf("header v%d %v -> %v, want v%d %v -> %v", h.Version, src, dst, version, client, e.addr)
			}
			c.Cmd("QUIT", 221)
			c.ExpectEOF()
			<-done
		})
	}
}

// Two proxies chained with the PROXY protocol: A tells B the client's
// address for the control connection and for every data connection, and B
// lets A's own address stand in for the client in A's PORT commands.
func TestChainedProxies(t *testing.T) {
	for _, active := range []bool{false, true} {
		t.Run(map[bool]string{false: "passive", true: "active"}[active], func(t *testing.T) {
			checkFDs(t)
			file := randomBytes(t, 256<<10)
			m := &miniFTP{files: map[string][]byte{"f": file}, pasvHost: "127,0,0,1"}
			fs := newFakeServer(t, m.serve)
			b := startProxy(t, fs.addr(), proxyOpts{config: func(c *proxy.Config) {
				trustLoopback(c)
				c.ChainedProxies = true
			}})
			a := startProxy(t, b.addr, proxyOpts{config: func(c *proxy.Config) { c.UpstreamProxyProtocol = 2 }})
			c := dialLogin(t, a.addr)
			client := c.c.LocalAddr().String()

			var dc *net.TCPConn
			var ln *net.TCPListener
			if active {
				ln = listenActive(t, "tcp", "127.0.0.1:0")
				arg, _ := rewrite.FormatPORT(ln.Addr().(*net.TCPAddr).AddrPort())
				c.Cmd("PORT "+arg, 200)
			} else {
				dc = c.DialData(c.EPSV())
			}
			c.Send("RETR f")
			c.Expect(150)
			if active {
				dc = acceptData(t, ln)
			}
			got, err := readAll(dc)
			if err != nil {
				t.Fatalf("reading data: %v", err)
			}
			dc.Close()
			c.Expect(226)
			checkSame(t, "RETR through two proxies", got, file)
			b.logs.waitFor(t, `"client":"`+client+`"`, `"message":"transfer"`)
			c.Cmd("QUIT", 221)
			c.ExpectEOF()
		})
	}
}

// With ChainedProxies, the peer in front is an ftpproxy: its own address
// may stand in for the client in PORT, as a chained proxy in active mode
// names itself.
func TestChainedProxiesMayNameThemselves(t *testing.T) {
	for _, chained := range []bool{false, true} {
		t.Run(map[bool]string{false: "balancer", true: "chained ftpproxy"}[chained], func(t *testing.T) {
			checkFDs(t)
			fs := newFakeServer(t, (&miniFTP{}).serve)
			e := startProxy(t, fs.addr(), proxyOpts{config: func(c *proxy.Config) {
				trustLoopback(c)
				c.ChainedProxies = chained
			}})
			c := dialProxy(t, e.addr)
			c.SendRaw([]byte("PROXY TCP4 127.0.0.9 127.0.0.1 40000 21\r\n"))
			c.Expect(220)
			arg, _ := rewrite.FormatPORT(netip.MustParseAddrPort("127.0.0.1:5000"))
			want := map[bool]int{false: 501, true: 200}[chained]
			c.Cmd("PORT "+arg, want)
			c.Cmd("EPRT |1|127.0.0.1|5000|", want)
			c.Cmd("QUIT", 221)
		})
	}
}

// Behind a balancer the passive listener binds the proxy's own address,
// not the wildcard: a balancer on the same host holds the same port
// numbers on its own address to forward them.
func TestPassiveBindBehindBalancer(t *testing.T) {
	checkFDs(t)
	m := &miniFTP{}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{config: func(c *proxy.Config) {
		trustLoopback(c)
		c.Advertiser.Static = netip.MustParseAddr("127.0.0.5") // the balancer's public address
	}})
	c := dialProxy(t, e.addr)
	// The client reached the balancer at 127.0.0.2; the proxy advertises
	// 127.0.0.5 and is itself at 127.0.0.1.
	c.SendRaw([]byte("PROXY TCP4 127.0.0.9 127.0.0.2 40000 21\r\n"))
	c.Expect(220)
	c.Cmd("USER a", 331)
	pasv := c.PASV()
	if pasv.Addr() != netip.MustParseAddr("127.0.0.5") {
		t.Errorf("227 advertises %v, want 127.0.0.5", pasv.Addr())
	}
	other, err := net.Listen("tcp", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), pasv.Port()).String())
	if err != nil {
		t.Fatalf("the passive port is taken on every address, not just the proxy's: %v", err)
	}
	other.Close()
	c.Cmd("QUIT", 221)
}
