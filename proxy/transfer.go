package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

type mode uint8

const (
	modePassive mode = iota // the client connects to the proxy
	modeActive              // the upstream connects to the proxy
)

func (m mode) String() string {
	if m == modeActive {
		return "active"
	}
	return "passive"
}

// direction is the way a transfer command moves its data.
type direction int32

const (
	dirUnknown direction = iota
	dirDown              // upstream to client: RETR, LIST, NLST, MLSD
	dirUp                // client to upstream: STOR, STOU, APPE
)

// transfer is one data connection pair: a listener that waits for the
// expected peer, a dial to the other side, and the relay between them. Its
// goroutine reports to the session through xferDone exactly once.
type transfer struct {
	s    *session
	mode mode

	ln         *net.TCPListener
	port       uint16
	pooled     bool       // port came from the passive pool
	advertised netip.Addr // passive: the address announced to the client
	acceptFrom netip.Addr // the only peer address allowed to connect
	dialTo     netip.AddrPort
	dialFrom   netip.Addr

	dir atomic.Int32 // a direction, set when a command claims the transfer

	ctx      context.Context
	cancel   context.CancelFunc
	relOnce  sync.Once
	mu       sync.Mutex
	conns    []*net.TCPConn
	aborted  bool
	accepted bool // the expected peer has connected
	gaveUp   bool // the upstream finished before the peer connected

	// Results, written by the goroutine before it reports.
	down, up int64
	duration time.Duration
	err      error

	// Owned by the session loop.
	claimed  bool
	finished bool
	verb     string
}

func (s *session) newTransfer(m mode, ln *net.TCPListener, port uint16, pooled bool) *transfer {
	ctx, cancel := context.WithCancel(context.Background())
	t := &transfer{s: s, mode: m, ln: ln, port: port, pooled: pooled, ctx: ctx, cancel: cancel}
	s.xfers[t] = struct{}{}
	return t
}

// claim ties the transfer to the command that uses it.
func (t *transfer) claim(verb string, d direction) {
	t.claimed = true
	t.verb = verb
	t.dir.Store(int32(d))
}

// start runs the transfer's goroutine.
func (t *transfer) start() {
	t.s.wg.Go(t.run)
}

// upstreamFinished tells the transfer that the upstream has sent its final
// reply: if the expected peer has not connected by now, it never will, and
// the wait ends.
func (t *transfer) upstreamFinished() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.accepted {
		t.gaveUp = true
		t.ln.Close()
	}
}

// abort stops the transfer now. Connections are reset rather than closed,
// so that the upstream sees an aborted transfer (426) and not the end of an
// upload.
func (t *transfer) abort() {
	t.mu.Lock()
	t.aborted = true
	conns := t.conns
	t.mu.Unlock()
	t.cancel()
	t.ln.Close()
	for _, c := range conns {
		c.SetLinger(0)
		c.Close()
	}
}

// release gives the listener and its port back. It is idempotent.
func (t *transfer) release() {
	t.relOnce.Do(func() {
		t.ln.Close()
		if t.pooled {
			t.s.cfg.PassivePorts.Release(t.port)
		}
	})
}

var (
	errAborted       = errors.New("proxy: transfer aborted")
	errAcceptTimeout = errors.New("proxy: no data connection in time")
	errNoConnection  = errors.New("proxy: upstream finished before the data connection opened")
)

// run accepts the expected peer, dials the other side and relays.
func (t *transfer) run() {
	started := time.Now()
	defer func() {
		t.duration = time.Since(started)
		t.cancel()
		t.release()
		t.mu.Lock()
		for _, c := range t.conns {
			c.Close()
		}
		t.mu.Unlock()
		select {
		case t.s.xferDone <- t:
		case <-t.s.done:
		}
	}()
	in, err := t.acceptPeer()
	if err != nil {
		t.err = err
		return
	}
	t.release() // one data connection per transfer: the port is free again
	out, err := t.dial()
	if err != nil {
		t.err = err
		return
	}
	client, upstream := in, out
	if t.mode == modeActive {
		client, upstream = out, in
	}
	t.down, t.up, t.err = t.relay(client, upstream)
}

