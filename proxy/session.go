package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/ftpproxy/ftpproxy/nat"
	"github.com/ftpproxy/ftpproxy/rewrite"
)

// Replies the proxy sends on its own when a session cannot go on.
const (
	replyUpstreamDown   = "421 Service not available: the FTP server cannot be reached."
	replyUpstreamGone   = "421 Service not available: the FTP server closed the connection."
	replyUpstreamBad    = "421 Service not available: the FTP server sent a malformed reply."
	replyGreetTimeout   = "421 Service not available: the FTP server did not greet in time."
	replyIdleTimeout    = "421 Idle timeout: closing the control connection."
	replyLoginTimeout   = "421 Login timeout: closing the control connection."
	replyShuttingDown   = "421 Service not available: the proxy is shutting down."
	replyTooManyLong    = "421 Too many overlong command lines: closing the control connection."
	replyBadProxyHeader = "421 PROXY protocol header refused."
	replyTransferFailed = "426 Connection closed; transfer aborted."
	maxOverlongCommands = 3
)

// clientEvent is one command line read from the client, or the error that
// ended or spoilt the read.
type clientEvent struct {
	cmd   rewrite.Command
	err   error
	fatal bool // the control connection is unusable
}

// session is one client's control connection and the upstream's. Its
// state is guarded by mu and changed by whichever goroutine has news: the
// client reader with a command, the upstream reader with a reply, a data
// transfer that has ended, a timer. So a command and its reply cross no
// goroutine hand-off on their way through the proxy, and the writes on
// both control connections happen under mu, one at a time.
type session struct {
	srv *Server
	cfg *Config
	id  uint64

	logCtx  zerolog.Logger // session, client, and the upstream if known from the start
	baseLog zerolog.Logger // logCtx plus the upstream once connected
	log     zerolog.Logger // baseLog plus the user once known

	client   net.Conn
	clientAP netip.AddrPort // the client's address (from a PROXY header if there is one)
	dialedAP netip.AddrPort // the address the client dialed (likewise)
	viaAP    netip.AddrPort // the trusted load balancer or proxy it came through, if any
	localAP  netip.AddrPort // the proxy's end of the client's control connection
	up       net.Conn
	upAP     netip.AddrPort // the upstream's control address
	upLocal  netip.AddrPort // the proxy's end of the upstream control connection

	wg      sync.WaitGroup // readers, the upstream connector and data transfers
	ended   chan struct{}  // closed when the session must end
	endOnce sync.Once
	ctx     context.Context // cancelled when the session must end: stops a dial or a lookup
	cancel  context.CancelFunc

	fwd *forwardState // forward mode: the destination the login names; nil in reverse mode

	mu          sync.Mutex
	phase       phase
	cur         *exchange // what the upstream is working on; nil when idle
	inbox       []queued  // client commands waiting for cur to end
	backlog     int       // bytes in inbox
	skipping    bool      // the rest of an unsolicited reply is being dropped
	setup       *transfer // data channel announced, not yet claimed by a command
	setupErr    error     // why the last announced data channel ended unclaimed
	xfers       map[*transfer]struct{}
	closing     bool
	quitting    bool // QUIT was sent: the upstream closing is the normal end
	saw421      bool // the upstream has said 421 itself
	epsvAll     bool // the client sent EPSV ALL (RFC 2428 section 4)
	upNoEPSV    bool // the upstream refused EPSV: use PASV from now on
	overlong    int
	user        string
	implicit    bool // the session began with a TLS handshake (implicit FTPS)
	tlsClient   bool // the client's control connection is TLS
	tlsConf     *tls.Config
	handshaking bool      // a 234 is out: nothing is written or dispatched until TLS is up
	authWait    chan bool // where an AUTH's dispatch tells the client reader its decision
	readerWait  chan bool // the same channel, for the client reader to wait on
	pbsz, protP bool      // PBSZ 0 seen; data connections protected (PROT P)

	upTLS        bool        // the upstream control connection is TLS
	upConf       *tls.Config // the session's TLS configuration towards the upstream
	upProtP      bool        // the upstream has accepted PBSZ 0 and PROT P
	upHandshake  bool        // the upstream said 234: its reader starts TLS
	upProtLater  bool        // the upstream said 530 to PBSZ/PROT: let the next data command go without
	heldGreeting []string    // the upstream's greeting, until TLS with it is up
	loginTimer   *time.Timer
	idleTimer    *time.Timer
	active       time.Time // when the client last sent a command or a transfer ended

	// Write deadlines of the control connections, renewed only when less
	// than half of WriteTimeout is left, so that a command's way through
	// the proxy does not reset a runtime timer twice.
	clientWD, upWD time.Time

	started             time.Time
	commands, transfers int
	bytesDown, bytesUp  int64
	kernelTransfers     int // of transfers, carried by the kernel: counted by conntrack
	endReason           string
	wbuf                []byte
}

