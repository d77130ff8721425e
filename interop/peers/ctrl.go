package peers

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Bounds of Ctrl's connections and writes. Replies have a bound of the
// caller's (DialCtrl): the suites wait for different things.
const (
	ctrlDialLimit  = 5 * time.Second
	ctrlWriteLimit = 5 * time.Second
)

// Ctrl is a raw FTP control connection, for what the client programs
// cannot do: hold a passive port while something else connects to it,
// read a server's raw 227, send lines no client sends, reset a data
// connection. Its socket lives in the network namespace of the goroutine
// that dialled (Topology.In); reads and writes may happen anywhere, each
// under a deadline.
type Ctrl struct {
	// Conn is the control connection, for what the methods do not do
	// (several commands in one write, for instance).
	Conn net.Conn
	// Transcript holds every line sent ("-> ") and received ("<- "), for
	// a failure's message.
	Transcript strings.Builder

	r          *bufio.Reader
	replyLimit time.Duration
}

// DialFrom connects to addr from source, an IP address ("" for any),
// within 5 s, in the namespace of the calling goroutine.
func DialFrom(source, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: ctrlDialLimit}
	if source != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(source)}
	}
	return d.Dial("tcp", addr)
}

// DialCtrl connects from source ("" for any) to addr and reads the
// greeting, which must be a 220. Reply waits up to replyLimit for each
// reply, the greeting's included.
func DialCtrl(addr, source string, replyLimit time.Duration) (*Ctrl, error) {
	conn, err := DialFrom(source, addr)
	if err != nil {
		return nil, err
	}
	c := &Ctrl{Conn: conn, r: bufio.NewReader(conn), replyLimit: replyLimit}
	if code, text, err := c.Reply(); err != nil || code != 220 {
		conn.Close()
		return nil, fmt.Errorf("greeting from %s: %d %q %v", addr, code, text, err)
	}
	return c, nil
}

// DialLogin is DialCtrl that then logs in as the test user (User,
// Password) and sets binary mode (TYPE I).
func DialLogin(addr, source string, replyLimit time.Duration) (*Ctrl, error) {
	c, err := DialCtrl(addr, source, replyLimit)
	if err != nil {
		return nil, err
	}
	for _, step := range []struct {
		what, line string
		want       int
	}{{"USER", "USER " + User, 331}, {"PASS", "PASS " + Password, 230}, {"TYPE I", "TYPE I", 200}} {
		if code, text, err := c.Cmd(step.line); err != nil || code != step.want {
			c.Close()
			return nil, fmt.Errorf("%s: %d %q %v", step.what, code, text, err)
		}
	}
	return c, nil
}

// Reply reads one reply within the connection's reply limit.
func (c *Ctrl) Reply() (int, string, error) { return c.ReplyWithin(c.replyLimit) }

// ReplyWithin reads one reply, a multi-line one whole (RFC 959 section
// 4.2), within limit. text holds its lines joined with "\n"; after a read
// error, with what arrived of the last line.
func (c *Ctrl) ReplyWithin(limit time.Duration) (code int, text string, err error) {
	c.Conn.SetReadDeadline(time.Now().Add(limit))
	var lines []string
	first := ""
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return 0, strings.Join(append(lines, line), "\n"), err
		}
		line = strings.TrimRight(line, "\r\n")
		fmt.Fprintf(&c.Transcript, "<- %s\n", line)
		lines = append(lines, line)
		if first == "" {
			if len(line) < 4 {
				return 0, line, fmt.Errorf("short reply line %q", line)
			}
			first = line[:3]
			if line[3] != '-' {
				break
			}
			continue
		}
		if strings.HasPrefix(line, first+" ") {
			break
		}
	}
	code, err = strconv.Atoi(first)
	return code, strings.Join(lines, "\n"), err
}

// Send sends one command line without reading a reply.
func (c *Ctrl) Send(line string) error {
	fmt.Fprintf(&c.Transcript, "-> %s\n", line)
	c.Conn.SetWriteDeadline(time.Now().Add(ctrlWriteLimit))
	_, err := io.WriteString(c.Conn, line+"\r\n")
	return err
}

// Cmd sends one command line and reads its reply.
func (c *Ctrl) Cmd(line string) (int, string, error) {
	if err := c.Send(line); err != nil {
		return 0, "", err
	}
	return c.Reply()
}

// Closed reports whether the peer has closed the connection: a read that
// ends in EOF (or a reset) within limit, with nothing before it. A byte
// that arrives instead stays for the next Reply.
func (c *Ctrl) Closed(limit time.Duration) bool {
	c.Conn.SetReadDeadline(time.Now().Add(limit))
	var b [1]byte
	n, err := c.r.Read(b[:])
	if n > 0 {
		c.r.UnreadByte()
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err != nil
}

// PASV sends PASV and returns the address of the 227.
func (c *Ctrl) PASV() (netip.AddrPort, error) {
	code, text, err := c.Cmd("PASV")
	if err != nil || code != 227 {
		return netip.AddrPort{}, fmt.Errorf("PASV: %d %q %v", code, text, err)
	}
	return ParsePASV(text)
}

// Close closes the control connection.
func (c *Ctrl) Close() error { return c.Conn.Close() }

var pasvRe = regexp.MustCompile(`\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)`)

// ParsePASV returns the address in a 227 reply: h1,h2,h3,h4,p1,p2 in
// parentheses.
func ParsePASV(text string) (netip.AddrPort, error) {
	m := pasvRe.FindStringSubmatch(text)
	if m == nil {
		return netip.AddrPort{}, fmt.Errorf("no address in %q", text)
	}
	var b [6]byte
	for i := range b {
		v, err := strconv.Atoi(m[i+1])
		if err != nil || v > 255 {
			return netip.AddrPort{}, fmt.Errorf("bad number in %q", text)
		}
		b[i] = byte(v)
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[:4])), uint16(b[4])<<8|uint16(b[5])), nil
}
