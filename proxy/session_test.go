package proxy_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ftpproxy/ftpproxy/proxy"
	"github.com/ftpproxy/ftpproxy/rewrite"
)

var (
	pasvFormat = regexp.MustCompile(`^227 Entering Passive Mode \((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)\.$`)
	epsvFormat = regexp.MustCompile(`^229 Entering Extended Passive Mode \(\|\|\|(\d+)\|\)$`)
)

// checkPASVReply checks that a 227 reply has the usual form and announces
// the proxy's own listener: 127.0.0.1 and a port from the pool.
func checkPASVReply(t testing.TB, e *proxyEnv, r reply) netip.AddrPort {
	t.Helper()
	if len(r.lines) != 1 || !pasvFormat.MatchString(r.lines[0]) {
		t.Fatalf("227 reply %q does not have the form %v", r.text(), pasvFormat)
	}
	ap, err := rewrite.ParsePASVReply(r.lines[0])
	if err != nil {
		t.Fatalf("227 reply %q: %v", r.lines[0], err)
	}
	if ap.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Errorf("227 announces %v, want the proxy's address 127.0.0.1", ap.Addr())
	}
	checkPooled(t, e, ap.Port())
	return ap
}

// checkEPSVReply checks the form of a 229 reply and returns its port.
func checkEPSVReply(t testing.TB, e *proxyEnv, r reply) uint16 {
	t.Helper()
	m := []string(nil)
	if len(r.lines) == 1 {
		m = epsvFormat.FindStringSubmatch(r.lines[0])
	}
	if m == nil {
		t.Fatalf("229 reply %q does not have the form %v", r.text(), epsvFormat)
	}
	port, _ := strconv.Atoi(m[1])
	checkPooled(t, e, uint16(port))
	return uint16(port)
}

func checkPooled(t testing.TB, e *proxyEnv, port uint16) {
	t.Helper()
	if port < e.lo || port > e.hi {
		t.Errorf("passive port %d is outside the configured range %d-%d", port, e.lo, e.hi)
	}
}

func checkSame(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if g, w := sha256.Sum256(got), sha256.Sum256(want); g != w {
		t.Errorf("%s: got %d bytes sha256 %x, want %d bytes sha256 %x", what, len(got), g[:8], len(want), w[:8])
	}
}

// retrPassive downloads name over the data address ap and checks it.
func retrPassive(t testing.TB, c *ftpClient, ap netip.AddrPort, name string, want []byte) {
	t.Helper()
	dc := c.DialData(ap)
	c.Send("RETR " + name)
	c.Expect(150)
	got, err := readAll(dc)
	if err != nil {
		t.Fatalf("RETR %s: reading data: %v", name, err)
	}
	dc.Close()
	c.Expect(226)
	checkSame(t, "RETR "+name, got, want)
}

// upstreamCommands returns the lines the fake received that start with one
// of the verbs.
func upstreamCommands(lines []string, verbs ...string) []string {
	var out []string
	for _, l := range lines {
		v, _, _ := strings.Cut(l, " ")
		for _, want := range verbs {
			if strings.EqualFold(v, want) {
				out = append(out, l)
			}
		}
	}
	return out
}

type replyOrErr struct {
	r   reply
	err error
}

func TestPassiveRETRHoldsCompletionReply(t *testing.T) {
	checkFDs(t)
	file := randomBytes(t, 1<<20)
	gate := make(chan struct{})
	m := &miniFTP{files: map[string][]byte{"big.bin": file}, closeGate: gate}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{})

	c := dialLogin(t, e.addr)
	c.Cmd("USER anonymous", 331)
	c.Cmd("PASS guest", 230)
	c.Cmd("TYPE I", 200)
	ap := checkPASVReply(t, e, c.Cmd("PASV", 227))
	dc := c.DialData(ap)
	c.Send("RETR big.bin")
	c.Expect(150)

	// The fake sends every byte and its 226, and keeps its data connection
	// open until the gate closes: until then the transfer is not over, and
	// the proxy must hold the 226.
	replies := make(chan replyOrErr, 1)
	go func() {
		r, err := c.readReply()
		replies <- replyOrErr{r, err}
	}()
	got := make([]byte, len(file))
	dc.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := io.ReadFull(dc, got); err != nil {
		t.Fatalf("reading data: %v", err)
	}
	select {
	case r := <-replies:
		t.Fatalf("reply %q (%v) arrived before the data connection ended", r.r.text(), r.err)
	case <-time.After(200 * time.Millisecond):
	}
	close(gate)
	if rest, err := readAll(dc); err != nil || len(rest) != 0 {
		t.Fatalf("after the file: %d more bytes, %v; want EOF", len(rest), err)
	}
	dc.Close()
	r := withTimeout(t, replies, "226")
	if r.err != nil || r.r.code != 226 {
		t.Fatalf("after the data: reply %q, %v; want 226", r.r.text(), r.err)
	}
	checkSame(t, "RETR", got, file)

	c.Cmd("QUIT", 221)
	c.ExpectEOF()
	if up := upstreamCommands(m.received(t, 0), "PASV", "EPSV"); len(up) != 1 || up[0] != "PASV" {
		t.Errorf("upstream received %q, want one PASV", up)
	}
	e.logs.waitFor(t, "upstream passive address differs", "10.0.0.5")
}

