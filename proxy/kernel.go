package proxy

import (
	"errors"
	"net"
	"time"

	"github.com/ftpproxy/ftpproxy/kernelpath"
)

// Why a passive transfer took the splice relay although the kernel path
// is on: the values of ftpproxy_data_path_total's path label besides
// "kernel".
const (
	pathKernel          = "kernel"
	pathSpliceTLS       = "splice_tls"
	pathSpliceActive    = "splice_active"
	pathSpliceFamily    = "splice_family"
	pathSpliceProxyHdr  = "splice_proxy_header"
	pathSpliceAddFailed = "splice_add_failed"
	pathSpliceNotRedir  = "splice_not_redirected"
)

var dataPathValues = []string{pathKernel, pathSpliceTLS, pathSpliceActive, pathSpliceFamily,
	pathSpliceProxyHdr, pathSpliceAddFailed, pathSpliceNotRedir}

// errKernelReset is a kernel-carried data connection that ended with a
// reset, or vanished from conntrack, before its data was delivered.
var errKernelReset = errors.New("proxy: data connection reset")

// kernelPathFor says whether t, just set up, can be carried by the kernel,
// and if not, why (a path label).
func (s *session) kernelPathFor(t *transfer) string {
	switch {
	case t.tlsConf != nil || t.upTLSConf != nil:
		return pathSpliceTLS
	case !t.client.listening() || t.upstream.listening():
		return pathSpliceActive
	case s.viaAP.IsValid() || s.cfg.UpstreamProxyProtocol != 0:
		// Data connections that carry a PROXY header must be read or
		// written by the proxy.
		return pathSpliceProxyHdr
	case s.clientAP.Addr().Unmap().Is4() != t.upstream.dialTo.Addr().Unmap().Is4(),
		!s.cfg.KernelPath.Forwards(t.upstream.dialTo.Addr().Unmap()):
		return pathSpliceFamily
	}
	return pathKernel
}

// useKernelPath installs the redirect for a transfer that the kernel can
// carry (plain, passive on both sides), before its 227 or 229 is sent. Any reason not to, or a
// redirect that cannot be added, leaves t to the splice relay.
func (s *session) useKernelPath(t *transfer) {
	if s.cfg.KernelPath == nil {
		return
	}
	path := s.kernelPathFor(t)
	if path == pathKernel {
		flow, err := s.cfg.KernelPath.Redirect(kernelpath.Redirect{
			Client:  s.clientAP.Addr(),
			Port:    t.client.port,
			To:      t.upstream.dialTo,
			From:    t.upstream.dialFrom,
			Timeout: s.cfg.DataAcceptTimeout + finishGrace,
		})
		if err != nil {
			s.log.Warn().Err(err).Msg("kernel data path: redirect not added; relaying this transfer")
			path = pathSpliceAddFailed
		} else {
			t.kflow = flow
		}
	}
	if path != pathKernel {
		s.log.Debug().Str("path", path).Msg("transfer relayed by the proxy")
	}
	s.cfg.Metrics.dataPath(path)
}

