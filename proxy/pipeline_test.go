package proxy_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftpproxy/ftpproxy/proxy"
	"github.com/ftpproxy/ftpproxy/rewrite"
)

// Tests of the session's state machine (exchange.go): commands sent ahead
// of their replies, replies nobody asked for, replies the proxy holds, and
// the session's end while a transfer runs. Each asserts what a client sees
// and, where it matters, what the upstream received or what the log says.

// replyServer is a fake upstream that greets, then answers each command by
// its verb: with replies[verb] if there is one (lines joined by CRLF), with
// a 227 for a data listener of its own to PASV, 221 to QUIT (and then it
// ends), and "200 OK." to anything else.
type replyServer struct {
	replies map[string]string

	mu    sync.Mutex
	conns []*fakeConn
}

func (rs *replyServer) serve(f *fakeConn) {
	rs.mu.Lock()
	rs.conns = append(rs.conns, f)
	rs.mu.Unlock()
	f.Send("220 ready")
	for {
		line, err := f.ReadLine()
		if err != nil {
			if isTimeout(err) {
				f.fail("no command: %v", err)
			}
			return
		}
		verb, _, _ := strings.Cut(line, " ")
		verb = strings.ToUpper(verb)
		if r, ok := rs.replies[verb]; ok {
			f.Send(r)
			continue
		}
		switch verb {
		case "PASV":
			f.Send(f.Passive().PASVReply("127,0,0,1"))
		case "QUIT":
			f.Send("221 Goodbye.")
			return
		default:
			f.Send("200 OK.")
		}
	}
}

// received returns the command lines the n-th control connection (from 0)
// has received so far.
func (rs *replyServer) received(t testing.TB, n int) []string {
	t.Helper()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if n >= len(rs.conns) {
		t.Fatalf("the fake server has had %d control connections, want more than %d", len(rs.conns), n)
	}
	return rs.conns[n].received()
}

// flood writes b in one write, as a client that pipelines a lot does. The
// proxy may close the connection before it has read everything, so the
// write may end in a reset; only a write that hangs is a failure.
func flood(t testing.TB, c *ftpClient, b []byte) {
	t.Helper()
	c.c.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := c.c.Write(b); isTimeout(err) {
		t.Fatalf("writing %d bytes of commands: %v", len(b), err)
	}
}

// replyLater reads the next reply in the background.
func replyLater(c *ftpClient) <-chan replyOrErr {
	ch := make(chan replyOrErr, 1)
	go func() {
		r, err := c.readReply()
		ch <- replyOrErr{r, err}
	}()
	return ch
}

// expectNothingYet checks that no reply arrives on ch for a short while:
// the reply is being held.
func expectNothingYet(t testing.TB, ch <-chan replyOrErr, why string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("reply %q (%v) arrived %s", r.r.text(), r.err, why)
	case <-time.After(200 * time.Millisecond):
	}
}

// waitInUse polls until at most n ports of the passive pool are in use.
func waitInUse(t testing.TB, e *proxyEnv, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for e.pool.InUse() > n {
		if time.Now().After(deadline) {
			t.Fatalf("%d passive ports in use, want at most %d", e.pool.InUse(), n)
		}
		<-tick.C
	}
}