// A command pipelined behind a transfer command waits for the transfer's
// completion reply, which is held until the relay is over: the replies
// stay in order and in step with their commands, and the upstream gets
// the NOOP only once it has answered the RETR.
func TestPipelinedCommandWhileCompletionHeld(t *testing.T) {
	checkFDs(t)
	fileA, fileB := randomBytes(t, 256<<10), randomBytes(t, 64<<10)
	fs := newFakeServer(t, func(f *fakeConn) {
		f.Send("220 ready")
		l := f.AnswerPASV("10,0,0,5")
		f.Expect("RETR a")
		dc := l.Accept()
		f.Send("150 here it comes")
		f.SendData(dc, fileA)
		f.Send("226 done") // before the data connection closes
		time.Sleep(50 * time.Millisecond)
		dc.Close()
		f.Expect("NOOP")
		f.Send("200 NOOP ok")
		l = f.AnswerPASV("10,0,0,5")
		f.Expect("RETR b")
		dc = l.Accept()
		f.Send("150 here it comes")
		f.SendData(dc, fileB)
		dc.Close()
		f.Send("226 done")
		f.ExpectEOF()
	})
	e := startProxy(t, fs.addr(), proxyOpts{})
	c := dialLogin(t, e.addr)
	dc := c.DialData(checkPASVReply(t, e, c.Cmd("PASV", 227)))
	c.Send("RETR a\r\nNOOP")
	c.Expect(150)
	got, err := readAll(dc)
	if err != nil {
		t.Fatalf("reading data: %v", err)
	}
	dc.Close()
	checkSame(t, "RETR a", got, fileA)
	c.Expect(226)
	c.Expect(200)
	retrPassive(t, c, checkPASVReply(t, e, c.Cmd("PASV", 227)), "b", fileB)
	c.Cmd("QUIT", 221)
}

func TestPassiveSTOR(t *testing.T) {
	checkFDs(t)
	file := randomBytes(t, 1<<20)
	m := &miniFTP{stored: make(chan storedFile, 1)}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{})

	c := dialLogin(t, e.addr)
	dc := c.DialData(checkPASVReply(t, e, c.Cmd("PASV", 227)))
	c.Send("STOR up.bin")
	c.Expect(150)
	upload(t, dc, file)
	c.Expect(226)
	sf := withTimeout(t, m.stored, "the stored file")
	if sf.name != "up.bin" {
		t.Errorf("stored as %q", sf.name)
	}
	checkSame(t, "STOR", sf.data, file)
	c.Cmd("QUIT", 221)
	c.ExpectEOF()
}

func TestEPSV(t *testing.T) {
	tests := []struct {
		name   string
		noEPSV bool
		wantUp []string // passive commands the upstream sees for two EPSV
	}{
		{"upstream speaks EPSV", false, []string{"EPSV", "EPSV"}},
		{"upstream refuses EPSV, PASV fallback", true, []string{"EPSV", "PASV", "PASV"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			file := randomBytes(t, 128<<10)
			m := &miniFTP{files: map[string][]byte{"f": file}, noEPSV: tt.noEPSV}
			fs := newFakeServer(t, m.serve)
			e := startProxy(t, fs.addr(), proxyOpts{})
			c := dialLogin(t, e.addr)
			for range 2 {
				port := checkEPSVReply(t, e, c.Cmd("EPSV", 229))
				retrPassive(t, c, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), "f", file)
			}
			c.Cmd("QUIT", 221)
			c.ExpectEOF()
			if up := upstreamCommands(m.received(t, 0), "PASV", "EPSV"); !equalLines(up, tt.wantUp) {
				t.Errorf("upstream received %q, want %q", up, tt.wantUp)
			}
		})
	}
}

func TestEPSVAll(t *testing.T) {
	checkFDs(t)
	file := randomBytes(t, 64<<10)
	m := &miniFTP{files: map[string][]byte{"f": file}}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{})
	c := dialLogin(t, e.addr)
	c.Cmd("EPSV ALL", 200)
	c.Cmd("PASV", 503)
	c.Cmd("PORT 127,0,0,1,200,10", 503)
	c.Cmd("EPRT |1|127.0.0.1|51210|", 503)
	port := checkEPSVReply(t, e, c.Cmd("EPSV", 229))
	retrPassive(t, c, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port), "f", file)
	c.Cmd("NOOP", 200)
	want := []string{"EPSV", "RETR f", "NOOP"}
	if got := m.received(t, 0); !equalLines(got, want) {
		t.Errorf("upstream received %q, want %q", got, want)
	}
}

