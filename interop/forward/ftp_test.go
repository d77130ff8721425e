//go:build interop

package forward

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Bounds of the raw client's and the traps' network operations.
const (
	dialLimit  = 5 * time.Second
	replyLimit = 10 * time.Second
	writeLimit = 5 * time.Second
)

// ctrl is a minimal FTP control connection for the cases the client
// programs cannot make: a raw login and the refusals. Its socket lives in
// the namespace of the goroutine that dialled; reads and writes may happen
// anywhere. Every read and write is under a deadline.
type ctrl struct {
	c          net.Conn
	r          *bufio.Reader
	transcript strings.Builder
}

// dialCtrl connects from source to addr and reads the greeting, which must
// be a 220.
func dialCtrl(addr, source string) (*ctrl, error) {
	d := net.Dialer{Timeout: dialLimit, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	f := &ctrl{c: c, r: bufio.NewReader(c)}
	code, _, err := f.reply()
	if err != nil || code != 220 {
		c.Close()
		return nil, fmt.Errorf("greeting from %s: %d %v\n%s", addr, code, err, f.transcript.String())
	}
	return f, nil
}

// reply reads one reply, a multi-line one whole (RFC 959 section 4.2),
// within replyLimit. text holds its lines joined with "\n".
func (f *ctrl) reply() (code int, text string, err error) {
	f.c.SetReadDeadline(time.Now().Add(replyLimit))
	var lines []string
	first := ""
	for {
		line, err := f.r.ReadString('\n')
		if err != nil {
			return 0, strings.Join(lines, "\n"), err
		}
		line = strings.TrimRight(line, "\r\n")
		fmt.Fprintf(&f.transcript, "<- %s\n", line)
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

// cmd sends one command line and reads its reply.
func (f *ctrl) cmd(line string) (int, string, error) {
	fmt.Fprintf(&f.transcript, "-> %s\n", line)
	f.c.SetWriteDeadline(time.Now().Add(writeLimit))
	if _, err := io.WriteString(f.c, line+"\r\n"); err != nil {
		return 0, "", err
	}
	return f.reply()
}

// closed reports whether the peer has closed the connection: a read that
// ends in EOF (or a reset) within limit, with nothing before it.
func (f *ctrl) closed(limit time.Duration) bool {
	f.c.SetReadDeadline(time.Now().Add(limit))
	var b [1]byte
	n, err := f.r.Read(b[:])
	if n > 0 {
		f.r.UnreadByte()
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return err != nil
}

func (f *ctrl) close() { f.c.Close() }

// trap is a listener on a destination the proxy must never dial. It
// counts every connection it accepts and, so that a proxy that did dial
// would get far enough to show it in its log, plays a server that accepts
// any login.
type trap struct {
	name string
	l    net.Listener

	mu    sync.Mutex
	peers []string // remote addresses, in order of arrival
}

// listenTrap opens a trap on addr in the namespace of the calling
// goroutine; its accept loop runs until the listener is closed.
func listenTrap(name, addr string) (*trap, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	t := &trap{name: name, l: l}
	go t.serve()
	return t, nil
}

func (t *trap) serve() {
	for {
		c, err := t.l.Accept()
		if err != nil {
			return
		}
		t.mu.Lock()
		t.peers = append(t.peers, c.RemoteAddr().String())
		t.mu.Unlock()
		go t.session(c)
	}
}

// session answers a connection like a permissive server, for at most 30 s.
func (t *trap) session(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, "220 trap "+t.name+"\r\n")
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		verb, _, _ := strings.Cut(strings.ToUpper(strings.TrimSpace(sc.Text())), " ")
		reply := "502 Not implemented by the trap."
		switch verb {
		case "USER":
			reply = "331 Password please."
		case "PASS":
			reply = "230 Trap logged in."
		case "QUIT":
			io.WriteString(c, "221 Bye.\r\n")
			return
		}
		io.WriteString(c, reply+"\r\n")
	}
}

// count returns how many connections the trap has accepted.
func (t *trap) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.peers)
}

// from returns the remote addresses of the connections after the first n.
func (t *trap) from(n int) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.peers[min(n, len(t.peers)):]...)
}

func (t *trap) close() { t.l.Close() }
