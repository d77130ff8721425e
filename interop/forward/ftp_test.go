//go:build interop

package forward

import (
	"bufio"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

// Bounds of the raw client's and the traps' network operations.
const (
	dialLimit  = 5 * time.Second
	replyLimit = 10 * time.Second
	writeLimit = 5 * time.Second
)

// dialCtrl connects from source to addr and reads the greeting, which must
// be a 220, for the cases the client programs cannot make: a raw login and
// the refusals. Each reply is awaited replyLimit; the transcript of the
// session goes into the failures. Its socket lives in the namespace of the
// goroutine that dialled; reads and writes may happen anywhere.
func dialCtrl(addr, source string) (*peers.Ctrl, error) {
	return peers.DialCtrl(addr, source, replyLimit)
}

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