func TestActiveMode(t *testing.T) {
	tests := []struct {
		name string
		cmd  func(netip.AddrPort) string
	}{
		{"PORT", func(ap netip.AddrPort) string { arg, _ := rewrite.FormatPORT(ap); return "PORT " + arg }},
		{"EPRT", func(ap netip.AddrPort) string { return "EPRT " + rewrite.FormatEPRT(ap) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			file := randomBytes(t, 1<<20)
			m := &miniFTP{files: map[string][]byte{"f": file}}
			fs := newFakeServer(t, m.serve)
			e := startProxy(t, fs.addr(), proxyOpts{})
			c := dialLogin(t, e.addr)

			ln := listenActive(t, "tcp", "127.0.0.1:0")
			own := ln.Addr().(*net.TCPAddr).AddrPort()
			c.Cmd(tt.cmd(own), 200)
			rec := m.received(t, 0)
			last := rec[len(rec)-1]
			if !strings.HasPrefix(last, "PORT ") {
				t.Fatalf("upstream received %q, want PORT", last)
			}
			ap, err := rewrite.ParsePORT(strings.TrimPrefix(last, "PORT "))
			if err != nil {
				t.Fatal(err)
			}
			if ap.Addr() != netip.MustParseAddr("127.0.0.1") || ap.Port() == own.Port() {
				t.Errorf("upstream was told %v, want the proxy's own address, not the client's %v", ap, own)
			}

			c.Send("RETR f")
			c.Expect(150)
			dc := acceptData(t, ln)
			got, err := readAll(dc)
			if err != nil {
				t.Fatalf("reading data: %v", err)
			}
			dc.Close()
			c.Expect(226)
			checkSame(t, "RETR", got, file)
			c.Cmd("QUIT", 221)
			c.ExpectEOF()
		})
	}
}

func TestDataAddressRefused(t *testing.T) {
	tests := []struct{ name, cmd, says string }{
		{"PORT to another host", "PORT 10,1,2,3,19,136", "use passive mode"},
		{"PORT to a privileged port", "PORT 127,0,0,1,0,21", "below 1024"},
		{"EPRT to another host", "EPRT |1|10.1.2.3|5000|", "use passive mode"},
		{"EPRT to a privileged port", "EPRT |1|127.0.0.1|80|", "below 1024"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			m := &miniFTP{}
			fs := newFakeServer(t, m.serve)
			e := startProxy(t, fs.addr(), proxyOpts{})
			c := dialLogin(t, e.addr)
			if r := c.Cmd(tt.cmd, 501); !strings.Contains(r.text(), tt.says) {
				t.Errorf("refusal %q does not say %q", r.text(), tt.says)
			}
			e.logs.waitFor(t, `"level":"warn"`, "data address refused", strings.Fields(tt.cmd)[0])
			if r := c.Cmd("NOOP", 200); r.lines[0] != "200 NOOP ok." {
				t.Errorf("NOOP: got %q, want the fake's reply", r.lines[0])
			}
			if got := m.received(t, 0); !equalLines(got, []string{"NOOP"}) {
				t.Errorf("upstream received %q, want only NOOP", got)
			}
		})
	}
}

func TestLocalReplies(t *testing.T) {
	tests := []struct {
		cmd  string
		code int
	}{
		{"LPSV", 502},
		{"LPRT 4,4,127,0,0,1,2,200,10", 502},
		{"EPSV 2", 522},
		{"EPSV 3", 501},
		{"EPRT |3|127.0.0.1|5000|", 522},
		{"EPRT |2|::1|5000|", 501},
		{"PORT 127,0,0,1,200", 501},
		{"PORT 127,0,0,1,0,0", 501},
		{"AUTH TLS", 502},
		{"AUTH SSL", 502},
		{"R3TR x", 500},
		{"NOOP\x00", 500},
	}
	checkFDs(t)
	m := &miniFTP{}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{})
	c := dialLogin(t, e.addr)
	for _, tt := range tests {
		c.Send(tt.cmd)
		if r := c.Reply(); r.code != tt.code {
			t.Errorf("%q: got %q, want %d", tt.cmd, r.text(), tt.code)
		}
	}
	c.Cmd("NOOP", 200)
	if got := m.received(t, 0); !equalLines(got, []string{"NOOP"}) {
		t.Errorf("upstream received %q, want only NOOP", got)
	}
}

func TestPassiveForeignSourceRefused(t *testing.T) {
	checkFDs(t)
	if ln, err := net.Listen("tcp", "127.0.0.2:0"); err != nil {
		t.Skipf("127.0.0.2 unavailable: %v", err)
	} else {
		ln.Close()
	}
	file := randomBytes(t, 256<<10)
	m := &miniFTP{files: map[string][]byte{"f": file}}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{})
	c := dialLogin(t, e.addr)
	ap := checkPASVReply(t, e, c.Cmd("PASV", 227))

	// The proxy accepts and resets the connection: the reset shows in the
	// dial or in the first read.
	d := net.Dialer{Timeout: ioTimeout, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	foreign, err := d.Dial("tcp", ap.String())
	if err == nil {
		foreign.SetReadDeadline(time.Now().Add(ioTimeout))
		var n int
		n, err = foreign.Read(make([]byte, 1))
		foreign.Close()
		if err == nil {
			t.Fatalf("data connection from 127.0.0.2: read %d bytes; want it closed by the proxy", n)
		}
	}
	if isTimeout(err) {
		t.Fatalf("data connection from 127.0.0.2 neither refused nor closed: %v", err)
	}
	e.logs.waitFor(t, "data connection from a foreign address refused", "127.0.0.2")

	retrPassive(t, c, ap, "f", file)
	c.Cmd("QUIT", 221)
}