// acceptPeer waits for the one peer allowed to open this data connection:
// the control connection's client in passive mode, the upstream in active
// mode. Anyone else is turned away and the wait goes on, so that a third
// party cannot steal the transfer by connecting first.
func (t *transfer) acceptPeer() (*net.TCPConn, error) {
	t.ln.SetDeadline(time.Now().Add(t.s.cfg.DataAcceptTimeout))
	for {
		c, err := t.ln.AcceptTCP()
		if err != nil {
			t.mu.Lock()
			gaveUp, aborted := t.gaveUp, t.aborted
			t.mu.Unlock()
			switch {
			case aborted:
				return nil, errAborted
			case gaveUp:
				return nil, errNoConnection
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, errAcceptTimeout
			}
			return nil, fmt.Errorf("proxy: accept data connection: %w", err)
		}
		from := addrPortOf(c.RemoteAddr())
		if from.Addr() != t.acceptFrom {
			t.s.log.Warn().Str("from", from.String()).Str("expected", t.acceptFrom.String()).
				Uint16("port", t.port).Msg("data connection from a foreign address refused")
			c.SetLinger(0)
			c.Close()
			continue
		}
		if !t.track(c) {
			return nil, errAborted
		}
		return c, nil
	}
}

// track registers a connection so abort can reach it; it reports false
// (and closes c) if the transfer was aborted meanwhile. The first
// connection tracked is the accepted peer.
func (t *transfer) track(c *net.TCPConn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.aborted {
		c.SetLinger(0)
		c.Close()
		return false
	}
	t.accepted = true
	t.conns = append(t.conns, c)
	return true
}

// dial opens the other side of the data connection.
func (t *transfer) dial() (*net.TCPConn, error) {
	d := net.Dialer{
		Timeout:   t.s.cfg.DialTimeout,
		LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(t.dialFrom, 0)),
	}
	c, err := d.DialContext(t.ctx, "tcp", t.dialTo.String())
	if err != nil {
		if t.ctx.Err() != nil {
			return nil, errAborted
		}
		return nil, fmt.Errorf("proxy: dial data %s: %w", t.dialTo, err)
	}
	tc := c.(*net.TCPConn)
	if !t.track(tc) {
		return nil, errAborted
	}
	return tc, nil
}

// pumpResult is what one direction of a relay reports.
type pumpResult struct {
	dir direction
	n   int64
	err error
}

// relay copies both ways between client and upstream until both directions
// have ended, and returns the bytes moved each way. Both ends are
// *net.TCPConn, so on Linux io.Copy splices in the kernel. A direction that
// reaches EOF passes the close on with CloseWrite; the first error closes
// both. FTP data flows one way: once the direction that carries the file
// has ended cleanly, the other gets DataLinger to close before both are
// closed.
func (t *transfer) relay(client, upstream *net.TCPConn) (down, up int64, err error) {
	results := make(chan pumpResult, 2)
	go pump(dirDown, client, upstream, results)
	go pump(dirUp, upstream, client, results)
	var lingered atomic.Bool
	closeBoth := func() {
		client.Close()
		upstream.Close()
	}
	var linger *time.Timer
	for range 2 {
		r := <-results
		if r.dir == dirDown {
			down = r.n
		} else {
			up = r.n
		}
		if r.err != nil {
			// After the linger closed both ends, the direction that carried
			// nothing fails on the closed socket: that is the normal end.
			if err == nil && !lingered.Load() {
				err = r.err
			}
			closeBoth()
			continue
		}
		if d := direction(t.dir.Load()); (d == dirUnknown || d == r.dir) && linger == nil {
			linger = time.AfterFunc(t.s.cfg.DataLinger, func() {
				lingered.Store(true)
				closeBoth()
			})
		}
	}
	if linger != nil {
		linger.Stop()
	}
	t.mu.Lock()
	aborted := t.aborted
	t.mu.Unlock()
	if aborted {
		err = errAborted
	}
	return down, up, err
}

// pump copies src to dst and passes EOF on as a half-close.
func pump(d direction, dst, src *net.TCPConn, results chan<- pumpResult) {
	n, err := io.Copy(dst, src)
	if err == nil {
		if cerr := dst.CloseWrite(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = cerr
		}
	}
	results <- pumpResult{dir: d, n: n, err: err}
}
