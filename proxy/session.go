package proxy

import (
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

// replyEvent is one chunk of an upstream reply, or the error that ended the
// upstream's control connection.
type replyEvent struct {
	reply rewrite.Reply
	err   error
}

// pending is a command whose final reply the client has not seen yet.
type pending struct {
	cmd rewrite.Command

	// local, if non-empty, is a reply the proxy makes itself: no upstream
	// reply belongs to this entry.
	local string

	// greeting marks the upstream's 220 that opens the session.
	greeting bool

	// onFinal, if set, consumes the whole final reply and answers the client
	// itself (PASV, EPSV, PORT, EPRT). It returns false when it has sent the
	// upstream another command and waits for that reply (EPSV to PASV
	// fallback).
	onFinal func(rewrite.Reply) bool

	// listener is the proxy's listener for the upstream's data connection
	// while the upstream considers a PORT/EPRT; closed if the session ends.
	listener *endpoint

	// xfer is the data transfer a transfer command uses; its final reply is
	// held until the data relay has delivered its last byte.
	xfer     *transfer
	answered bool // the proxy has answered instead of the upstream
	holding  bool // a final reply is being held
	complete bool // the held reply has arrived whole
	heldCode int
	held     []string
}

type session struct {
	srv *Server
	cfg *Config
	id  uint64

	baseLog zerolog.Logger // session, client, upstream
	log     zerolog.Logger // baseLog plus the user once known

	client   net.Conn
	clientAP netip.AddrPort // the client's address (from a PROXY header if there is one)
	dialedAP netip.AddrPort // the address the client dialed (likewise)
	viaAP    netip.AddrPort // the trusted load balancer or proxy it came through, if any
	localAP  netip.AddrPort // the proxy's end of the client's control connection
	up       net.Conn
	upAP     netip.AddrPort // the upstream's control address
	upLocal  netip.AddrPort // the proxy's end of the upstream control connection

	cmds     chan clientEvent
	replies  chan replyEvent
	xferDone chan *transfer
	done     chan struct{}  // closed when the session loop ends
	wg       sync.WaitGroup // readers and data transfers

	queue    []*pending
	setup    *transfer              // data channel announced, not yet claimed by a command
	setupErr error                  // why the last announced data channel ended unclaimed
	xfers    map[*transfer]struct{} // every transfer not yet reported done
	busy     int                    // claimed transfers not yet done
	closing  bool
	quitting bool // QUIT was sent: the upstream closing is the normal end
	saw421   bool // the upstream has said 421 itself
	epsvAll  bool // the client sent EPSV ALL (RFC 2428 section 4)
	upNoEPSV bool // the upstream refused EPSV: use PASV from now on
	overlong int
	user     string
	loggedIn bool

	started             time.Time
	commands, transfers int
	bytesDown, bytesUp  int64
	endReason           string
	wbuf                []byte
}

func newSession(srv *Server, c net.Conn) *session {
	s := &session{
		srv:      srv,
		cfg:      &srv.cfg,
		id:       srv.nextID.Add(1),
		client:   c,
		clientAP: addrPortOf(c.RemoteAddr()),
		localAP:  addrPortOf(c.LocalAddr()),
		cmds:     make(chan clientEvent),
		replies:  make(chan replyEvent),
		xferDone: make(chan *transfer),
		done:     make(chan struct{}),
		xfers:    make(map[*transfer]struct{}),
		started:  time.Now(),
	}
	s.dialedAP = s.localAP
	s.setLogger(netip.AddrPort{})
	return s
}

// setLogger builds the session's logger: one per session, with constant
// field names, so every line can be tied to its session and client. via is
// the load balancer the client came through, if any.
func (s *session) setLogger(via netip.AddrPort) {
	ctx := s.srv.cfg.Logger.With().
		Uint64("session", s.id).
		Str("client", s.clientAP.String())
	if via.IsValid() {
		ctx = ctx.Str("via", via.String())
	}
	s.baseLog = ctx.Str("upstream", s.cfg.Upstream).Logger()
	s.log = s.baseLog
}

// serve runs the session to its end and releases everything it holds.
func (s *session) serve() {
	defer s.finish()
	setOOBInline(s.client, s.log)
	if nat.Contains(s.cfg.ProxyProtocolFrom, s.clientAP.Addr()) && !s.readProxyHeader() {
		return
	}
	release, err := s.srv.adm.admit(s.clientAP.Addr(), time.Now())
	if err != nil {
		s.log.Warn().Err(err).Msg("session refused")
		s.endReason = "refused"
		s.writeClientLine(replyFor(err))
		return
	}
	defer release()
	s.log.Info().Str("local", s.dialedAP.String()).Msg("session opened")

	d := net.Dialer{Timeout: s.cfg.DialTimeout}
	up, err := d.Dial("tcp", s.cfg.Upstream)
	if err != nil {
		s.log.Warn().Err(err).Msg("upstream unreachable")
		s.endReason = "upstream unreachable"
		s.writeClientLine(replyUpstreamDown)
		return
	}
	s.up = up
	s.upAP = addrPortOf(up.RemoteAddr())
	s.upLocal = addrPortOf(up.LocalAddr())
	if v := s.cfg.UpstreamProxyProtocol; v != 0 {
		if err := writeProxyHeader(up, v, s.clientAP, s.dialedAP, time.Now().Add(s.cfg.DialTimeout)); err != nil {
			s.log.Warn().Err(err).Msg("upstream refused the PROXY header")
			s.endReason = "upstream unreachable"
			s.writeClientLine(replyUpstreamDown)
			return
		}
	}

	s.queue = append(s.queue, &pending{greeting: true})
	s.wg.Go(s.readCommands)
	s.wg.Go(s.readReplies)

	greet := time.NewTimer(s.cfg.GreetingTimeout)
	defer greet.Stop()
	idle := time.NewTimer(s.cfg.IdleTimeout)
	defer idle.Stop()
	login := time.NewTimer(s.cfg.LoginTimeout)
	defer login.Stop()

	for !s.closing {
		// While the head of the queue is a completion reply held for its
		// data relay, the replies after it wait in the reader: each belongs
		// to a later command and must reach the client after the held one.
		replies := s.replies
		if len(s.queue) > 0 && s.queue[0].complete {
			replies = nil
		}
		select {
		case ev := <-s.cmds:
			idle.Reset(s.cfg.IdleTimeout)
			s.onCommand(ev)
		case ev := <-replies:
			s.onReply(ev)
			if len(s.queue) == 0 || !s.queue[0].greeting {
				greet.Stop()
			}
		case t := <-s.xferDone:
			idle.Reset(s.cfg.IdleTimeout)
			s.onTransferDone(t)
		case <-greet.C:
			if len(s.queue) > 0 && s.queue[0].greeting {
				s.log.Warn().Dur("timeout", s.cfg.GreetingTimeout).Msg("upstream sent no greeting")
				s.abortSession("greeting timeout", replyGreetTimeout)
			}
		case <-login.C:
			if !s.loggedIn {
				s.log.Info().Dur("timeout", s.cfg.LoginTimeout).Msg("no login in time")
				s.abortSession("login timeout", replyLoginTimeout)
			}
		case <-idle.C:
			if s.busy > 0 {
				idle.Reset(s.cfg.IdleTimeout)
				continue
			}
			s.log.Info().Dur("timeout", s.cfg.IdleTimeout).Msg("control connection idle")
			s.abortSession("idle timeout", replyIdleTimeout)
		case <-s.srv.force:
			s.abortSession("proxy shutting down", replyShuttingDown)
		}
	}
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
	close(s.done)
	for t := range s.xfers {
		t.abort()
	}
	s.client.Close()
	if s.up != nil {
		s.up.Close()
	}
	s.wg.Wait()
	for _, p := range s.queue {
		if p.listener != nil {
			p.listener.close()
		}
	}
	for t := range s.xfers {
		t.release() // transfers whose goroutine never started
	}
	s.log.Info().
		Str("reason", s.endReason).
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
	s.endReason = reason
	s.writeClientLine(reply)
	s.closing = true
}

func (s *session) end(reason string) {
	if !s.closing {
		s.endReason = reason
		s.closing = true
	}
}

// readCommands reads command lines from the client until its connection
// ends. Telnet sequences (IAC IP, IAC DM of an ABOR) are removed here, so
// the session sees plain commands.
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
		select {
		case s.cmds <- ev:
		case <-s.done:
			return
		}
		if ev.fatal {
			return
		}
	}
}