// logLines returns the log lines that contain every one of parts.
func logLines(e *proxyEnv, parts ...string) []string {
	var out []string
	for line := range strings.SplitSeq(e.logs.String(), "\n") {
		ok := line != ""
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// Twenty PASV in one write get twenty 227 in order. Each PASV drops the
// data channel of the one before and gives its port back, so a small pool
// is never exhausted, by this session or for the next.
func TestPipelinedPASVBurst(t *testing.T) {
	checkFDs(t)
	m := &miniFTP{pasvHost: "127,0,0,1"}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{poolSize: 4})
	c := dialLogin(t, e.addr)
	c.SendRaw([]byte(strings.Repeat("PASV\r\n", 20)))
	for i := range 20 {
		r := c.Reply()
		if r.code != 227 {
			t.Fatalf("reply %d to 20 pipelined PASV: %q, want 227", i+1, r.text())
		}
		checkPASVReply(t, e, r)
	}
	waitInUse(t, e, 1)

	other := dialLogin(t, e.addr)
	checkPASVReply(t, e, other.Cmd("PASV", 227))
	other.Cmd("QUIT", 221)
	other.ExpectEOF()
	c.Cmd("QUIT", 221)
	c.ExpectEOF()
	if up := upstreamCommands(m.received(t, 0), "PASV"); len(up) != 20 {
		t.Errorf("upstream received %d PASV, want 20", len(up))
	}
}

// "PASV" and "RETR" in one write: the RETR waits for the 227, the client
// connects as soon as it reads the 227, and the completion reply is still
// held until the last byte has reached the client.
func TestPipelinedPASVRETR(t *testing.T) {
	t.Run("completion held", func(t *testing.T) {
		checkFDs(t)
		file := randomBytes(t, 1<<20)
		gate := make(chan struct{})
		m := &miniFTP{files: map[string][]byte{"f": file}, closeGate: gate}
		fs := newFakeServer(t, m.serve)
		e := startProxy(t, fs.addr(), proxyOpts{})
		c := dialLogin(t, e.addr)
		c.SendRaw([]byte("PASV\r\nRETR f\r\n"))
		dc := c.DialData(checkPASVReply(t, e, c.Expect(227)))
		c.Expect(150)
		replies := replyLater(c)
		got := make([]byte, len(file))
		dc.SetReadDeadline(time.Now().Add(ioTimeout))
		if _, err := io.ReadFull(dc, got); err != nil {
			t.Fatalf("reading data: %v", err)
		}
		// The fake has sent its 226 but keeps the data connection open.
		expectNothingYet(t, replies, "before the data connection ended")
		close(gate)
		if rest, err := readAll(dc); err != nil || len(rest) != 0 {
			t.Fatalf("after the file: %d more bytes, %v; want EOF", len(rest), err)
		}
		dc.Close()
		if r := withTimeout(t, replies, "226"); r.err != nil || r.r.code != 226 {
			t.Fatalf("after the data: reply %q, %v; want 226", r.r.text(), r.err)
		}
		checkSame(t, "RETR", got, file)
		c.Cmd("QUIT", 221)
		c.ExpectEOF()
		e.logs.waitFor(t, `"message":"session closed"`, `"transfers":1,`, fmt.Sprintf(`"down":%d,`, len(file)))
		want := []string{"PASV", "RETR f", "QUIT"}
		if got := m.received(t, 0); !equalLines(got, want) {
			t.Errorf("upstream received %q, want %q", got, want)
		}
	})

	// The control connection is quiet for the whole transfer, which lasts
	// longer than IdleTimeout: the idle timer must not cut it.
	t.Run("transfer outlasts IdleTimeout", func(t *testing.T) {
		checkFDs(t)
		const chunks, pause = 20, 50 * time.Millisecond
		file := randomBytes(t, chunks*4096)
		fs := newFakeServer(t, func(f *fakeConn) {
			f.Send("220 ready")
			l := f.AnswerPASV("127,0,0,1")
			f.Expect("RETR slow")
			dc := l.Accept()
			f.Send("150 Opening data connection.")
			for i := range chunks {
				f.SendData(dc, file[i*4096:(i+1)*4096])
				time.Sleep(pause) // a slow server, not synchronisation
			}
			dc.Close()
			f.Send("226 Transfer complete.")
			f.Expect("NOOP")
			f.Send("200 NOOP ok.")
			f.ExpectEOF()
		})
		e := startProxy(t, fs.addr(), proxyOpts{config: func(c *proxy.Config) {
			c.IdleTimeout = 300 * time.Millisecond
		}})
		c := dialLogin(t, e.addr)
		start := time.Now()
		c.SendRaw([]byte("PASV\r\nRETR slow\r\n"))
		dc := c.DialData(checkPASVReply(t, e, c.Expect(227)))
		c.Expect(150)
		got, err := readAll(dc)
		if err != nil {
			t.Fatalf("reading data: %v", err)
		}
		dc.Close()
		c.Expect(226)
		if d := time.Since(start); d < 3*300*time.Millisecond {
			t.Errorf("the transfer took %v, not long enough to outlast the idle timeout", d)
		}
		checkSame(t, "RETR", got, file)
		c.Cmd("NOOP", 200)
		c.Cmd("QUIT", 221)
		c.ExpectEOF()
		if lines := logLines(e, "control connection idle"); len(lines) != 0 {
			t.Errorf("the idle timeout fired: %q", lines)
		}
	})
}

// Thousands of login attempts in one write: commands go upstream one at a
// time, so the ban (or the backlog bound) stops them after a few, and the
// upstream never sees more than MaxLoginFailures passwords.
func TestPipelinedLoginFlood(t *testing.T) {
	checkFDs(t)
	const maxFailures = 3
	rs := &replyServer{replies: map[string]string{
		"USER": "331 Password required.",
		"PASS": "530 Login incorrect.",
	}}
	fs := newFakeServer(t, rs.serve)
	e := startProxy(t, fs.addr(), proxyOpts{config: func(c *proxy.Config) {
		c.MaxLoginFailures = maxFailures
		c.LoginFailureWindow = time.Minute
		c.BanDuration = time.Minute
	}})
	c := dialLogin(t, e.addr)
	flood(t, c, []byte(strings.Repeat("USER x\r\nPASS wrong\r\n", 5000)))
	var codes []int
	var last reply
	for {
		r, err := c.readReply()
		if err != nil {
			if isTimeout(err) {
				t.Fatalf("after %d replies, no reply and no close: %v", len(codes), err)
			}
			break
		}
		codes = append(codes, r.code)
		last = r
	}
	if len(codes) == 0 || last.code != 421 {
		t.Fatalf("replies %v, want a final 421 then EOF", codes)
	}
	for i, code := range codes[:len(codes)-1] {
		if want := []int{331, 530}[i%2]; code != want {
			t.Fatalf("replies %v: reply %d is %d, want %d", codes, i+1, code, want)
		}
	}
	t.Logf("replies %v, last %q", codes, last.text())
	fs.close() // every line the proxy sent has been read
	if n := len(upstreamCommands(rs.received(t, 0), "PASS")); n > maxFailures {
		t.Errorf("upstream received %d PASS, want at most %d", n, maxFailures)
	}
}

// A 120 greeting ("service ready in nnn minutes", RFC 959 section 4.2) is
// relayed at once, and the 220 after it opens the session as usual; the
// replies that follow stay in step with their commands.
func TestGreeting120(t *testing.T) {
	checkFDs(t)
	const pwd = `257 "/home/alice" is the current directory.`
	got120 := make(chan struct{})
	fs := newFakeServer(t, func(f *fakeConn) {
		f.Send("120 Service ready in 1 minute.")
		select {
		case <-got120:
		case <-time.After(ioTimeout):
			f.fail("the client did not get the 120")
		}
		f.Send("220 ready")
		f.Expect("USER alice")
		f.Send("331 Password required.")
		f.Expect("PASS ")
		f.Send("230 Logged in.")
		f.Expect("PWD")
		f.Send(pwd)
		f.ExpectEOF()
	})
	e := startProxy(t, fs.addr(), proxyOpts{})
	c := dialProxy(t, e.addr)
	if r := c.Expect(120); r.text() != "120 Service ready in 1 minute." {
		t.Errorf("got %q", r.text())
	}
	close(got120)
	c.Expect(220)
	c.SendRaw([]byte("USER alice\r\nPASS secret\r\nPWD\r\n"))
	c.Expect(331)
	c.Expect(230)
	if r := c.Expect(257); r.text() != pwd {
		t.Errorf("PWD: got %q, want %q", r.text(), pwd)
	}
	e.logs.waitFor(t, `"message":"logged in"`, `"user":"alice"`)
	c.Cmd("QUIT", 221)
	c.ExpectEOF()
}

// pure-ftpd, when the client closes its data connection early, sends its
// transfer statistics with code 150 as the only further reply to the RETR.
// The client must get one final reply for the RETR (426, not a 150 it
// would wait behind forever), and the replies after it stay in step.
func TestSecondPreliminaryAfterEarlyDataClose(t *testing.T) {
	checkFDs(t)
	fs := newFakeServer(t, func(f *fakeConn) {
		f.Send("220 ready")
		l := f.AnswerPASV("127,0,0,1")
		f.Expect("RETR big")
		dc := l.Accept()
		f.Send("150 Accepted data connection")
		done := streamData(dc, bytes.Repeat([]byte("P"), 32<<10))
		if err := f.waitErr(done, "the stream"); err == nil {
			f.fail("the stream did not fail when the client closed")
		}
		dc.Close()
		f.Send("150 0.002 seconds (measured here), 12.3 Mbytes per second")
		f.Expect("NOOP")
		f.Send("200 NOOP ok.")
		f.AnswerPASV("127,0,0,1")
		f.ExpectEOF()
	})
	e := startProxy(t, fs.addr(), proxyOpts{})
	c := dialLogin(t, e.addr)
	dc := c.DialData(checkPASVReply(t, e, c.Cmd("PASV", 227)))
	c.Send("RETR big")
	c.Expect(150)
	dc.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := io.ReadFull(dc, make([]byte, 64<<10)); err != nil {
		t.Fatalf("reading data: %v", err)
	}
	dc.Close()
	c.SendRaw([]byte("NOOP\r\nPASV\r\n"))
	if r := c.Reply(); r.code != 426 {
		t.Fatalf("final reply to the RETR: %q, want 426", r.text())
	}
	if r := c.Expect(200); r.text() != "200 NOOP ok." {
		t.Errorf("NOOP: got %q, want the fake's reply", r.text())
	}
	checkPASVReply(t, e, c.Expect(227))
	c.Cmd("QUIT", 221)
	c.ExpectEOF()
	e.logs.waitFor(t, "second preliminary reply to a transfer taken as its completion")
}

// ABOR before the client ever opened its passive data connection: the
// client gets 426 and 226 at once, and the upstream, which waits in accept
// for the proxy's data connection, is made to give up by a connection the
// proxy opens and resets; the session goes on without waiting for the
// server's own accept timeout.
func TestABORBeforeDataConnection(t *testing.T) {
	checkFDs(t)
	sawRETR := make(chan struct{})
	upRead := make(chan error, 1)
	fs := newFakeServer(t, func(f *fakeConn) {
		f.Send("220 ready")
		l := f.AnswerPASV("127,0,0,1")
		f.Expect("RETR f")
		close(sawRETR)
		dc := l.Accept() // the fake's accept timeout is ioTimeout
		dc.SetReadDeadline(time.Now().Add(ioTimeout))
		_, err := io.Copy(io.Discard, dc)
		upRead <- err
		dc.Close()
		f.Send("426 Connection closed; transfer aborted.")
		f.Expect("NOOP")
		f.Send("200 NOOP ok.")
		f.ExpectEOF()
	})
	e := startProxy(t, fs.addr(), proxyOpts{})
	c := dialLogin(t, e.addr)
	checkPASVReply(t, e, c.Cmd("PASV", 227)) // never connected to
	c.Send("RETR f")
	withTimeout(t, sawRETR, "the RETR to reach the upstream")
	start := time.Now()
	c.Send("ABOR")
	c.Expect(426)
	c.Expect(226)
	if r := c.Cmd("NOOP", 200); r.text() != "200 NOOP ok." {
		t.Errorf("NOOP: got %q, want the fake's reply", r.text())
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("ABOR to NOOP's reply took %v; the upstream was left to time out", d)
	}
	if err := withTimeout(t, upRead, "the upstream's data connection"); err == nil || isTimeout(err) {
		t.Errorf("the upstream's data connection ended with %v, want a reset", err)
	}
	c.Cmd("QUIT", 221)
	c.ExpectEOF()
}

// A reply no command asked for must never be taken as the answer to the
// client's next command; only a 421 (the server is closing) is passed on.
func TestUnsolicitedReplies(t *testing.T) {
	t.Run("multi-line junk and a 227", func(t *testing.T) {
		checkFDs(t)
		fs := newFakeServer(t, func(f *fakeConn) {
			f.Send("220 ready")
			f.Expect("USER")
			f.Send("230 Logged in.")
			var b bytes.Buffer
			b.WriteString("200-junk\r\n")
			for i := range 1000 {
				fmt.Fprintf(&b, " junk line %d\r\n", i)
			}
			b.WriteString("200 end\r\n")
			b.WriteString("227 Entering Passive Mode (127,0,0,1,1,1)\r\n")
			f.SendRaw(b.Bytes())
			f.Expect("NOOP")
			f.Send("200 NOOP ok")
			f.ExpectEOF()
		})
		e := startProxy(t, fs.addr(), proxyOpts{})
		c := dialLogin(t, e.addr)
		c.Cmd("USER a", 230)
		e.logs.waitFor(t, "unsolicited reply from upstream dropped", `"code":227`)
		if r := c.Cmd("NOOP", 200); !equalLines(r.lines, []string{"200 NOOP ok"}) {
			t.Errorf("NOOP: got %q, want the fake's own reply", r.text())
		}
		c.Cmd("QUIT", 221)
		c.ExpectEOF()
		if n := len(logLines(e, "unsolicited reply from upstream dropped")); n != 2 {
			t.Errorf("%d unsolicited replies logged, want 2 (the 200 and the 227)", n)
		}
	})
	t.Run("bare LF after a final reply", func(t *testing.T) {
		checkFDs(t)
		fs := newFakeServer(t, func(f *fakeConn) {
			f.Send("220 ready")
			f.Expect("SYST")
			f.SendRaw([]byte("215 UNIX\n227 Entering Passive Mode (127,0,0,1,128,9)\r\n"))
			f.Expect("NOOP")
			f.Send("200 NOOP ok")
			f.ExpectEOF()
		})
		e := startProxy(t, fs.addr(), proxyOpts{})
		c := dialLogin(t, e.addr)
		if r := c.Cmd("SYST", 215); !equalLines(r.lines, []string{"215 UNIX"}) {
			t.Errorf("SYST: got %q", r.text())
		}
		e.logs.waitFor(t, "unsolicited reply from upstream dropped", `"code":227`)
		if r := c.Cmd("NOOP", 200); !equalLines(r.lines, []string{"200 NOOP ok"}) {
			t.Errorf("NOOP: got %q, want the fake's own reply", r.text())
		}
		c.Cmd("QUIT", 221)
		c.ExpectEOF()
	})
	t.Run("421 passed on", func(t *testing.T) {
		checkFDs(t)
		const bye = "421 Timeout (no activity): closing control connection."
		fs := newFakeServer(t, func(f *fakeConn) {
			f.Send("220 ready")
			f.Expect("NOOP")
			f.Send("200 NOOP ok")
			f.Send(bye)
		})
		e := startProxy(t, fs.addr(), proxyOpts{})
		c := dialLogin(t, e.addr)
		c.Cmd("NOOP", 200)
		if r := c.Expect(421); r.text() != bye {
			t.Errorf("got %q, want the upstream's %q", r.text(), bye)
		}
		c.ExpectEOF()
	})
}

// hugeReply writes a multi-line reply of n lines of width bytes each (the
// last one is last, whatever its length), in batches so it is never whole
// in memory, and returns its first line.
func hugeReply(f *fakeConn, code, n, width int, last string) string {
	line := func(i int) string {
		s := fmt.Sprintf(" line %06d ", i)
		return s + strings.Repeat("x", width-len(s))
	}
	first := fmt.Sprintf("%d-", code) + strings.Repeat("h", width-4)
	var b bytes.Buffer
	b.WriteString(first + "\r\n")
	for i := 1; i < n-1; i++ {
		b.WriteString(line(i) + "\r\n")
		if b.Len() >= 1<<20 {
			f.SendRaw(b.Bytes())
			b.Reset()
		}
	}
	b.WriteString(last + "\r\n")
	f.SendRaw(b.Bytes())
	return first
}

// The replies the proxy holds before it acts on them (the upstream's 227,
// a transfer's completion reply) are kept in bounded memory however long
// they are: the 227 is replaced by the proxy's own one-line 227, the 226
// reaches the client shortened but well formed.
func TestHugeHeldReplies(t *testing.T) {
	checkFDs(t)
	const lines, width = 50000, 1000
	const done = "226 Transfer complete."
	file := randomBytes(t, 256<<10)
	first226 := make(chan string, 1)
	fs := newFakeServer(t, func(f *fakeConn) {
		f.Send("220 ready")
		f.Expect("PASV")
		l := f.Passive()
		hugeReply(f, 227, lines, width, l.PASVReply("127,0,0,1"))
		f.Expect("RETR f")
		dc := l.Accept()
		f.Send("150 Opening data connection.")
		f.SendData(dc, file)
		dc.Close()
		first226 <- hugeReply(f, 226, lines, width, done)
		f.Expect("NOOP")
		f.Send("200 NOOP ok.")
		f.ExpectEOF()
	})
	e := startProxy(t, fs.addr(), proxyOpts{})
	c := dialLogin(t, e.addr)
	dc := c.DialData(checkPASVReply(t, e, c.Cmd("PASV", 227)))
	c.Send("RETR f")
	c.Expect(150)
	got, err := readAll(dc)
	if err != nil {
		t.Fatalf("reading data: %v", err)
	}
	dc.Close()
	r := c.Expect(226)
	checkSame(t, "RETR", got, file)
	first := withTimeout(t, first226, "the 226")
	switch n := len(r.lines); {
	case n > 40:
		t.Errorf("the 226 has %d lines, want at most 40", n)
	case n < 3 || r.lines[0] != first || r.lines[n-1] != done:
		t.Errorf("the 226 (%d lines) starts %q and ends %q, want the fake's first and last lines", n, clipText(r.lines[0]), r.lines[n-1])
	case !strings.Contains(strings.Join(r.lines, "\n"), "left out by the proxy"):
		t.Errorf("the shortened 226 does not say lines were left out:\n%s", clipText(r.text()))
	}
	c.Cmd("NOOP", 200)
	c.Cmd("QUIT", 221)
	c.ExpectEOF()
}

// A transfer that fails before its relay starts (the proxy cannot reach
// the active-mode client) must end the upstream's data connection, already
// open, with a reset: a clean close would have the upstream store an empty
// upload as complete.
func TestActiveDialFailureResetsUpstream(t *testing.T) {
	for _, verb := range []string{"STOR", "RETR"} {
		t.Run(verb, func(t *testing.T) {
			checkFDs(t)
			upRead := make(chan error, 1)
			fs := newFakeServer(t, func(f *fakeConn) {
				f.Send("220 ready")
				port := f.Expect("PORT ")
				f.Send("200 PORT command successful.")
				f.Expect(verb + " f")
				ap, err := rewrite.ParsePORT(strings.TrimPrefix(port, "PORT "))
				if err != nil {
					f.fail("PORT %q: %v", port, err)
				}
				// The proxy accepts, fails to reach the client and resets:
				// the connect itself may already see the reset.
				dc, err := net.DialTimeout("tcp", ap.String(), ioTimeout)
				if err == nil {
					f.track(dc)
					f.Send("150 Opening data connection.")
					// Nothing comes from the proxy either way: the read
					// ends with how the proxy ended the connection.
					dc.SetReadDeadline(time.Now().Add(ioTimeout))
					_, err = io.Copy(io.Discard, dc)
					dc.Close()
				}
				upRead <- err
				if err == nil {
					f.Send("226 Transfer complete.") // for STOR, an empty file stored
				} else {
					f.Send("426 Connection closed; transfer aborted.")
				}
				f.ExpectEOF()
			})
			e := startProxy(t, fs.addr(), proxyOpts{})
			c := dialLogin(t, e.addr)
			ln := listenActive(t, "tcp", "127.0.0.1:0")
			arg, _ := rewrite.FormatPORT(ln.Addr().(*net.TCPAddr).AddrPort())
			c.Cmd("PORT "+arg, 200)
			ln.Close() // the proxy's dial to the client will fail
			c.Send(verb + " f")
			r := c.Reply()
			if r.code == 150 {
				r = c.Reply()
			}
			if r.code/100 != 4 {
				t.Errorf("%s whose data connection failed: got %q, want 4xx", verb, r.text())
			}
			if err := withTimeout(t, upRead, "the upstream's data connection"); err == nil || isTimeout(err) {
				t.Errorf("the upstream's data connection ended with %v, want a reset", err)
			}
			c.Cmd("QUIT", 221)
			c.ExpectEOF()
		})
	}
}

// A reply line longer than a command line may be (MaxLineLength) but
// within MaxReplyLineLength, as a 257 naming a deep path is, reaches the
// client whole.
func TestLongPathReply(t *testing.T) {
	checkFDs(t)
	pwd := `257 "/` + strings.Repeat("d", 6000) + `" is the current directory.`
	rs := &replyServer{replies: map[string]string{"PWD": pwd}}
	fs := newFakeServer(t, rs.serve)
	e := startProxy(t, fs.addr(), proxyOpts{})
	c := dialLogin(t, e.addr)
	if r := c.Cmd("PWD", 257); !equalLines(r.lines, []string{pwd}) {
		t.Errorf("PWD: got %d bytes, want the fake's %d", len(r.text()), len(pwd))
	}
	c.Cmd("NOOP", 200)
	c.Cmd("QUIT", 221)
	c.ExpectEOF()
}

// What goes upstream for each command line: bytes a pathname may hold
// arrive as they were sent, bytes that could split the line at the server
// are refused, and transfer modes the relay cannot carry never reach the
// server.
func TestCommandBytesOnTheWire(t *testing.T) {
	checkFDs(t)
	tests := []struct {
		name string
		line string // sent by the client, without CRLF
		code int    // the reply the client gets
		up   string // what the upstream receives; "" if nothing
	}{
		{"IAC IAC is a 0xFF data byte, escaped again", "RETR a\xff\xffb", 550, "RETR a\xff\xffb"},
		{"TAB in a pathname", "RETR a\tb", 550, "RETR a\tb"},
		{"ESC in a pathname", "STOR x\x1by", 550, "STOR x\x1by"},
		{"bare CR would split the line", "RETR a\rb", 500, ""},
		{"CR NUL is a CR that is data", "RETR a\r\x00b", 550, "RETR a\r\x00b"},
		{"block mode", "MODE B", 504, ""},
		{"compressed mode", "MODE C", 504, ""},
		{"stream mode", "MODE S", 200, "MODE S"},
	}
	rs := &replyServer{replies: map[string]string{
		"RETR": "550 No such file.",
		"STOR": "550 Permission denied.",
		"MODE": "200 Mode set to S.",
		"FEAT": "211-Features:\r\n EPSV\r\n MODE Z\r\n UTF8\r\n211 End",
	}}
	fs := newFakeServer(t, rs.serve)
	e := startProxy(t, fs.addr(), proxyOpts{})
	c := dialLogin(t, e.addr)
	var want []string
	for _, tt := range tests {
		c.SendRaw([]byte(tt.line + "\r\n"))
		if r := c.Reply(); r.code != tt.code {
			t.Errorf("%s: %q got %q, want %d", tt.name, tt.line, r.text(), tt.code)
		}
		if tt.up != "" {
			want = append(want, tt.up)
		}
	}
	if r := c.Cmd("FEAT", 211); !equalLines(r.lines, []string{"211-Features:", " EPSV", " UTF8", "211 End"}) {
		t.Errorf("FEAT: got %q, want MODE Z hidden", r.lines)
	}
	c.Cmd("QUIT", 221)
	c.ExpectEOF()
	want = append(want, "FEAT", "QUIT")
	if got := rs.received(t, 0); !equalLines(got, want) {
		t.Errorf("upstream received %q, want %q", got, want)
	}
}

// No secret a command can carry reaches the log, even at debug level,
// where every command is logged.
func TestSecretsNotLogged(t *testing.T) {
	checkFDs(t)
	secrets := []string{"oldsecret1", "newsecret2", "secrettoken3", "hunter2x", "hunter2y", "hunter2z"}
	rs := &replyServer{replies: map[string]string{
		"USER": "331 Password required.",
		"PASS": "332 Need account for login.",
		"ACCT": "230 Logged in.",
	}}
	fs := newFakeServer(t, rs.serve)
	e := startProxy(t, fs.addr(), proxyOpts{})
	c := dialLogin(t, e.addr)
	c.Cmd("SITE PSWD oldsecret1 newsecret2", 200)
	c.Cmd("ADAT secrettoken3", 200)
	c.Cmd("PASS:hunter2x", 500) // unparsable: its error must not quote it
	c.Cmd("USER bob", 331)
	c.Cmd("PASS hunter2y", 332)
	c.Cmd("ACCT hunter2z", 230)
	c.Cmd("QUIT", 221)
	c.ExpectEOF()
	e.logs.waitFor(t, "session closed")
	logs := e.logs.String()
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the log contains the secret %q:\n%s", s, logs)
		}
	}
	for _, want := range []string{"SITE PSWD ****", "ADAT ****", "PASS ****", "ACCT ****", "malformed command"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %q (is it logging commands at all?):\n%s", want, logs)
		}
	}
}

