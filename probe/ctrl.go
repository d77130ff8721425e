package probe

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/ftpproxy/ftpproxy/rewrite"
)

// Bounds on what the probe reads from a server.
const (
	maxLineLength     = 4096 // one reply line
	maxReplyLines     = 10000
	transcriptLines   = 40      // lines of one reply kept in the transcript
	maxDataBytes      = 1 << 20 // read from a LIST's data connection
	replyChunkLines   = 64
	nonFTPQuoteLength = 64
)

// reply is a whole FTP reply.
type reply struct {
	code  int
	lines []string // at most transcriptLines of them, password masked
}

// text is the reply's first line, for findings.
func (r reply) text() string {
	if len(r.lines) == 0 {
		return fmt.Sprintf("%d", r.code)
	}
	return r.lines[0]
}

// quoted is the first line in quotes, for findings.
func (r reply) quoted() string { return fmt.Sprintf("%q", r.text()) }

// ctrl is a control connection: commands out, replies in, every line in
// the transcript.
type ctrl struct {
	p    *prober
	conn net.Conn
	name string
	br   *bufio.Reader
	rr   *rewrite.ReplyReader
	stop func() bool // detaches the context watch

	// broken is set once the conversation is out of step (a timeout or an
	// error in the middle of a reply): nothing more is sent.
	broken bool
}

func (p *prober) newCtrl(conn net.Conn, name string) *ctrl {
	c := &ctrl{p: p, conn: conn, name: name}
	c.br = bufio.NewReaderSize(conn, maxLineLength)
	c.rr = rewrite.NewReplyReader(rewrite.NewLineReader(c.br, maxLineLength), replyChunkLines, maxReplyLines)
	// The probe's end (its deadline or an interrupt) unblocks any read or
	// write at once.
	c.stop = context.AfterFunc(p.ctx, func() { conn.SetDeadline(aLongTimeAgo) })
	return c
}

func (c *ctrl) close() {
	c.stop()
	c.conn.Close()
}

// send writes one command line; PASS is masked in the transcript.
func (c *ctrl) send(line string) error {
	if v, _, _ := strings.Cut(line, " "); strings.EqualFold(v, "PASS") {
		c.p.sent(c.name, "PASS ****")
	} else {
		c.p.sent(c.name, line)
	}
	c.conn.SetWriteDeadline(c.p.stepDeadline())
	if _, err := c.conn.Write([]byte(line + "\r\n")); err != nil {
		c.broken = true
		c.p.note(c.name, "write failed: "+describeErr(err))
		return err
	}
	return nil
}

// read reads one whole reply within a step.
func (c *ctrl) read() (reply, error) {
	c.conn.SetReadDeadline(c.p.stepDeadline())
	var r reply
	seen := 0
	for {
		ch, err := c.rr.ReadReply()
		if err != nil {
			c.broken = true
			if seen > transcriptLines {
				c.p.note(c.name, fmt.Sprintf("(%d more lines)", seen-transcriptLines))
			}
			c.p.note(c.name, readFailure(err, c.p))
			return r, err
		}
		r.code = ch.Code
		for _, l := range ch.Lines {
			seen++
			if seen <= transcriptLines {
				l = c.p.scrub(l)
				r.lines = append(r.lines, l)
				c.p.recv(c.name, l)
			}
		}
		if !ch.More {
			if seen > transcriptLines {
				c.p.note(c.name, fmt.Sprintf("(%d more lines)", seen-transcriptLines))
			}
			return r, nil
		}
	}
}

// cmd sends line and reads its reply.
func (c *ctrl) cmd(line string) (reply, error) {
	if err := c.send(line); err != nil {
		return reply{}, err
	}
	return c.read()
}

// quit ends the session politely if it is still in step.
func (c *ctrl) quit() {
	if !c.broken {
		c.cmd("QUIT")
	}
}

// readFailure says in words why a read ended.
func readFailure(err error, p *prober) string {
	if isTimeout(err) {
		return fmt.Sprintf("no reply within %s", p.cfg.Timeout)
	}
	return "read failed: " + describeErr(err)
}

// outcome is what became of a connection attempt.
type outcome int

const (
	untried     outcome = iota // the zero value: no attempt was made
	open                       // connected
	refused                    // a reset: the host is there, nothing listens
	timedOut                   // no answer: something drops the packets
	unreachable                // an ICMP error: no route, or a firewall that rejects
	failed                     // anything else
)

func (o outcome) String() string {
	switch o {
	case open:
		return "open"
	case refused:
		return "refused"
	case timedOut:
		return "timed out"
	case unreachable:
		return "unreachable"
	case untried:
		return "not tried"
	}
	return "failed"
}

// classify turns a dial error into an outcome.
func classify(err error) outcome {
	switch {
	case err == nil:
		return open
	case errors.Is(err, errConnRefused):
		return refused
	case errors.Is(err, errHostUnreach), errors.Is(err, errNetUnreach):
		return unreachable
	case isTimeout(err):
		return timedOut
	}
	return failed
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// describeErr is err's text without the Go-specific "dial tcp" prefixes
// that say nothing to a user.
func describeErr(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		err = oe.Err
	}
	var se *os.SyscallError
	if errors.As(err, &se) && se.Err != nil {
		err = se.Err
	}
	switch {
	case isTimeout(err):
		return "timed out"
	case errors.Is(err, io.EOF):
		return "the connection was closed"
	}
	return err.Error()
}

// addrPortOf returns a net.Addr's address and port, unmapped.
func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