// TestUpstreamReplies runs scripts of unusual upstream replies.
func TestUpstreamReplies(t *testing.T) {
	const hugeLines = 20000
	hugeLine := func(i int) string { return fmt.Sprintf(" help line %05d of the rather long reply", i) }
	tests := []struct {
		name   string
		config func(*proxy.Config)
		server func(*fakeConn)
		client func(*testing.T, *ftpClient, *proxyEnv)
	}{
		{
			name: "malformed 227",
			server: func(f *fakeConn) {
				f.Send("220 ready")
				f.Expect("PASV")
				f.Send("227 Entering Passive Mode (999,0,0,1,4,1).")
				f.Expect("NOOP")
				f.Send("200 still here")
				f.ExpectEOF()
			},
			client: func(t *testing.T, c *ftpClient, e *proxyEnv) {
				c.Expect(220)
				c.Cmd("PASV", 425)
				c.Cmd("NOOP", 200)
				e.logs.waitFor(t, "malformed passive reply from upstream")
			},
		},
		{
			name: "229 with a bad port",
			server: func(f *fakeConn) {
				f.Send("220 ready")
				f.Expect("EPSV")
				f.Send("229 Entering Extended Passive Mode (|||0|)")
				f.Expect("NOOP")
				f.Send("200 still here")
				f.ExpectEOF()
			},
			client: func(t *testing.T, c *ftpClient, e *proxyEnv) {
				c.Expect(220)
				c.Cmd("EPSV", 425)
				c.Cmd("NOOP", 200)
			},
		},
		{
			name: "passive refusal passed on",
			server: func(f *fakeConn) {
				f.Send("220 ready")
				f.Expect("PASV")
				f.Send("530 Please login with USER and PASS.")
				f.Expect("NOOP")
				f.Send("200 still here")
				f.ExpectEOF()
			},
			client: func(t *testing.T, c *ftpClient, e *proxyEnv) {
				c.Expect(220)
				if r := c.Cmd("PASV", 530); r.lines[0] != "530 Please login with USER and PASS." {
					t.Errorf("got %q", r.lines[0])
				}
				c.Cmd("NOOP", 200)
			},
		},
		{
			name: "replies split into 1-byte writes",
			server: func(f *fakeConn) {
				for _, b := range []byte("220-Welcome\r\n220 ready\r\n") {
					f.SendRaw([]byte{b})
				}
				f.Expect("NOOP")
				for _, b := range []byte("200-first line\r\n 200 inside\r\n200 done\r\n") {
					f.SendRaw([]byte{b})
				}
				f.ExpectEOF()
			},
			client: func(t *testing.T, c *ftpClient, e *proxyEnv) {
				if r := c.Expect(220); !equalLines(r.lines, []string{"220-Welcome", "220 ready"}) {
					t.Errorf("greeting %q", r.lines)
				}
				want := []string{"200-first line", " 200 inside", "200 done"}
				if r := c.Cmd("NOOP", 200); !equalLines(r.lines, want) {
					t.Errorf("NOOP reply %q, want %q", r.lines, want)
				}
			},
		},
		{
			name: "20000-line reply",
			server: func(f *fakeConn) {
				f.Send("220 ready")
				f.Expect("HELP")
				var b bytes.Buffer
				b.WriteString("214-The following commands are recognized.\r\n")
				for i := 1; i < hugeLines-1; i++ {
					b.WriteString(hugeLine(i) + "\r\n")
				}
				b.WriteString("214 Help OK.\r\n")
				f.SendRaw(b.Bytes())
				f.Expect("NOOP")
				f.Send("200 ok")
				f.ExpectEOF()
			},
			client: func(t *testing.T, c *ftpClient, e *proxyEnv) {
				c.Expect(220)
				r := c.Cmd("HELP", 214)
				if len(r.lines) != hugeLines {
					t.Fatalf("got %d lines, want %d", len(r.lines), hugeLines)
				}
				if r.lines[0] != "214-The following commands are recognized." || r.lines[hugeLines-1] != "214 Help OK." {
					t.Errorf("first/last line %q / %q", r.lines[0], r.lines[hugeLines-1])
				}
				for i := 1; i < hugeLines-1; i++ {
					if r.lines[i] != hugeLine(i) {
						t.Fatalf("line %d is %q, want %q", i, r.lines[i], hugeLine(i))
					}
				}
				c.Cmd("NOOP", 200)
			},
		},
		{
			name:   "reply over MaxReplyLines",
			config: func(c *proxy.Config) { c.MaxReplyLines = 100 },
			server: func(f *fakeConn) {
				f.Send("220 ready")
				f.Expect("HELP")
				var b bytes.Buffer
				b.WriteString("214-start\r\n")
				for i := range 150 {
					b.WriteString(hugeLine(i) + "\r\n")
				}
				b.WriteString("214 end\r\n")
				f.SendRaw(b.Bytes())
				f.ExpectEOF()
			},
			client: func(t *testing.T, c *ftpClient, e *proxyEnv) {
				c.Expect(220)
				c.Send("HELP")
				var last string
				for {
					line, err := c.readLine()
					if err != nil {
						if err != io.EOF {
							t.Fatalf("reading: %v", err)
						}
						break
					}
					last = line
				}
				if !strings.HasPrefix(last, "421 ") {
					t.Errorf("last line %q, want 421", last)
				}
				e.logs.waitFor(t, "malformed reply from upstream")
			},
		},
		{
			name: "upstream closes the control connection",
			server: func(f *fakeConn) {
				f.Send("220 ready")
				f.Expect("NOOP")
			},
			client: func(t *testing.T, c *ftpClient, e *proxyEnv) {
				c.Expect(220)
				c.Cmd("NOOP", 421)
				c.ExpectEOF()
			},
		},
		{
			name: "upstream sends garbage",
			server: func(f *fakeConn) {
				f.Send("220 ready")
				f.Expect("NOOP")
				f.Send("hello there")
				f.ExpectEOF()
			},
			client: func(t *testing.T, c *ftpClient, e *proxyEnv) {
				c.Expect(220)
				c.Cmd("NOOP", 421)
				c.ExpectEOF()
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			fs := newFakeServer(t, tt.server)
			e := startProxy(t, fs.addr(), proxyOpts{config: tt.config})
			c := dialProxy(t, e.addr)
			tt.client(t, c, e)
		})
	}
}