func newSession(srv *Server, c net.Conn) *session {
	s := &session{
		srv:      srv,
		cfg:      srv.config(),
		id:       srv.nextID.Add(1),
		client:   c,
		clientAP: addrPortOf(c.RemoteAddr()),
		localAP:  addrPortOf(c.LocalAddr()),
		ended:    make(chan struct{}),
		xfers:    make(map[*transfer]struct{}),
		started:  time.Now(),
	}
	s.dialedAP = s.localAP
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if s.cfg.Forward != nil {
		s.fwd = &forwardState{}
	}
	s.setLogger(netip.AddrPort{})
	return s
}

// setLogger builds the session's logger: one per session, with constant
// field names, so every line can be tied to its session and client. via is
// the load balancer the client came through, if any.
func (s *session) setLogger(via netip.AddrPort) {
	ctx := s.cfg.Logger.With().
		Uint64("session", s.id).
		Str("client", s.clientAP.String())
	if via.IsValid() {
		ctx = ctx.Str("via", via.String())
	}
	if up := s.cfg.Upstream; up != "" && s.cfg.Pool == nil && s.cfg.Forward == nil {
		ctx = ctx.Str("upstream", up)
	}
	s.logCtx = ctx.Logger()
	s.baseLog = s.logCtx
	s.log = s.baseLog
}

// setUpstream adds the server the session connected to to its logger,
// when it was not known from the start (a pool, forward mode).
func (s *session) setUpstream(name string) {
	s.baseLog = s.logCtx.With().Str("upstream", name).Str("upstream_addr", s.upAP.String()).Logger()
	s.setUser(s.user)
}

// serve runs the session to its end and releases everything it holds.
func (s *session) serve() {
	defer s.finish()
	setOOBInline(s.client, s.log)
	if nat.Contains(s.cfg.ProxyProtocolFrom, s.clientAP.Addr()) && !s.readProxyHeader() {
		return
	}
	if s.implicit {
		// Implicit FTPS: TLS from the first byte, before the greeting.
		tc, err := s.handshake(s.client, s.sessionTLS())
		if err != nil {
			s.log.Warn().Err(err).Msg("TLS handshake with the client failed")
			s.endReason = "client TLS handshake failed"
			return
		}
		s.client, s.tlsClient = tc, true
		s.logTLS(tc, "client TLS established")
	}
	release, err := s.srv.adm.admit(s.clientAP.Addr(), time.Now())
	if err != nil {
		s.log.Warn().Err(err).Msg("session refused")
		s.cfg.Metrics.refused(err)
		s.endReason = "refused"
		s.writeClientLine(replyFor(err))
		return
	}
	defer release()
	s.log.Info().Str("local", s.dialedAP.String()).Msg("session opened")

	s.mu.Lock()
	s.loginTimer = time.AfterFunc(s.cfg.LoginTimeout, s.onLoginTimeout)
	s.active = time.Now()
	s.idleTimer = time.AfterFunc(s.cfg.IdleTimeout, s.onIdleTimeout)
	if s.fwd != nil {
		// Forward mode: the proxy greets, and connects once the login
		// names the server.
		s.phase = phaseLogin
		s.writeClientLine(replyForwardGreeting)
	} else {
		s.cur = &exchange{kind: kindGreeting}
		targets := s.upstreamTargets()
		s.wg.Go(func() { s.connect(targets, true) })
	}
	s.mu.Unlock()
	s.wg.Go(s.readCommands)

	select {
	case <-s.ended:
	case <-s.srv.force:
		s.mu.Lock()
		s.abortSession("proxy shutting down", replyShuttingDown)
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.loginTimer.Stop()
	s.idleTimer.Stop()
	s.mu.Unlock()
}

// onLoginTimeout and onIdleTimeout are the session's timers.
func (s *session) onLoginTimeout() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase != phaseReady {
		s.log.Info().Dur("timeout", s.cfg.LoginTimeout).Msg("no login in time")
		s.abortSession("login timeout", replyLoginTimeout)
	}
}