// The login's phases: ACCT completes a login (332 to PASS), a 232 to USER
// logs in by itself, and REIN takes the session back to before the login.
func TestLoginPhases(t *testing.T) {
	const loginTimeout = 500 * time.Millisecond
	limit := func(c *proxy.Config) { c.LoginTimeout = loginTimeout }

	t.Run("ACCT, then REIN", func(t *testing.T) {
		checkFDs(t)
		rs := &replyServer{replies: map[string]string{
			"USER": "331 Password required.",
			"PASS": "332 Need account for login.",
			"ACCT": "230 Logged in.",
			"REIN": "220 Service ready for new user.",
		}}
		fs := newFakeServer(t, rs.serve)
		e := startProxy(t, fs.addr(), proxyOpts{config: limit})
		start := time.Now()
		c := dialLogin(t, e.addr)
		c.SendRaw([]byte("USER alice\r\nPASS pw\r\nACCT acct\r\n"))
		c.Expect(331)
		c.Expect(332)
		c.Expect(230)
		e.logs.waitFor(t, `"message":"logged in"`, `"user":"alice"`)
		// The login timer would have fired by now had the login not stopped it.
		<-time.After(time.Until(start.Add(2 * loginTimeout)))
		c.Cmd("NOOP", 200)

		c.Cmd("EPSV ALL", 200)
		c.Cmd("PASV", 503)
		c.Cmd("REIN", 220)
		// REIN forgets EPSV ALL: PASV is allowed again.
		checkPASVReply(t, e, c.Cmd("PASV", 227))
		// And the login timer runs again.
		rein := time.Now()
		if r := c.Expect(421); !strings.Contains(r.text(), "Login timeout") {
			t.Errorf("after REIN without a login: %q, want the login timeout", r.text())
		}
		if d := time.Since(rein); d > loginTimeout+time.Second {
			t.Errorf("login timeout after REIN came %v late", d)
		}
		c.ExpectEOF()
		e.logs.waitFor(t, "session closed")
		pasv := logLines(e, `"cmd":"PASV"`, `"message":"command"`)
		switch {
		case len(pasv) != 2:
			t.Errorf("%d PASV commands logged, want 2:\n%s", len(pasv), e.logs.String())
		case !strings.Contains(pasv[0], `"user":"alice"`):
			t.Errorf("PASV before REIN logged without the user: %s", pasv[0])
		case strings.Contains(pasv[1], `"user":`):
			t.Errorf("PASV after REIN logged with a user: %s", pasv[1])
		}
		for _, l := range logLines(e, "no login in time") {
			if strings.Contains(l, `"user":`) {
				t.Errorf("login timeout after REIN logged with a user: %s", l)
			}
		}
		if got := upstreamCommands(rs.received(t, 0), "EPSV", "PASV"); !equalLines(got, []string{"PASV"}) {
			t.Errorf("upstream received %q, want only the PASV after REIN", got)
		}
	})
	t.Run("232 to USER", func(t *testing.T) {
		checkFDs(t)
		rs := &replyServer{replies: map[string]string{
			"USER": "232 User logged in, authorized by security data exchange.",
		}}
		fs := newFakeServer(t, rs.serve)
		e := startProxy(t, fs.addr(), proxyOpts{config: limit})
		c := dialLogin(t, e.addr)
		c.Cmd("USER bob", 232)
		e.logs.waitFor(t, `"message":"logged in"`, `"user":"bob"`)
		c.Cmd("QUIT", 221)
		c.ExpectEOF()
	})
}