// readReplies reads replies from the upstream until its connection ends.
func (s *session) readReplies() {
	rr := rewrite.NewReplyReader(rewrite.NewLineReader(s.up, s.cfg.MaxLineLength), 64, s.cfg.MaxReplyLines)
	for {
		r, err := rr.ReadReply()
		select {
		case s.replies <- replyEvent{reply: r, err: err}:
		case <-s.done:
			return
		}
		if err != nil {
			return
		}
	}
}

// onCommand handles one event from the client.
func (s *session) onCommand(ev clientEvent) {
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
			s.replyLocal(replyFor(ev.err))
		default:
			s.log.Warn().Err(ev.err).Msg("malformed command")
			s.replyLocal(replyFor(ev.err))
		}
		return
	}
	s.commands++
	cmd := ev.cmd
	s.log.Debug().Str("cmd", cmd.Redacted()).Msg("command")
	if h := commandHandlers[cmd.Verb]; h != nil {
		h(s, cmd)
		return
	}
	if dir, ok := transferVerbs[cmd.Verb]; ok {
		s.cmdTransfer(cmd, dir)
		return
	}
	s.forward(cmd, &pending{cmd: cmd})
}

// forward sends cmd to the upstream and queues p for its reply.
func (s *session) forward(cmd rewrite.Command, p *pending) {
	s.sendUpstream(cmd.String())
	s.queue = append(s.queue, p)
}