// onIdleTimeout closes a quiet control connection, but never while a
// transfer runs: a long download keeps the control connection quiet.
func (s *session) onIdleTimeout() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return
	}
	if s.transferring() != nil {
		s.idleTimer.Reset(s.cfg.IdleTimeout)
		return
	}
	if left := s.cfg.IdleTimeout - time.Since(s.active); left > 0 {
		s.idleTimer.Reset(left)
		return
	}
	s.log.Info().Dur("timeout", s.cfg.IdleTimeout).Msg("control connection idle")
	s.abortSession("idle timeout", replyIdleTimeout)
}

// readProxyHeader takes the client's address from the PROXY header a
// trusted load balancer sends first. It reports false, having told the
// peer why, if there is no valid header.
func (s *session) readProxyHeader() bool {
	peer := s.clientAP
	src, dst, err := readProxyHeader(s.client, time.Now().Add(s.cfg.ProxyHeaderTimeout))
	if err != nil {
		s.log.Warn().Err(err).Msg("PROXY header refused")
		s.endReason = "bad PROXY header"
		s.writeClientLine(replyBadProxyHeader)
		return false
	}
	if src.IsValid() { // not a LOCAL header: the load balancer's own check
		s.clientAP, s.dialedAP, s.viaAP = src, dst, peer
		s.setLogger(peer)
	}
	return true
}

// finish closes both control connections, stops every data transfer and
// waits for all the session's goroutines, then logs a summary.
func (s *session) finish() {
	s.cancel()
	s.mu.Lock()
	s.closing = true
	for t := range s.xfers {
		t.abort()
	}
	up := s.up
	s.mu.Unlock()
	s.client.Close()
	if up != nil {
		up.Close()
	}
	s.wg.Wait() // transfers report under mu: not held here
	s.mu.Lock()
	defer s.mu.Unlock()
	if x := s.cur; x != nil && x.listener != nil {
		x.listener.close()
	}
	for t := range s.xfers {
		t.release() // transfers whose goroutine never started
	}
	s.cfg.Metrics.sessionEnded(s.endReason)
	ev := s.log.Info()
	if s.kernelTransfers > 0 {
		// Their bytes in down and up are conntrack's count of the
		// packets' payload, as on their transfer lines.
		ev = ev.Int("kernel_transfers", s.kernelTransfers)
	}
	ev.Str("reason", s.endReason).
		Dur("duration", time.Since(s.started)).
		Int("commands", s.commands).
		Int("transfers", s.transfers).
		Int64("down", s.bytesDown).
		Int64("up", s.bytesUp).
		Msg("session closed")
}

// abortSession ends the session with a last reply to the client.
func (s *session) abortSession(reason, reply string) {
	if s.closing {
		return
	}
	if x := s.transferring(); x != nil {
		// The transfer the client waits on is over too: its own reply
		// first (RFC 959: 426), then the session's.
		x.answered = true
		s.writeClientReply([]string{replyTransferFailed, reply})
	} else {
		s.writeClientLine(reply)
	}
	s.end(reason)
}

// end marks the session over; serve then tears it down.
func (s *session) end(reason string) {
	if !s.closing {
		s.endReason = reason
		s.closing = true
	}
	s.endOnce.Do(func() {
		close(s.ended)
		s.cancel()
	})
}

// readCommands reads command lines from the client until its connection
// ends, and hands each to the session. Telnet sequences (IAC IP, IAC DM of
// an ABOR) are removed here, so the session sees plain commands.
func (s *session) readCommands() {
	lr := rewrite.NewLineReader(s.client, s.cfg.MaxLineLength)
	var sniff proxyHeaderSniffer
	for {
		line, err := lr.ReadLine()
		var ev clientEvent
		switch {
		case errors.Is(err, rewrite.ErrLineTooLong):
			ev.err = err
		case err != nil:
			ev.err, ev.fatal = err, true
		case sniff.untrusted(line):
			ev.err, ev.fatal = errUntrustedProxyHeader, true
		default:
			line = rewrite.StripTelnet(line)
			if len(line) == 0 {
				continue
			}
			ev.cmd, ev.err = rewrite.ParseCommand(line)
		}
		s.mu.Lock()
		s.onCommand(ev)
		closing, wait := s.closing, s.readerWait
		s.readerWait = nil
		s.mu.Unlock()
		if closing || ev.fatal {
			return
		}
		if wait != nil {
			// AUTH TLS: read nothing more until it is decided; once the
			// 234 is out, what follows is a TLS handshake.
			select {
			case ok := <-wait:
				if ok {
					if lr = s.startTLS(lr); lr == nil {
						return
					}
				}
			case <-s.ended:
				return
			}
		}
	}
}