func TestUpstreamUnavailable(t *testing.T) {
	tests := []struct {
		name     string
		upstream func(t *testing.T) string
		want     string
	}{
		{
			name: "never greets",
			upstream: func(t *testing.T) string {
				return newFakeServer(t, func(f *fakeConn) { f.ExpectEOF() }).addr()
			},
			want: "did not greet",
		},
		{
			name: "unreachable",
			upstream: func(t *testing.T) string {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				addr := ln.Addr().String()
				ln.Close()
				return addr
			},
			want: "cannot be reached",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			e := startProxy(t, tt.upstream(t), proxyOpts{config: func(c *proxy.Config) {
				c.GreetingTimeout = 300 * time.Millisecond
			}})
			start := time.Now()
			c := dialProxy(t, e.addr)
			if r := c.Expect(421); !strings.Contains(r.text(), tt.want) {
				t.Errorf("got %q, want it to say %q", r.text(), tt.want)
			}
			c.ExpectEOF()
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

func TestOverlongCommandLines(t *testing.T) {
	checkFDs(t)
	m := &miniFTP{}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{})
	c := dialLogin(t, e.addr)
	long := bytes.Repeat([]byte("A"), 100*1024)
	sendLong := func() {
		c.SendRaw(long)
		c.SendRaw([]byte("\r\n"))
	}
	sendLong()
	if r := c.Expect(500); !strings.Contains(r.text(), "too long") {
		t.Errorf("got %q, want \"too long\"", r.text())
	}
	c.Cmd("NOOP", 200)
	sendLong()
	c.Expect(500)
	sendLong()
	c.Expect(421)
	c.ExpectEOF()
	if got := m.received(t, 0); !equalLines(got, []string{"NOOP"}) {
		t.Errorf("upstream received %q, want only NOOP", clipText(strings.Join(got, "|")))
	}
}

func TestFEATFiltered(t *testing.T) {
	checkFDs(t)
	m := &miniFTP{}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{})
	c := dialLogin(t, e.addr)
	if r := c.Cmd("AUTH TLS", 502); !strings.Contains(r.text(), "TLS") {
		t.Errorf("AUTH TLS: %q", r.text())
	}
	r := c.Cmd("FEAT", 211)
	want := []string{"211-Features:", " EPSV", " UTF8", "211 End"}
	if !equalLines(r.lines, want) {
		t.Errorf("FEAT: got %q, want %q", r.lines, want)
	}
	c.Cmd("NOOP", 200)
	if got := m.received(t, 0); !equalLines(got, []string{"FEAT", "NOOP"}) {
		t.Errorf("upstream received %q, want FEAT and NOOP", got)
	}
}

// streamData writes block to c over and over until a write fails; the
// result comes on the channel.
func streamData(c net.Conn, block []byte) <-chan error {
	done := make(chan error, 1)
	go func() {
		c.SetWriteDeadline(time.Now().Add(ioTimeout))
		for {
			if _, err := c.Write(block); err != nil {
				done <- err
				return
			}
		}
	}()
	return done
}

// ABOR during a transfer is the proxy's to answer: it resets the data
// connections, tells the client 426 then 226 (RFC 959 section 4.1.3), and
// never sends ABOR upstream, where servers differ (pure-ftpd answers an
// urgent ABOR with 500 before the transfer's own reply). The reset makes
// the upstream end the transfer, and its reply to it is dropped.
func TestABOR(t *testing.T) {
	tests := []struct {
		name   string
		urgent bool   // the Telnet Synch's DM byte goes as TCP urgent data
		final  string // what the upstream says about the aborted transfer
	}{
		{"Synch inline", false, "426 Connection closed; transfer aborted."},
		{"Synch as urgent data", true, "426 Connection closed; transfer aborted."},
		{"server claims success", false, "226-Transfer complete.\r\n226 0.002 seconds (measured here)"},
		{"server sends a second 150", false, "150 0.002 seconds (measured here), 12.3 Mbytes per second"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			small := randomBytes(t, 100<<10)
			fs := newFakeServer(t, func(f *fakeConn) {
				dc := f.serveRETR("endless")
				done := streamData(dc, bytes.Repeat([]byte("A"), 32<<10))
				if err := f.waitErr(done, "the aborted stream"); err == nil {
					f.fail("the data connection was not ended by the ABOR")
				}
				dc.Close()
				f.Send(tt.final)
				l := f.AnswerPASV("127,0,0,1") // not ABOR: it never reaches the server
				f.Expect("RETR small")
				dc = l.Accept()
				f.Send("150 Opening data connection.")
				f.SendData(dc, small)
				dc.Close()
				f.Send("226 Transfer complete.")
				f.ExpectEOF()
			})
			e := startProxy(t, fs.addr(), proxyOpts{})
			c := dialLogin(t, e.addr)
			dc := c.DialData(checkPASVReply(t, e, c.Cmd("PASV", 227)))
			c.Send("RETR endless")
			c.Expect(150)
			dc.SetReadDeadline(time.Now().Add(ioTimeout))
			if _, err := io.ReadFull(dc, make([]byte, 64<<10)); err != nil {
				t.Fatalf("reading data: %v", err)
			}

			c.SendRaw([]byte{0xff, 0xf4, 0xff}) // IAC IP IAC
			if tt.urgent {
				if err := sendUrgent(c.c, []byte{0xf2}); err != nil { // DM
					t.Fatal(err)
				}
				c.SendRaw([]byte("ABOR\r\n"))
			} else {
				c.SendRaw([]byte("\xf2ABOR\r\n"))
			}
			if r := c.Reply(); r.code != 426 {
				t.Fatalf("after ABOR: %q, want 426 first", r.text())
			}
			if r := c.Reply(); r.code != 226 {
				t.Fatalf("after ABOR: %q, want 226 second", r.text())
			}
			dc.SetReadDeadline(time.Now().Add(ioTimeout))
			if _, err := io.Copy(io.Discard, dc); isTimeout(err) {
				t.Fatalf("the aborted data connection stays open: %v", err)
			}
			dc.Close()

			retrPassive(t, c, checkPASVReply(t, e, c.Cmd("PASV", 227)), "small", small)
			c.Cmd("QUIT", 221)
			c.ExpectEOF()
		})
	}
}