// replyLocal queues a reply made by the proxy behind the replies still due
// from the upstream, and sends it as soon as it is at the head.
func (s *session) replyLocal(line string) {
	s.queue = append(s.queue, &pending{local: line})
	s.flushLocal()
}

// flushLocal sends the proxy's own replies that have reached the head of
// the queue.
func (s *session) flushLocal() {
	for len(s.queue) > 0 && s.queue[0].local != "" {
		s.writeClientLine(s.queue[0].local)
		s.pop()
	}
}

func (s *session) pop() {
	s.queue[0] = nil
	s.queue = s.queue[1:]
}

// onReply handles one chunk of an upstream reply.
func (s *session) onReply(ev replyEvent) {
	if ev.err != nil {
		s.onUpstreamError(ev.err)
		return
	}
	r := ev.reply
	if r.Code == 421 {
		s.saw421 = true
	}
	if len(s.queue) == 0 || s.queue[0].local != "" {
		// Unsolicited (a 421 before closing, say): pass it on.
		s.writeClientReply(r.Lines)
		return
	}
	p := s.queue[0]
	switch {
	case p.answered:
		// The proxy has already answered this command (its data
		// connection failed); the upstream's late replies to it are
		// dropped so the client sees one answer per command.
		s.log.Debug().Int("code", r.Code).Msg("upstream reply to an answered command dropped")
		if r.Final() && !r.More {
			s.pop()
			s.flushLocal()
		}
	case p.greeting:
		s.writeClientReply(r.Lines)
		if !r.More {
			s.pop()
			s.flushLocal()
		}
	case !r.Final():
		// A preliminary reply (150 before a transfer): relayed as it comes.
		s.writeClientReply(r.Lines)
	case p.onFinal != nil:
		p.held = append(p.held, r.Lines...)
		if r.More {
			return
		}
		full := rewrite.Reply{Code: r.Code, Lines: p.held}
		p.held = nil
		if p.onFinal(full) {
			s.pop()
			s.flushLocal()
		}
	case p.xfer != nil:
		// Hold the completion reply until the data relay has delivered its
		// last byte: a client that sees 226 early may read a short file.
		// (If the relay is over already, releaseHeld still checks it did
		// deliver everything.)
		p.holding = true
		p.heldCode = r.Code
		p.held = append(p.held, r.Lines...)
		if r.More {
			return
		}
		p.complete = true
		if r.Code >= 400 {
			// The transfer failed upstream: nothing more will flow, and a
			// data connection the upstream never served would wait forever.
			p.xfer.abort()
		}
		if p.xfer.finished {
			s.releaseHeld(p)
		} else {
			p.xfer.upstreamFinished()
		}
	default:
		lines := r.Lines
		if p.cmd.Verb == "FEAT" {
			lines = filterFEAT(lines)
		}
		s.writeClientReply(lines)
		if !r.More {
			s.pop()
			s.flushLocal()
			s.afterReply(p.cmd.Verb, r.Code)
		}
	}
}