// readReplies reads replies from the upstream, after its greeting, until
// its connection ends, and hands each chunk to the session. lr is the
// reader the greeting was read with: it may hold more already.
func (s *session) readReplies(lr *rewrite.LineReader) {
	newReader := func(lr *rewrite.LineReader) *rewrite.ReplyReader {
		rr := rewrite.NewReplyReader(lr, replyChunkLines, s.cfg.MaxReplyLines)
		rr.SetChunkBytes(replyChunkBytes)
		return rr
	}
	rr := newReader(lr)
	for {
		r, err := rr.ReadReply()
		s.mu.Lock()
		if err != nil {
			s.onUpstreamError(err)
		} else {
			s.onReply(r)
		}
		closing, handshake := s.closing, s.upHandshake
		s.mu.Unlock()
		if closing || err != nil {
			return
		}
		if handshake {
			if lr = s.upstreamHandshake(lr); lr == nil {
				return
			}
			rr = newReader(lr)
		}
	}
}

// A long multi-line reply is read and relayed in chunks of at most this
// many lines or bytes, so it never sits in memory whole.
const (
	replyChunkLines = 64
	replyChunkBytes = 64 << 10
)

// onCommand handles one event from the client.
func (s *session) onCommand(ev clientEvent) {
	if s.closing {
		return
	}
	if ev.err != nil {
		switch {
		case errors.Is(ev.err, errUntrustedProxyHeader):
			s.log.Warn().Err(ev.err).Msg("PROXY header refused")
			s.abortSession("untrusted PROXY header", replyBadProxyHeader)
		case ev.fatal:
			if errors.Is(ev.err, io.EOF) || errors.Is(ev.err, net.ErrClosed) {
				s.log.Debug().Msg("client closed the control connection")
			} else {
				s.log.Info().Err(ev.err).Msg("client control connection ended")
			}
			s.end("client closed")
		case errors.Is(ev.err, rewrite.ErrLineTooLong):
			s.overlong++
			s.log.Warn().Int("max", s.cfg.MaxLineLength).Int("count", s.overlong).Msg("command line too long")
			if s.overlong >= maxOverlongCommands {
				s.abortSession("overlong commands", replyTooManyLong)
				return
			}
			s.enqueue(queued{local: replyFor(ev.err)})
		default:
			s.log.Warn().Err(ev.err).Msg("malformed command")
			s.enqueue(queued{local: replyFor(ev.err)})
		}
		return
	}
	s.commands++
	cmd := ev.cmd
	if e := s.log.Debug(); e.Enabled() {
		e.Str("cmd", cmd.Redacted()).Msg("command")
	}
	s.active = time.Now()
	if cmd.Verb == "AUTH" && s.tlsOffered() && !s.tlsClient {
		s.authWait = make(chan bool, 1)
		s.readerWait = s.authWait
	}
	if x := s.transferring(); x != nil && len(s.inbox) == 0 {
		// RFC 959 section 4.1.3: ABOR and STAT are answered during a
		// transfer, before its completion reply.
		switch {
		case cmd.Verb == "ABOR":
			s.abortTransfer(x)
			return
		case cmd.Verb == "STAT" && cmd.Arg == "":
			s.writeClientLine(x.xfer.status())
			return
		}
	}
	s.enqueue(queued{cmd: cmd})
}

func (s *session) onUpstreamError(err error) {
	switch {
	case s.quitting || s.saw421:
		s.log.Debug().Msg("upstream closed the control connection")
		s.end("upstream closed")
	case errors.Is(err, rewrite.ErrBadReply), errors.Is(err, rewrite.ErrReplyTooLong), errors.Is(err, rewrite.ErrLineTooLong):
		s.log.Warn().Err(err).Msg("malformed reply from upstream")
		s.abortSession("malformed upstream reply", replyUpstreamBad)
	default:
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			s.log.Warn().Msg("upstream closed the control connection")
		} else {
			s.log.Warn().Err(err).Msg("upstream control connection failed")
		}
		s.abortSession("upstream gone", replyUpstreamGone)
	}
}