// A transfer cut short by the session's end is still logged, with what
// ended it, and counted in the session's summary.
func TestTransferCutBySessionEnd(t *testing.T) {
	tests := []struct {
		name   string
		reason string // the session's end reason, in the transfer's ended_by
		end    func(c *ftpClient, e *proxyEnv, die chan<- struct{})
	}{
		{"client closes its control connection", "client closed", func(c *ftpClient, e *proxyEnv, die chan<- struct{}) {
			c.Close()
		}},
		{"upstream closes its control connection", "upstream gone", func(c *ftpClient, e *proxyEnv, die chan<- struct{}) {
			close(die)
			c.Expect(426) // the transfer
			c.Expect(421) // the session
			c.ExpectEOF()
		}},
		{"proxy closes", "proxy shutting down", func(c *ftpClient, e *proxyEnv, die chan<- struct{}) {
			e.srv.Close()
			c.Expect(426)
			c.Expect(421)
			c.ExpectEOF()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkFDs(t)
			die := make(chan struct{})
			fs := newFakeServer(t, func(f *fakeConn) {
				dc := f.serveRETR("endless")
				done := streamData(dc, bytes.Repeat([]byte("E"), 32<<10))
				ended := make(chan error, 1)
				go func() {
					_, err := f.ReadLine()
					ended <- err
				}()
				select {
				case <-die:
					f.c.Close()
				case err := <-ended:
					if err == nil || isTimeout(err) {
						f.fail("control connection: %v, want it closed by the proxy", err)
					}
				}
				f.waitErr(done, "the stream")
				dc.Close()
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
			tt.end(c, e, die)
			e.logs.waitFor(t, `"message":"transfer"`, `"ended_by":"`+tt.reason+`"`, `"cmd":"RETR"`)
			e.logs.waitFor(t, `"message":"session closed"`, `"reason":"`+tt.reason+`"`, `"transfers":1,`)
		})
	}
}

// STAT without an argument during a transfer is answered by the proxy at
// once (RFC 959 section 4.1.3); STAT with one is an ordinary command and
// waits for the transfer's completion reply.
func TestSTATDuringTransfer(t *testing.T) {
	checkFDs(t)
	file := randomBytes(t, 256<<10)
	half := len(file) / 2
	gate := make(chan struct{})
	status := []string{"213-Status of f:", "-rw-r--r-- 1 ftp ftp 262144 f", "213 End of status."}
	fs := newFakeServer(t, func(f *fakeConn) {
		f.Send("220 ready")
		l := f.AnswerPASV("127,0,0,1")
		f.Expect("RETR f")
		dc := l.Accept()
		f.Send("150 Opening data connection.")
		f.SendData(dc, file[:half])
		select {
		case <-gate:
		case <-time.After(ioTimeout):
			f.fail("the gate never opened")
		}
		// No command may reach the server before its 226.
		f.c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if b, err := f.br.Peek(1); err == nil {
			f.fail("a command (%q...) reached the server during the transfer", b)
		}
		f.SendData(dc, file[half:])
		dc.Close()
		f.Send("226 Transfer complete.")
		f.Expect("STAT f")
		f.Send(strings.Join(status, "\r\n"))
		f.Expect("NOOP")
		f.Send("200 NOOP ok.")
		f.ExpectEOF()
	})
	e := startProxy(t, fs.addr(), proxyOpts{})
	c := dialLogin(t, e.addr)
	dc := c.DialData(checkPASVReply(t, e, c.Cmd("PASV", 227)))
	c.Send("RETR f")
	c.Expect(150)
	got := make([]byte, half)
	dc.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := io.ReadFull(dc, got); err != nil {
		t.Fatalf("reading data: %v", err)
	}
	if r := c.Cmd("STAT", 213); !strings.Contains(r.text(), "RETR") {
		t.Errorf("STAT during the transfer: %q, want the transfer's status", r.text())
	}
	c.SendRaw([]byte("STAT f\r\nNOOP\r\n"))
	// Once the NOOP is logged, the proxy is done with the STAT f before it.
	e.logs.waitFor(t, `"cmd":"NOOP"`, `"message":"command"`)
	close(gate)
	rest, err := readAll(dc)
	if err != nil {
		t.Fatalf("reading data: %v", err)
	}
	dc.Close()
	checkSame(t, "RETR", append(got, rest...), file)
	c.Expect(226)
	if r := c.Expect(213); !equalLines(r.lines, status) {
		t.Errorf("STAT f: got %q, want the upstream's %q", r.lines, status)
	}
	c.Expect(200)
	c.Cmd("QUIT", 221)
	c.ExpectEOF()
}

// A whole session in one write: every reply comes in the order of its
// command, and both transfers are byte-exact.
func TestPipelinedSession(t *testing.T) {
	checkFDs(t)
	down, up := randomBytes(t, 512<<10), randomBytes(t, 256<<10)
	m := &miniFTP{files: map[string][]byte{"down.bin": down}, stored: make(chan storedFile, 1)}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{})
	c := dialLogin(t, e.addr)
	cmds := []string{"USER anonymous", "PASS guest", "TYPE I", "PASV", "RETR down.bin", "EPSV", "STOR up.bin", "NOOP", "QUIT"}
	c.SendRaw([]byte(strings.Join(cmds, "\r\n") + "\r\n"))
	c.Expect(331)
	c.Expect(230)
	c.Expect(200)

	dc := c.DialData(checkPASVReply(t, e, c.Expect(227)))
	c.Expect(150)
	got, err := readAll(dc)
	if err != nil {
		t.Fatalf("RETR: reading data: %v", err)
	}
	dc.Close()
	c.Expect(226)
	checkSame(t, "RETR", got, down)

	port := checkEPSVReply(t, e, c.Expect(229))
	uc := c.DialData(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port))
	c.Expect(150)
	upload(t, uc, up)
	c.Expect(226)
	sf := withTimeout(t, m.stored, "the stored file")
	checkSame(t, "STOR", sf.data, up)

	c.Expect(200)
	c.Expect(221)
	c.ExpectEOF()
	if got := m.received(t, 0); !equalLines(got, cmds) {
		t.Errorf("upstream received %q, want %q", got, cmds)
	}
}

// A client that sends more than the backlog bound of commands ahead of
// their replies is closed with a 421 that says why; the upstream only ever
// sees the command it is working on.
func TestCommandBacklogFlood(t *testing.T) {
	checkFDs(t)
	received := make(chan []string, 1)
	fs := newFakeServer(t, func(f *fakeConn) {
		defer func() { received <- f.received() }()
		f.Send("220 ready")
		f.Expect("NOOP") // a slow server: never answered
		f.ExpectEOF()
	})
	e := startProxy(t, fs.addr(), proxyOpts{})
	c := dialLogin(t, e.addr)
	flood(t, c, []byte(strings.Repeat("NOOP\r\n", 12000))) // 72,000 bytes
	if r := c.Expect(421); !strings.Contains(r.text(), "ahead of their replies") {
		t.Errorf("got %q, want the backlog named", r.text())
	}
	c.ExpectEOF()
	e.logs.waitFor(t, "client sent too many commands ahead of their replies")
	if got := withTimeout(t, received, "the upstream's commands"); !equalLines(got, []string{"NOOP"}) {
		t.Errorf("upstream received %d commands, want one NOOP", len(got))
	}
}