// runKernel follows a transfer the kernel carries: it waits for the
// client's redirected connection, then for the flow to end. It returns a
// connection to relay instead if the client's connection reached the
// proxy's listener without being redirected (the splice relay takes it
// from there), or nil once the transfer is over.
func (t *transfer) runKernel() *net.TCPConn {
	f := t.kflow
	defer f.Forget()
	adopted := make(chan *net.TCPConn, 1)
	established := make(chan struct{})
	go t.guardListener(adopted, established)

	// The wait for the client's connection.
	accept := time.NewTimer(t.s.cfg.DataAcceptTimeout)
	defer accept.Stop()
	// Events say when the flow opens (the path makes good a lost one).
	finishing := t.done
	var grace <-chan time.Time
wait:
	for {
		select {
		case <-f.Established():
			break wait
		case c := <-adopted:
			select {
			case <-f.Established():
				// Both at once: the first was redirected, this one is a
				// second connection.
				t.refuse(c, addrPortOf(c.RemoteAddr()), &t.client)
				break wait
			default:
			}
			t.s.log.Info().Msg("kernel data path: the client's connection was not redirected; relaying it")
			t.s.cfg.Metrics.dataPath(pathSpliceNotRedir)
			t.kflow = nil
			return c
		case <-t.ctx.Done():
			t.err = errAborted
			return nil
		case <-accept.C:
			t.err = errAcceptTimeout
			return nil
		case <-finishing:
			finishing = nil
			grace = time.After(finishGrace)
		case <-grace:
			t.err = errNoConnection
			return nil
		}
	}
	close(established)
	t.kernel.Store(true)
	f.Close() // the elements: conntrack holds the NAT from here on
	t.mu.Lock()
	t.accepted++
	t.upConnected = true
	t.mu.Unlock()

	// Events say how the flow goes; a query now and then makes good a
	// lost one and measures progress for the stall rule.
	stall := t.s.cfg.DataStallTimeout
	poll := time.NewTicker(min(max(stall/8, 50*time.Millisecond), 500*time.Millisecond))
	defer poll.Stop()
	var snap kernelpath.Snapshot
	var moved uint64
	since := time.Now()
	defer func() {
		// Counts from conntrack, as the flow ended: the payload of the
		// packets the kernel saw each way.
		if last, ok := f.Snapshot(); ok {
			snap = last
		}
		orig, reply := snap.Payload()
		t.up, t.down = int64(orig), int64(reply)
	}()
	for {
		select {
		case <-f.Changed():
		case <-poll.C:
		case <-finishing:
			finishing = nil
		case <-t.ctx.Done():
			t.kill(f)
			t.err = errAborted
			return nil
		}
		snap, _ = f.Snapshot()
		d := direction(t.dir.Load())
		switch snap.Outcome(d != dirUp, d != dirUnknown) {
		case kernelpath.Closed:
			return nil
		case kernelpath.Delivered:
			// Every byte the sender sent has arrived; once the upstream
			// has said so too, nothing more is owed to the other side.
			if finishing == nil {
				return nil
			}
		case kernelpath.Reset:
			t.err = errKernelReset
			return nil
		}
		if m := snap.Moved(); m != moved {
			moved, since = m, time.Now()
		} else if time.Since(since) >= stall {
			t.s.log.Warn().Dur("timeout", stall).Msg("data transfer stalled")
			t.kill(f)
			t.err = errStalled
			return nil
		}
	}
}

// killWait bounds the wait for conntrack to see a killed flow's reset, so
// that the transfer's counts are the flow's last.
const killWait = 2 * time.Second

// killFlow has the kernel reset both ends of f, and reports whether it
// could.
func (t *transfer) killFlow(f *kernelpath.Flow) bool {
	if err := f.Kill(); err != nil {
		t.s.log.Warn().Err(err).Msg("kernel data path: cannot reset the data connection")
		return false
	}
	return true
}

// kill has the kernel reset both ends of the flow (unless abort did
// already), and waits a moment for conntrack to see it.
func (t *transfer) kill(f *kernelpath.Flow) {
	if !t.killFlow(f) {
		return
	}
	deadline := time.After(killWait)
	for {
		if snap, _ := f.Snapshot(); snap.WasReset() {
			return
		}
		select {
		case <-f.Changed():
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			return
		}
	}
}

// guardListener keeps the announced port's listener while the kernel
// carries the transfer: before the redirect is used, a connection from
// the client itself (one the kernel did not redirect) is handed over on
// adopted; every other connection, and any once the flow is established,
// is refused as one from a foreign address is on the splice path.
func (t *transfer) guardListener(adopted chan<- *net.TCPConn, established <-chan struct{}) {
	e := &t.client
	e.ln.SetDeadline(time.Time{})
	handed := false
	for {
		c, err := e.ln.AcceptTCP()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				e.ln.SetDeadline(time.Time{})
				continue
			}
			return
		}
		from := addrPortOf(c.RemoteAddr())
		select {
		case <-established:
		default:
			if from.Addr() == e.acceptFrom && !handed && t.track(c, true) {
				handed = true
				adopted <- c
				continue
			}
		}
		t.refuse(c, from, e)
	}
}
