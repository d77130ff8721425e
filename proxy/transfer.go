package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ftpproxy/ftpproxy/kernelpath"
	"github.com/ftpproxy/ftpproxy/nat"
)

// direction is the way a transfer command moves its data.
type direction int32

const (
	dirUnknown direction = iota
	dirDown              // upstream to client: RETR, LIST, NLST, MLSD
	dirUp                // client to upstream: STOR, STOU, APPE
)

// endpoint is one side of a data connection: either a listener that waits
// for exactly one expected peer, or an address to dial.
type endpoint struct {
	ln         *net.TCPListener // nil: dial
	port       uint16           // the listener's port
	pool       *nat.PortPool    // where port came from, if anywhere
	acceptFrom netip.Addr       // the only peer address allowed to connect

	dialTo   netip.AddrPort
	dialFrom netip.Addr
}

func (e *endpoint) listening() bool { return e.ln != nil }

// transfer is one data connection pair: the client's end and the
// upstream's end, each accepted or dialed, and the relay between them. Its
// goroutine reports to the session through xferDone exactly once.
type transfer struct {
	s                *session
	client, upstream endpoint

	dir atomic.Int32 // a direction, set when a command claims the transfer

	ctx      context.Context
	cancel   context.CancelFunc
	relOnce  sync.Once
	mu       sync.Mutex
	conns    []*net.TCPConn
	aborted  bool
	done     chan struct{} // closed when the upstream reports success
	doneOnce sync.Once
	gaveUp   bool      // the upstream finished before every peer connected
	graceEnd time.Time // then: when the wait for them ends
	accepted int       // connections accepted so far

	// Results, written by the goroutine before it reports.
	down, up int64
	duration time.Duration
	err      error

	upConnected bool // the upstream's end was connected

	// report is called once by the goroutine when the transfer is over.
	report func(*transfer)

	// The connections the relay runs between, once both are open; under mu.
	clientConn, upConn *net.TCPConn

	// tlsConf, if set, protects the client's end with TLS (PROT P); the
	// handshake's outcome is kept for the log.
	tlsConf    *tls.Config
	tlsVersion uint16
	tlsResumed bool

	// upTLSConf, if set, protects the upstream's end: the proxy is the TLS
	// client and resumes the upstream control session.
	upTLSConf    *tls.Config
	upTLSResumed bool

	// kflow, if set, is the kernel's redirect that carries the transfer
	// instead of the relay; kernel records that it did.
	kflow  *kernelpath.Flow
	kernel atomic.Bool

	// Owned by the session loop.
	claimed  bool
	finished bool
	verb     string
}

func (s *session) newTransfer(client, upstream endpoint) *transfer {
	ctx, cancel := context.WithCancel(context.Background())
	t := &transfer{s: s, client: client, upstream: upstream, ctx: ctx, cancel: cancel, done: make(chan struct{}), report: s.transferDone}
	s.xfers[t] = struct{}{}
	return t
}

// clientMode and upstreamMode name each side's mode as FTP does: a side is
// passive when the data connection is opened towards it.
func (t *transfer) clientMode() string   { return modeName(t.client.listening()) }
func (t *transfer) upstreamMode() string { return modeName(!t.upstream.listening()) }