func TestPASSMasked(t *testing.T) {
	checkFDs(t)
	const secret = "hunter2-Sup3rSecret"
	m := &miniFTP{}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{})
	c := dialLogin(t, e.addr)
	c.Cmd("USER alice", 331)
	c.Cmd("PASS "+secret, 230)
	c.Cmd("QUIT", 221)
	c.ExpectEOF()
	e.logs.waitFor(t, "session closed")
	logs := e.logs.String()
	if strings.Contains(logs, "Sup3r") {
		t.Errorf("the log contains the password:\n%s", logs)
	}
	if !strings.Contains(logs, "PASS ****") || !strings.Contains(logs, `"user":"alice"`) {
		t.Errorf("the log lacks the masked PASS command or the user:\n%s", logs)
	}
	if got, want := m.received(t, 0), []string{"USER alice", "PASS " + secret, "QUIT"}; !equalLines(got, want) {
		t.Errorf("upstream received %q, want %q", got, want)
	}
}

func TestClientVanishesMidTransfer(t *testing.T) {
	checkFDs(t)
	upstreamEOF := make(chan error, 1)
	fs := newFakeServer(t, func(f *fakeConn) {
		dc := f.serveRETR("endless")
		done := streamData(dc, bytes.Repeat([]byte("B"), 32<<10))
		line, err := f.ReadLine()
		if err == nil {
			err = fmt.Errorf("unexpected command %q", line)
		} else if !isTimeout(err) {
			err = nil
		}
		upstreamEOF <- err
		dc.Close()
		f.waitErr(done, "the stream")
	})
	e := startProxy(t, fs.addr(), proxyOpts{})
	c := dialLogin(t, e.addr)
	dc := c.DialData(checkPASVReply(t, e, c.Cmd("PASV", 227)))
	c.Send("RETR endless")
	c.Expect(150)
	dc.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := io.ReadFull(dc, make([]byte, 64<<10)); err != nil {
		t.Fatalf("reading data: %v", err)
	}
	dc.Close()
	c.Close()
	if err := withTimeout(t, upstreamEOF, "the upstream control connection to close"); err != nil {
		t.Errorf("upstream control connection: %v", err)
	}
	e.logs.waitFor(t, "session closed", "client closed")
}