// afterReply follows the session's state on the final replies that change
// it: login (230), failed login (530 to PASS), QUIT (221).
func (s *session) afterReply(verb string, code int) {
	switch {
	case code == 230 && (verb == "PASS" || verb == "USER"):
		if !s.loggedIn {
			s.loggedIn = true
			s.log.Info().Msg("logged in")
		}
	case verb == "PASS" && code == 530:
		if s.srv.adm.bans.failed(s.clientAP.Addr(), time.Now()) {
			s.log.Warn().Int("failures", s.cfg.MaxLoginFailures).Dur("ban", s.cfg.BanDuration).Msg("address banned after failed logins")
			s.abortSession("banned", replyFor(errBanned))
			return
		}
		s.log.Info().Msg("login failed")
	case verb == "QUIT" && code == 221:
		// The session is over; an upstream slow to close must not keep it
		// open.
		s.end("quit")
	}
}

// releaseHeld sends a held completion reply; p must be at the queue's head
// for that, otherwise it waits for the replies before it.
func (s *session) releaseHeld(p *pending) {
	for len(s.queue) > 0 && s.queue[0].complete {
		h := s.queue[0]
		if t := h.xfer; t != nil && t.err != nil && t.err != errNoConnection && h.heldCode/100 == 2 {
			// The upstream finished, but the relay did not deliver every
			// byte: a success reply now would make a truncated file look
			// whole.
			s.log.Warn().Err(t.err).Int("upstream_code", h.heldCode).Msg("transfer failed at the proxy; success reply replaced")
			h.held = []string{replyTransferFailed}
		}
		s.writeClientReply(h.held)
		s.pop()
		s.flushLocal()
	}
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

// onTransferDone records a finished data transfer and releases its held
// completion reply.
func (s *session) onTransferDone(t *transfer) {
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
		s.busy--
		s.transfers++
	}
	s.bytesDown += t.down
	s.bytesUp += t.up
	ev := s.log.Info()
	if t.err != nil && t.claimed {
		ev = s.log.Warn().Err(t.err)
	} else if t.err != nil {
		ev = s.log.Debug().Err(t.err)
	}
	ev.Str("mode", t.clientMode()).
		Str("upstream_mode", t.upstreamMode()).
		Str("cmd", t.verb).
		Int64("down", t.down).
		Int64("up", t.up).
		Dur("duration", t.duration).
		Msg("transfer")
	for i, p := range s.queue {
		if p.xfer != t {
			continue
		}
		switch {
		case p.complete:
			s.releaseHeld(p)
		case i == 0 && t.err != nil && !t.upConnected && !p.holding:
			// The upstream waits for a data connection the proxy could
			// not open; the client is told now, not when the upstream
			// gives up.
			p.answered = true
			s.writeClientLine(replyFor(errDataFailed))
		}
		break
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
	b := s.wbuf[:0]
	for _, l := range lines {
		b = append(b, l...)
		b = append(b, '\r', '\n')
	}
	if cap(b) <= 4096 {
		s.wbuf = b
	}
	s.client.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	if _, err := s.client.Write(b); err != nil {
		s.log.Info().Err(err).Msg("writing to client failed")
		s.end("client write failed")
	}
}

// sendUpstream sends one command line to the upstream.
func (s *session) sendUpstream(line string) {
	if s.closing {
		return
	}
	b := append(s.wbuf[:0], line...)
	b = append(b, '\r', '\n')
	s.wbuf = b
	s.up.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	if _, err := s.up.Write(b); err != nil {
		s.log.Warn().Err(err).Msg("writing to upstream failed")
		s.abortSession("upstream write failed", replyUpstreamGone)
	}
}

func (s *session) setUser(name string) {
	s.user = name
	s.log = s.baseLog.With().Str("user", name).Logger()
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