func modeName(passive bool) string {
	if passive {
		return "passive"
	}
	return "active"
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

// listeners returns the listening endpoints.
func (t *transfer) listeners() []*endpoint {
	var eps []*endpoint
	for _, e := range []*endpoint{&t.client, &t.upstream} {
		if e.listening() {
			eps = append(eps, e)
		}
	}
	return eps
}

// finishGrace is how long a transfer still waits for a data connection
// once the upstream has reported success. A server in active mode may
// connect, send a short listing, close and reply 226 before the proxy's
// accept has returned: that connection is already in the listener's
// backlog and must not be dropped.
const finishGrace = 2 * time.Second

// upstreamFinished tells the transfer that the upstream has reported
// success: a peer that has not connected by now will not, and after
// finishGrace the wait ends; and a relay whose file has gone through ends
// without waiting for the other direction to close. (A failure reply
// aborts the transfer instead.)
func (t *transfer) upstreamFinished() {
	t.doneOnce.Do(func() { close(t.done) })
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.accepted < len(t.listeners()) && !t.gaveUp {
		t.gaveUp = true
		t.graceEnd = time.Now().Add(finishGrace)
		for _, e := range t.listeners() {
			e.ln.SetDeadline(t.graceEnd)
		}
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
	if t.kernel.Load() {
		// Now, not when the transfer's goroutine gets to it: a client
		// that closes its data connection on the 426 that follows must
		// meet the dead set, or the server's end is all that is reset.
		t.killFlow(t.kflow)
	}
	t.cancel()
	for _, e := range t.listeners() {
		e.ln.Close()
	}
	for _, c := range conns {
		c.SetLinger(0)
		c.Close()
	}
}

// release closes the listeners and gives their ports back. It is
// idempotent.
func (t *transfer) release() {
	t.relOnce.Do(func() {
		for _, e := range t.listeners() {
			e.ln.Close()
			if e.pool != nil {
				e.pool.Release(e.port)
			}
		}
	})
}

var (
	errAborted       = errors.New("proxy: transfer aborted")
	errAcceptTimeout = errors.New("proxy: no data connection in time")
	errNoConnection  = errors.New("proxy: upstream finished before the data connection opened")
	errStalled       = errors.New("proxy: data transfer stalled")
)

// run connects both ends and relays. Listening ends are accepted first
// (client, then upstream: a peer that connects early waits in the
// listener's backlog), then the dialed ends (client, then upstream), so
// that the proxy dials only once the peers it waits for are there.
func (t *transfer) run() {
	started := time.Now()
	defer func() {
		t.duration = time.Since(started)
		t.cancel()
		t.release()
		t.mu.Lock()
		for _, c := range t.conns {
			if t.err != nil {
				// A failed transfer ends with resets: a plain close would
				// show the peer a clean end of file, and an upstream would
				// store an empty or truncated upload as complete.
				c.SetLinger(0)
			}
			c.Close()
		}
		t.mu.Unlock()
		if t.err != nil && !t.upConnected && !t.upstream.listening() && direction(t.dir.Load()) != dirUnknown {
			t.resetUpstreamData()
		}
		t.report(t)
	}()
	var client, upstream *net.TCPConn
	if t.kflow != nil {
		// The kernel carries the data; it hands back a connection only
		// if the client's reached the proxy without being redirected.
		if client = t.runKernel(); client == nil {
			return
		}
	}
	if client == nil && t.client.listening() {
		if client, t.err = t.accept(&t.client); t.err != nil {
			return
		}
	}
	if t.upstream.listening() {
		if upstream, t.err = t.accept(&t.upstream); t.err != nil {
			return
		}
		t.upConnected = true
	}
	t.release() // one data connection per transfer: the ports are free again
	if !t.client.listening() {
		if client, t.err = t.dial(&t.client); t.err != nil {
			return
		}
	}
	if !t.upstream.listening() {
		if upstream, t.err = t.dial(&t.upstream); t.err != nil {
			return
		}
		t.upConnected = true
		if v := t.s.cfg.UpstreamProxyProtocol; v != 0 {
			// An upstream that reads PROXY headers (another ftpproxy, say)
			// checks data connections against the client's address too.
			src := netip.AddrPortFrom(t.s.clientAP.Addr(), addrPortOf(client.RemoteAddr()).Port())
			if t.err = writeProxyHeader(upstream, v, src, t.upstream.dialTo, time.Now().Add(t.s.cfg.DialTimeout)); t.err != nil {
				return
			}
		}
	}
	t.mu.Lock()
	t.clientConn, t.upConn = client, upstream
	t.mu.Unlock()
	// With PROT P the client starts its TLS handshake once it has the
	// upstream's 150 (curl does), and the upstream sends that once its
	// data connection is there: so both TCP ends first, then TLS.
	// The upstream's TLS first: a server may send its 150 only then.
	upEnd := plainEnd(upstream)
	if t.upTLSConf != nil {
		if upEnd, t.err = t.clientTLS(upstream); t.err != nil {
			return
		}
	}
	end := plainEnd(client)
	if t.tlsConf != nil {
		if end, t.err = t.serverTLS(client); t.err != nil {
			return
		}
	}
	t.down, t.up, t.err = t.relay(end, upEnd)
}

// resetUpstreamData makes an upstream that waits in passive mode for a
// data connection give up now: a transfer command whose data channel
// failed (or was aborted) before the proxy connected would otherwise keep
// the server waiting, and the session with it, until the server's own
// accept timeout. The proxy connects and
// resets at once, which servers take as a failed transfer.
func (t *transfer) resetUpstreamData() {
	d := net.Dialer{Timeout: min(t.s.cfg.DialTimeout, 2*time.Second)}
	c, err := d.Dial("tcp", t.upstream.dialTo.String())
	if err != nil {
		return
	}
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
}

// status is the answer to a STAT sent during the transfer (RFC 959
// section 4.1.3): how far it has got, in bytes the receiving peer has
// acknowledged.
func (t *transfer) status() string {
	if t.kernel.Load() {
		snap, _ := t.kflow.Snapshot()
		orig, reply := snap.Payload()
		n := reply
		if direction(t.dir.Load()) == dirUp {
			n = orig
		}
		return fmt.Sprintf("213 Status: %s in progress, about %d bytes carried by the kernel.", t.verb, n)
	}
	t.mu.Lock()
	dst := t.clientConn
	if direction(t.dir.Load()) == dirUp {
		dst = t.upConn
	}
	t.mu.Unlock()
	if dst == nil {
		return "213 Status: " + t.verb + " is waiting for its data connection."
	}
	n, ok := tcpAcked(dst)
	if !ok {
		return "213 Status: " + t.verb + " in progress."
	}
	return fmt.Sprintf("213 Status: %s in progress, %d bytes delivered.", t.verb, n)
}

// accept waits for the one peer allowed to open this data connection: the
// control connection's client on the client's end, the upstream on the
// upstream's. Anyone else is turned away and the wait goes on, so that a
// third party cannot steal the transfer by connecting first.
func (t *transfer) accept(e *endpoint) (*net.TCPConn, error) {
	deadline := time.Now().Add(t.s.cfg.DataAcceptTimeout)
	t.mu.Lock()
	if t.gaveUp && t.graceEnd.Before(deadline) {
		deadline = t.graceEnd
	}
	e.ln.SetDeadline(deadline)
	t.mu.Unlock()
	for {
		c, err := e.ln.AcceptTCP()
		if err != nil {
			t.mu.Lock()
			gaveUp, aborted := t.gaveUp, t.aborted
			t.mu.Unlock()
			var ne net.Error
			timeout := errors.As(err, &ne) && ne.Timeout()
			switch {
			case aborted:
				return nil, errAborted
			case gaveUp && timeout:
				return nil, errNoConnection
			case timeout:
				return nil, errAcceptTimeout
			}
			return nil, fmt.Errorf("proxy: accept data connection: %w", err)
		}
		from := addrPortOf(c.RemoteAddr())
		if e == &t.client && nat.Contains(t.s.cfg.ProxyProtocolFrom, from.Addr()) {
			// A data connection forwarded by the load balancer: the
			// client's address is in the header, and it is checked like
			// any other.
			src, _, err := readProxyHeader(c, time.Now().Add(t.s.cfg.ProxyHeaderTimeout))
			if err != nil {
				t.s.log.Warn().Err(err).Str("from", from.String()).Uint16("port", e.port).Msg("data connection with a bad PROXY header refused")
				t.s.cfg.Metrics.dataFailure(dataBadProxyHeader)
				c.SetLinger(0)
				c.Close()
				continue
			}
			if src.IsValid() {
				from = src
			}
		}
		if from.Addr() != e.acceptFrom {
			t.refuse(c, from, e)
			continue
		}
		if !t.track(c, true) {
			return nil, errAborted
		}
		return c, nil
	}
}

// refuse turns away a data connection from from to e's listener, with a
// reset and a log line: one from a foreign address, or a second one from
// the expected peer.
func (t *transfer) refuse(c *net.TCPConn, from netip.AddrPort, e *endpoint) {
	if from.Addr() == e.acceptFrom {
		t.s.log.Warn().Str("from", from.String()).Uint16("port", e.port).Msg("second data connection refused")
	} else {
		t.s.log.Warn().Str("from", from.String()).Str("expected", e.acceptFrom.String()).
			Uint16("port", e.port).Msg("data connection from a foreign address refused")
	}
	t.s.cfg.Metrics.dataFailure(dataForeignPeer)
	c.SetLinger(0)
	c.Close()
}

// track registers a connection so abort can reach it; it reports false
// (and closes c) if the transfer was aborted meanwhile.
func (t *transfer) track(c *net.TCPConn, accepted bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.aborted {
		c.SetLinger(0)
		c.Close()
		return false
	}
	if accepted {
		t.accepted++
	}
	t.conns = append(t.conns, c)
	return true
}

// dial opens a dialed end of the data connection.
func (t *transfer) dial(e *endpoint) (*net.TCPConn, error) {
	d := net.Dialer{
		Timeout:   t.s.cfg.DialTimeout,
		LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(e.dialFrom, 0)),
	}
	c, err := d.DialContext(t.ctx, "tcp", e.dialTo.String())
	if err != nil {
		if t.ctx.Err() != nil {
			return nil, errAborted
		}
		return nil, fmt.Errorf("proxy: dial data %s: %w", e.dialTo, err)
	}
	tc := c.(*net.TCPConn)
	if !t.track(tc, false) {
		return nil, errAborted
	}
	return tc, nil
}

// pumpResult is what one direction of a relay reports.
type pumpResult struct {
	dir direction
	n   int64
	err error
	// passingEnd: the source ended cleanly and err came from passing that
	// end on to the destination, or from waiting for its acknowledgement.
	passingEnd bool
}

// relay copies both ways between client and upstream until both directions
// have ended, and returns the bytes moved each way. When both ends are
// plain *net.TCPConn, io.Copy splices in the kernel on Linux; a TLS end is
// copied through user space. A direction that
// reaches EOF passes the close on with CloseWrite; the first error closes
// both. FTP data flows one way: once the direction that carries the file
// has ended cleanly, the other gets DataLinger to close before both are
// closed.
func (t *transfer) relay(clientEnd, upEnd dataEnd) (down, up int64, err error) {
	client, upstream := clientEnd.tcp, upEnd.tcp
	results := make(chan pumpResult, 2)
	go pump(dirDown, clientEnd, upEnd.stream, results)
	go pump(dirUp, upEnd, clientEnd.stream, results)
	var lingered atomic.Bool
	closeBoth := func() {
		client.Close()
		upstream.Close()
	}
	// resetBoth ends a failed relay with resets: a plain close would show
	// the peers a clean end of file, and an upstream would store a
	// truncated upload as complete.
	resetBoth := func() {
		client.SetLinger(0)
		upstream.SetLinger(0)
		closeBoth()
	}
	var stalled atomic.Bool
	stop := make(chan struct{})
	var watch sync.WaitGroup
	watch.Go(func() {
		t.watchStall(client, upstream, stop, func() {
			stalled.Store(true)
			closeBoth()
		})
	})
	defer func() {
		close(stop)
		watch.Wait()
		if stalled.Load() {
			err = fmt.Errorf("%w: no byte moved for %v", errStalled, t.s.cfg.DataStallTimeout)
		}
	}()
	var linger *time.Timer
	dataDone := false   // the direction that carries the file has ended cleanly
	finishing := t.done // closed once the upstream has reported success
	endNow := func() {
		lingered.Store(true)
		clientEnd.closeNotify()
		upEnd.closeNotify()
		closeBoth()
	}
	for pending := 2; pending > 0; {
		var r pumpResult
		select {
		case <-finishing:
			// The upstream is done; once the file's last byte is passed
			// on, nothing more is owed to the other direction.
			finishing = nil
			if dataDone {
				endNow()
			}
			continue
		case r = <-results:
			pending--
		}
		if r.dir == dirDown {
			down = r.n
		} else {
			up = r.n
		}
		if r.err != nil {
			// After the linger closed both ends, the direction that carried
			// nothing fails on the closed socket: that is the normal end.
			d := direction(t.dir.Load())
			if lingered.Load() || (dataDone && d != dirUnknown && r.dir != d) {
				// The file has gone through: the direction that carries
				// nothing may end any way it likes.
				closeBoth()
				continue
			}
			if r.passingEnd && d != dirUnknown && r.dir != d {
				// The direction that carries nothing read its clean end
				// and could not pass it on (a TLS close_notify to a
				// server that has closed after its last byte): that says
				// nothing of the file, whose own direction reports.
				continue
			}
			if err == nil {
				err = r.err
			}
			resetBoth()
			continue
		}
		if d := direction(t.dir.Load()); (d == dirUnknown || d == r.dir) && !dataDone {
			dataDone = true
			if finishing == nil {
				endNow()
			} else {
				linger = time.AfterFunc(t.s.cfg.DataLinger, endNow)
			}
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

// watchStall calls stalled once if neither connection moves a byte for
// DataStallTimeout, until stop is closed.
func (t *transfer) watchStall(a, b *net.TCPConn, stop <-chan struct{}, stalled func()) {
	timeout := t.s.cfg.DataStallTimeout
	progress := func() (uint64, bool) {
		pa, ok := tcpProgress(a)
		pb, okb := tcpProgress(b)
		return pa + pb, ok && okb
	}
	last, ok := progress()
	if !ok {
		return
	}
	tick := time.NewTicker(max(timeout/8, 50*time.Millisecond))
	defer tick.Stop()
	since := time.Now()
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			p, _ := progress()
			if p != last {
				last, since = p, now
				continue
			}
			if now.Sub(since) >= timeout {
				t.s.log.Warn().Dur("timeout", timeout).Msg("data transfer stalled")
				stalled()
				return
			}
		}
	}
}

// pump copies src to dst and passes EOF on as a half-close. It reports
// success only once dst's peer has acknowledged every byte: a byte still in
// the proxy's socket buffer is not delivered, and a peer that resets then
// would lose it while the transfer looked complete.
func pump(d direction, dst dataEnd, src net.Conn, results chan<- pumpResult) {
	n, err := io.Copy(dst.stream, src)
	passingEnd := err == nil
	// Only the data must be acknowledged, not a TLS close_notify after
	// it; and with nothing to deliver, a peer that closed first (curl
	// does for an empty file it knows the size of) loses nothing.
	mark := dst.sent(n)
	if err == nil && n > 0 {
		if cerr := dst.closeWrite(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = cerr
		}
	} else if err == nil {
		dst.closeWrite()
	}
	if err == nil && n > 0 {
		err = waitAcked(dst.tcp, mark)
	}
	results <- pumpResult{dir: d, n: n, err: err, passingEnd: passingEnd}
}