func TestUpstreamDiesMidTransfer(t *testing.T) {
	checkFDs(t)
	fs := newFakeServer(t, func(f *fakeConn) {
		f.Send("220 ready")
		l := f.AnswerPASV("127,0,0,1")
		f.Expect("RETR f")
		dc := l.Accept()
		f.Send("150 Opening data connection.")
		dc.SetWriteDeadline(time.Now().Add(ioTimeout))
		dc.Write(bytes.Repeat([]byte("C"), 64<<10))
		// The server dies: both connections close, no reply.
	})
	e := startProxy(t, fs.addr(), proxyOpts{})
	c := dialLogin(t, e.addr)
	dc := c.DialData(checkPASVReply(t, e, c.Cmd("PASV", 227)))
	c.Send("RETR f")
	c.Expect(150)
	if _, err := readAll(dc); isTimeout(err) {
		t.Fatalf("data connection stays open: %v", err)
	}
	// The transfer failed (426), then the session is over (421).
	c.Expect(426)
	c.Expect(421)
	c.ExpectEOF()
}

func TestIPv6Client(t *testing.T) {
	checkFDs(t)
	if ln, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Skipf("::1 unavailable: %v", err)
	} else {
		ln.Close()
	}
	file := randomBytes(t, 256<<10)
	m := &miniFTP{files: map[string][]byte{"f": file}}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{listen: "[::1]:0"})
	c := dialLogin(t, e.addr)
	loop6 := netip.MustParseAddr("::1")

	port := checkEPSVReply(t, e, c.Cmd("EPSV", 229))
	retrPassive(t, c, netip.AddrPortFrom(loop6, port), "f", file)

	ln := listenActive(t, "tcp6", "[::1]:0")
	own := ln.Addr().(*net.TCPAddr).AddrPort()
	c.Cmd(fmt.Sprintf("EPRT |2|::1|%d|", own.Port()), 200)
	rec := m.received(t, 0)
	if last := rec[len(rec)-1]; !strings.HasPrefix(last, "PORT 127,0,0,1,") {
		t.Errorf("upstream received %q, want a PORT to the proxy's IPv4 address", last)
	}
	c.Send("RETR f")
	c.Expect(150)
	dc := acceptData(t, ln)
	if from := dc.RemoteAddr().(*net.TCPAddr).AddrPort().Addr(); from != loop6 {
		t.Errorf("active data connection from %v, want ::1", from)
	}
	got, err := readAll(dc)
	if err != nil {
		t.Fatalf("reading data: %v", err)
	}
	dc.Close()
	c.Expect(226)
	checkSame(t, "RETR over EPRT", got, file)

	c.Cmd("PASV", 522)
	c.Cmd("EPSV 1", 522)
	c.Cmd("EPRT |1|127.0.0.1|5000|", 501)
	c.Cmd("NOOP", 200)
	c.Cmd("QUIT", 221)
	c.ExpectEOF()
}

func TestPassivePortExhaustion(t *testing.T) {
	checkFDs(t)
	file := randomBytes(t, 128<<10)
	m := &miniFTP{files: map[string][]byte{"f": file}}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{poolSize: 1})
	a := dialLogin(t, e.addr)
	b := dialLogin(t, e.addr)

	apA := checkPASVReply(t, e, a.Cmd("PASV", 227))
	b.Cmd("PASV", 425)
	e.logs.waitFor(t, "passive port range exhausted")
	retrPassive(t, a, apA, "f", file)
	if n := e.pool.InUse(); n != 0 {
		t.Errorf("after the first transfer %d ports in use, want 0", n)
	}
	apB := checkPASVReply(t, e, b.Cmd("PASV", 227))
	if apB.Port() != apA.Port() {
		t.Errorf("second PASV got port %d, want the pool's only port %d", apB.Port(), apA.Port())
	}
	retrPassive(t, b, apB, "f", file)
	a.Cmd("QUIT", 221)
	b.Cmd("QUIT", 221)
	if n := e.pool.InUse(); n != 0 {
		t.Errorf("at the end %d ports in use, want 0", n)
	}
}

