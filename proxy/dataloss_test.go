package proxy_test

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// A client may read a download to its end and wait for the 226 before it
// closes its data connection (RFC 959 lets it). Once the upstream has
// reported success and the last byte is passed on, the proxy ends the
// relay at once rather than after DataLinger.
func TestCompletionWhileClientKeepsDataOpen(t *testing.T) {
	checkFDs(t)
	file := randomBytes(t, 64<<10)
	m := &miniFTP{files: map[string][]byte{"f": file}}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{}) // DataLinger 2s
	c := dialLogin(t, e.addr)
	dc := c.DialData(c.PASV())
	c.Send("RETR f")
	c.Expect(150)
	got, err := readAll(dc) // EOF, but dc stays open until the 226
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.Expect(226)
	if d := time.Since(start); d > time.Second {
		t.Errorf("226 came %v after the last byte; the relay waited for the client's close", d)
	}
	dc.Close()
	checkSame(t, "RETR", got, file)
	c.Cmd("QUIT", 221)
}

// deadDataServer announces a passive port nobody listens on, as a server
// behind a firewall that drops its passive range looks to the proxy. On
// RETR it waits for a data connection that cannot come, then gives up
// late, as vsftpd does after its accept timeout.
func deadDataServer(late <-chan struct{}, sawRETR chan<- bool) func(*fakeConn) {
	return func(f *fakeConn) {
		f.Send("220 ready")
		for {
			line, err := f.ReadLine()
			if err != nil {
				return
			}
			verb, _, _ := strings.Cut(line, " ")
			switch strings.ToUpper(verb) {
			case "USER":
				f.Send("230 Logged in.")
			case "PASV":
				l := f.Passive()
				reply := l.PASVReply("127,0,0,1")
				l.ln.Close() // the port is announced, nobody is there
				f.Send(reply)
			case "RETR":
				sawRETR <- true
				<-late
				f.Send("425 Failed to establish connection.")
			case "NOOP":
				f.Send("200 NOOP ok.")
			case "QUIT":
				f.Send("221 Goodbye.")
				return
			}
		}
	}
}

// When the proxy cannot open its data connection to the upstream, the
// client hears so at once, whether the failure came before its RETR (the
// RETR is answered by the proxy and never forwarded) or after it (the
// proxy answers, and drops the upstream's late reply).
func TestDataChannelLost(t *testing.T) {
	t.Run("QUIT while the upstream still waits", func(t *testing.T) {
		checkFDs(t)
		late := make(chan struct{})
		defer close(late)
		sawRETR := make(chan bool, 1)
		fs := newFakeServer(t, deadDataServer(late, sawRETR))
		e := startProxy(t, fs.addr(), proxyOpts{})
		c := dialLogin(t, e.addr)
		c.Cmd("USER a", 230)
		pasv := c.PASV()
		c.Send("RETR f")
		<-sawRETR
		// The proxy accepts, fails to reach the upstream and resets the
		// connection: the dial itself may see the reset.
		if dc, err := net.DialTimeout("tcp", pasv.String(), ioTimeout); err == nil {
			defer dc.Close()
		}
		c.Expect(425)
		// The upstream is still in its RETR: the proxy says goodbye itself.
		c.Cmd("QUIT", 221)
		c.ExpectEOF()
	})
	for _, retrFirst := range []bool{false, true} {
		t.Run(map[bool]string{false: "before RETR", true: "after RETR"}[retrFirst], func(t *testing.T) {
			checkFDs(t)
			late := make(chan struct{})
			var lateOnce sync.Once
			sendLate := func() { lateOnce.Do(func() { close(late) }) }
			t.Cleanup(sendLate) // before the fake's cleanup waits for its handler
			sawRETR := make(chan bool, 1)
			fs := newFakeServer(t, deadDataServer(late, sawRETR))
			e := startProxy(t, fs.addr(), proxyOpts{})
			c := dialLogin(t, e.addr)
			c.Cmd("USER a", 230)
			pasv := c.PASV()
			if retrFirst {
				c.Send("RETR f")
				<-sawRETR
			}
			// The proxy accepts, fails to reach the upstream and resets the
			// connection: the dial itself may see the reset.
			if dc, err := net.DialTimeout("tcp", pasv.String(), ioTimeout); err == nil {
				defer dc.Close()
			}
			e.logs.waitFor(t, `"message":"transfer"`, "dial data")
			if !retrFirst {
				c.Send("RETR f")
			}
			start := time.Now()
			if r := c.Expect(425); time.Since(start) > time.Second || !strings.Contains(r.text(), "PASV or PORT again") {
				t.Errorf("got %q after %v", r.text(), time.Since(start))
			}
			sendLate() // the upstream's own 425, if it has a RETR to answer
			c.Cmd("NOOP", 200)
			select {
			case <-sawRETR:
				t.Error("the RETR was forwarded although its data channel was already gone")
			default:
			}
			c.Cmd("QUIT", 221)
		})
	}
}