// transferDone records a finished data transfer; its goroutine calls it
// once, also when the session is ending, so every transfer is counted and
// logged.
func (s *session) transferDone(t *transfer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t.finished = true
	delete(s.xfers, t)
	if s.setup == t {
		// The data channel is gone before any command used it (its
		// upstream end could not be reached, say): the next transfer
		// command is answered here rather than left to an upstream that
		// waits for a connection that will not come.
		s.setup = nil
		s.setupErr = t.err
		if s.setupErr == nil {
			s.setupErr = errNoConnection
		}
	}
	if t.claimed {
		s.transfers++
		if t.kernel.Load() {
			s.kernelTransfers++
		}
	}
	s.bytesDown += t.down
	s.bytesUp += t.up
	s.observeTransfer(t)
	ev := s.log.Info()
	if t.err != nil && t.claimed {
		ev = s.log.Warn().Err(t.err)
	} else if t.err != nil {
		ev = s.log.Debug().Err(t.err)
	}
	if s.closing && t.claimed {
		ev = ev.Str("ended_by", s.endReason)
	}
	if t.tlsConf != nil && t.tlsVersion != 0 {
		ev = ev.Str("tls", tls.VersionName(t.tlsVersion)).Bool("resumed", t.tlsResumed)
	}
	if t.upTLSConf != nil {
		ev = ev.Bool("upstream_tls", true).Bool("upstream_resumed", t.upTLSResumed)
	}
	if t.kernel.Load() {
		// The kernel carried the data: its counts are conntrack's, the
		// payload of the packets as the kernel saw them.
		ev = ev.Str("data_path", "kernel").Str("counted_by", "conntrack")
	}
	ev.Str("mode", t.clientMode()).
		Str("upstream_mode", t.upstreamMode()).
		Str("cmd", t.verb).
		Int64("down", t.down).
		Int64("up", t.up).
		Dur("duration", t.duration).
		Msg("transfer")
	if !s.closing {
		s.active = time.Now()
		s.onTransferDone(t)
	}
}

// writeClientLine sends one reply line made by the proxy.
func (s *session) writeClientLine(line string) {
	s.writeClientReply([]string{line})
}

// writeClientReply sends reply lines to the client in one write.
func (s *session) writeClientReply(lines []string) {
	if s.closing || len(lines) == 0 {
		return
	}
	if s.handshaking {
		// Plain text now would land in the client's TLS handshake.
		s.log.Warn().Str("line", clip(lines[0])).Msg("reply during the TLS handshake dropped")
		return
	}
	b := s.wbuf[:0]
	for _, l := range lines {
		b = append(b, l...)
		b = append(b, '\r', '\n')
	}
	if cap(b) <= 4096 {
		s.wbuf = b
	}
	s.renewWriteDeadline(s.client, &s.clientWD)
	if _, err := s.client.Write(b); err != nil {
		s.log.Info().Err(err).Msg("writing to client failed")
		s.end("client write failed")
	}
}

// sendUpstream sends one command to the upstream.
func (s *session) sendUpstream(cmd rewrite.Command) {
	if s.closing {
		return
	}
	b := cmd.AppendWire(s.wbuf[:0])
	if cap(b) <= 4096 {
		s.wbuf = b
	}
	s.renewWriteDeadline(s.up, &s.upWD)
	if _, err := s.up.Write(b); err != nil {
		s.log.Warn().Err(err).Msg("writing to upstream failed")
		s.abortSession("upstream write failed", replyUpstreamGone)
	}
}

// renewWriteDeadline keeps at least half of WriteTimeout ahead of a write
// on c, whose deadline is *at.
func (s *session) renewWriteDeadline(c net.Conn, at *time.Time) {
	now := time.Now()
	if at.Sub(now) >= s.cfg.WriteTimeout/2 {
		return
	}
	*at = now.Add(s.cfg.WriteTimeout)
	c.SetWriteDeadline(*at)
}

func (s *session) setUser(name string) {
	s.user = name
	s.log = s.baseLog
	if name != "" {
		s.log = s.baseLog.With().Str("user", name).Logger()
	}
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