// An announced passive port nobody connects to is given back once the
// upstream has finished the command.
func TestPassivePortReleasedWithoutConnection(t *testing.T) {
	checkFDs(t)
	fs := newFakeServer(t, func(f *fakeConn) {
		f.Send("220 ready")
		l := f.AnswerPASV("127,0,0,1")
		f.Expect("PASV")
		l.ln.Close()
		l = f.Passive()
		f.Send(l.PASVReply("127,0,0,1"))
		f.Expect("LIST")
		f.Send("550 No files found.")
		f.ExpectEOF()
	})
	e := startProxy(t, fs.addr(), proxyOpts{poolSize: 1})
	c := dialLogin(t, e.addr)
	checkPASVReply(t, e, c.Cmd("PASV", 227))
	// A second PASV replaces the first: its port is free again at once.
	checkPASVReply(t, e, c.Cmd("PASV", 227))
	c.Cmd("LIST", 550)
	c.Cmd("QUIT", 221)
	c.ExpectEOF()
	e.logs.waitFor(t, "session closed")
	if n := e.pool.InUse(); n != 0 {
		t.Errorf("%d ports in use, want 0", n)
	}
}

func TestIdleTimeout(t *testing.T) {
	checkFDs(t)
	m := &miniFTP{}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{config: func(c *proxy.Config) {
		c.IdleTimeout = 300 * time.Millisecond
	}})
	c := dialLogin(t, e.addr)
	if r := c.Expect(421); !strings.Contains(r.text(), "Idle") {
		t.Errorf("got %q", r.text())
	}
	c.ExpectEOF()
}

func TestShutdown(t *testing.T) {
	checkFDs(t)
	m := &miniFTP{}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{})
	c := dialLogin(t, e.addr)
	c.Cmd("NOOP", 200)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := e.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown = %v, want DeadlineExceeded", err)
	}
	if r := c.Expect(421); !strings.Contains(r.text(), "shutting down") {
		t.Errorf("got %q", r.text())
	}
	c.ExpectEOF()
	if n := e.srv.Sessions(); n != 0 {
		t.Errorf("%d sessions after Shutdown", n)
	}
	if conn, err := net.DialTimeout("tcp", e.addr, ioTimeout); err == nil {
		conn.Close()
		t.Errorf("the proxy still accepts connections after Shutdown")
	}
}

func equalLines(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// After the upstream's 221 the session is over, even if the upstream is
// slow to close its end: the client's control connection closes at once.
func TestQUITEndsSessionWithoutUpstreamClose(t *testing.T) {
	checkFDs(t)
	release := make(chan struct{})
	defer close(release)
	fs := newFakeServer(t, func(f *fakeConn) {
		f.Send("220 ready")
		f.Expect("QUIT")
		f.Send("221 Goodbye.")
		<-release // keep the upstream connection open
	})
	e := startProxy(t, fs.addr(), proxyOpts{})
	c := dialProxy(t, e.addr)
	c.Expect(220)
	c.Cmd("QUIT", 221)
	c.ExpectEOF()
}

// With --upstream-data-mode, the upstream's data mode is the
// configuration's, whatever the client uses: an active client in front of
// a passive-only server, a passive client in front of an active-only one.
func TestUpstreamDataModeTranslation(t *testing.T) {
	tests := []struct {
		name          string
		mode          proxy.DataMode
		clientPassive bool
		upstreamSaw   string // the data command the upstream must receive
	}{
		{"active client, passive upstream", proxy.DataModePassive, false, "PASV"},
		{"passive client, active upstream", proxy.DataModeActive, true, "PORT "},
		{"passive client, same", proxy.DataModeSame, true, "PASV"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			file := randomBytes(t, 256<<10)
			m := &miniFTP{files: map[string][]byte{"f": file}}
			fs := newFakeServer(t, m.serve)
			e := startProxy(t, fs.addr(), proxyOpts{config: func(c *proxy.Config) { c.UpstreamDataMode = tt.mode }})
			c := dialLogin(t, e.addr)

			var ln *net.TCPListener
			var pasv netip.AddrPort
			if tt.clientPassive {
				pasv = c.PASV()
				if pasv.Port() < e.lo || pasv.Port() > e.hi {
					t.Errorf("227 port %d outside the pool %d-%d", pasv.Port(), e.lo, e.hi)
				}
			} else {
				ln = listenActive(t, "tcp", "127.0.0.1:0")
				arg, _ := rewrite.FormatPORT(ln.Addr().(*net.TCPAddr).AddrPort())
				if r := c.Cmd("PORT "+arg, 200); !strings.Contains(r.text(), "PORT") {
					t.Errorf("PORT reply %q", r.text())
				}
			}
			rec := m.received(t, 0)
			if last := rec[len(rec)-1]; !strings.HasPrefix(last, tt.upstreamSaw) {
				t.Fatalf("upstream received %q, want %q", last, tt.upstreamSaw)
			}

			var dc *net.TCPConn
			if tt.clientPassive {
				dc = c.DialData(pasv)
			}
			c.Send("RETR f")
			c.Expect(150)
			if !tt.clientPassive {
				dc = acceptData(t, ln)
			}
			got, err := readAll(dc)
			if err != nil {
				t.Fatalf("reading data: %v", err)
			}
			dc.Close()
			c.Expect(226)
			checkSame(t, "RETR", got, file)
			if e.pool.InUse() != 0 {
				t.Errorf("%d passive ports still taken", e.pool.InUse())
			}
			c.Cmd("QUIT", 221)
			c.ExpectEOF()
		})
	}
}