// A client that resets its data connection mid-transfer must never be
// told 226: the upstream sees a reset, not the end of an upload, and a
// success reply the upstream sends anyway is replaced.
func TestClientResetNeverGets226(t *testing.T) {
	t.Run("STOR", func(t *testing.T) {
		checkFDs(t)
		clean := make(chan bool, 1) // did the upload end in a clean EOF?
		fs := newFakeServer(t, func(f *fakeConn) {
			f.Send("220 ready")
			l := f.AnswerPASV("127,0,0,1")
			f.Expect("STOR")
			dc := l.Accept()
			f.Send("150 Ok to send data.")
			dc.SetReadDeadline(time.Now().Add(ioTimeout))
			_, err := io.Copy(io.Discard, dc)
			clean <- err == nil
			if err == nil {
				f.Send("226 Transfer complete.") // what a server says to an EOF
			} else {
				f.Send("426 Failure reading network stream.")
			}
			f.ExpectEOF()
		})
		e := startProxy(t, fs.addr(), proxyOpts{})
		c := dialLogin(t, e.addr)
		dc := c.DialData(c.PASV())
		c.Send("STOR f")
		c.Expect(150)
		dc.Write(make([]byte, 64<<10))
		dc.SetLinger(0)
		dc.Close() // reset mid-upload
		if <-clean {
			t.Error("the upstream saw a clean end of the upload")
		}
		if r := c.Reply(); r.code == 226 {
			t.Errorf("client got %q for an upload it reset", r.text())
		}
		c.Cmd("QUIT", 221)
	})
	t.Run("RETR, reset before the upstream's 226", func(t *testing.T) {
		checkFDs(t)
		file := randomBytes(t, 64<<10)
		gate := make(chan struct{})
		fs := newFakeServer(t, func(f *fakeConn) {
			f.Send("220 ready")
			l := f.AnswerPASV("127,0,0,1")
			f.Expect("RETR")
			dc := l.Accept()
			f.Send("150 Opening data connection.")
			dc.Write(file)
			<-gate // the server is slow to say so, but it sent everything
			dc.Close()
			f.Send("226 Transfer complete.")
			f.ExpectEOF()
		})
		e := startProxy(t, fs.addr(), proxyOpts{})
		c := dialLogin(t, e.addr)
		dc := c.DialData(c.PASV())
		c.Send("RETR f")
		c.Expect(150)
		dc.SetReadDeadline(time.Now().Add(ioTimeout))
		io.ReadFull(dc, make([]byte, len(file)/2))
		dc.SetLinger(0)
		dc.Close()
		e.logs.waitFor(t, `"message":"transfer"`, `"level":"warn"`)
		close(gate)
		if r := c.Expect(426); !strings.Contains(r.text(), "aborted") {
			t.Errorf("got %q", r.text())
		}
		c.Cmd("QUIT", 221)
	})
	t.Run("RETR", func(t *testing.T) {
		checkFDs(t)
		file := randomBytes(t, 64<<10)
		gate := make(chan struct{})
		m := &miniFTP{files: map[string][]byte{"f": file}, closeGate: gate}
		fs := newFakeServer(t, m.serve)
		e := startProxy(t, fs.addr(), proxyOpts{})
		c := dialLogin(t, e.addr)
		dc := c.DialData(c.PASV())
		c.Send("RETR f")
		c.Expect(150)
		// The upstream has sent the file and its 226 but not yet closed:
		// the transfer is not over when the client resets.
		dc.SetReadDeadline(time.Now().Add(ioTimeout))
		io.ReadFull(dc, make([]byte, len(file)))
		dc.SetLinger(0)
		dc.Close()
		if r := c.Expect(426); !strings.Contains(r.text(), "aborted") {
			t.Errorf("got %q", r.text())
		}
		e.logs.waitFor(t, "success reply replaced")
		close(gate)
		c.Cmd("QUIT", 221)
	})
}
