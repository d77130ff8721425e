package proxy

import (
	"errors"
	"net/netip"
	"strconv"
	"time"

	"github.com/ftpproxy/ftpproxy/rewrite"
)

// A session is a small state machine. Its phase says where the login
// stands; its exchange says what the upstream is working on. Client
// commands wait in the inbox and go to the upstream one at a time: the
// next one is dispatched only once the exchange before it has ended, that
// is, once the upstream has sent its final reply and the client has had
// its own. RFC 959 lets a client send its next command before the reply to
// the last one (pipelining), but the proxy's own work depends on the
// replies: a PASV's 227 makes the data channel a RETR uses, a PASS's 530
// counts towards a ban. Commands the proxy answers itself pass the same
// gate, so replies always reach the client in the order of its commands.
//
// Two commands act at once on a running transfer instead of waiting: ABOR
// (the proxy ends the transfer and answers 426 and 226 itself, whatever
// the server does with ABOR) and STAT without an argument (the proxy
// reports the transfer's progress), as RFC 959 section 4.1.3 has the
// server answer them during a transfer.

// phase is where the session stands with the login.
type phase int

const (
	phaseGreeting phase = iota // waiting for the upstream's 220
	phaseLogin                 // greeted, not logged in
	phaseReady                 // logged in
)

var phaseNames = [...]string{"greeting", "login", "ready"}

func (p phase) String() string { return phaseNames[p] }

// kind says what an exchange with the upstream is for, and so what
// happens to its replies.
type kind int

const (
	kindGreeting    kind = iota // connecting to the upstream and reading its greeting (see connect)
	kindRelay                   // the reply goes to the client as it comes
	kindFEAT                    // relayed without the features the proxy does not offer
	kindLogin                   // USER, PASS, ACCT: relayed; the outcome moves the phase
	kindREIN                    // relayed; a 220 takes the session back to before the login
	kindQuit                    // relayed; the session ends with a 221
	kindPassive                 // the proxy's PASV or EPSV: the client gets the proxy's own answer
	kindActive                  // the proxy's PORT or EPRT: the client gets the proxy's own answer
	kindTransfer                // RETR, STOR, LIST...: the final reply is held until the relay has delivered
	kindUpstreamTLS             // the proxy's own AUTH TLS, PBSZ 0, PROT P to the upstream: nothing reaches the client
)

// exchange is one command the upstream is working on, with what the proxy
// needs to handle its replies.
type exchange struct {
	kind kind
	cmd  rewrite.Command // the client's command (none for the greeting)

	// done: the upstream's final reply has arrived whole. answered: the
	// client has had its final reply. The exchange ends when both hold;
	// when the proxy answers first, what the upstream still says about
	// the command is dropped.
	done, answered bool

	prelims int       // preliminary (1xx) replies seen whole
	held    heldReply // the final reply, while it is read or held

	// kindPassive and kindActive.
	req      dataRequest
	epsv     bool           // kindPassive: EPSV was sent, not PASV
	dataAddr netip.AddrPort // kindPassive: the upstream's data address, once read
	listener *endpoint      // kindActive: the proxy's listener for the upstream

	// kindLogin in forward mode: the server's password, sent when the
	// server answers the proxy's USER with 331.
	followPass string

	// kindTransfer.
	xfer        *transfer
	noCompleter bool // the final reply was a second 1xx (a server bug): no real completion reply
}

// queued is a client command waiting for its turn, or the proxy's answer
// to a line it could not take as a command.
type queued struct {
	cmd   rewrite.Command
	local string // if set, the reply to send instead of dispatching cmd
}

// size is what the entry counts against the backlog bound.
func (q queued) size() int { return len(q.cmd.Verb) + len(q.cmd.Arg) + len(q.local) + 2 }

// maxBacklog bounds the bytes of commands a client may send ahead of their
// replies. A client pipelining a whole session stays well within it; one
// that floods past it (thousands of login attempts in one write) is
// closed.
const maxBacklog = 64 << 10

const replyBacklog = "421 Too many commands sent ahead of their replies: closing the control connection."

// enqueue puts a client command (or a local answer) behind the ones
// waiting, then dispatches what may go now.
func (s *session) enqueue(q queued) {
	s.backlog += q.size()
	if s.backlog > maxBacklog {
		s.log.Warn().Int("bytes", s.backlog).Int("max", maxBacklog).Int("commands", len(s.inbox)).Msg("client sent too many commands ahead of their replies")
		s.abortSession("command backlog", replyBacklog)
		return
	}
	s.inbox = append(s.inbox, q)
	s.advance()
}

// advance dispatches waiting commands while no exchange is open.
func (s *session) advance() {
	for !s.closing && !s.handshaking && len(s.inbox) > 0 {
		if x := s.cur; x != nil {
			if x.answered && s.inbox[0].cmd.Verb == "QUIT" {
				// The upstream still works on a command the proxy has
				// answered (it waits for a data connection that will not
				// come) and would answer QUIT only after that.
				s.writeClientLine("221 Goodbye.")
				s.end("quit")
			}
			return
		}
		q := s.inbox[0]
		s.inbox[0] = queued{}
		s.inbox = s.inbox[1:]
		if len(s.inbox) == 0 {
			s.inbox = s.inbox[:0:0]
		}
		s.backlog -= q.size()
		if q.local != "" {
			s.writeClientLine(q.local)
			continue
		}
		s.dispatch(q.cmd)
	}
}

// dispatch handles one client command whose turn has come: the proxy
// answers it, or it opens an exchange with the upstream.
func (s *session) dispatch(cmd rewrite.Command) {
	if s.fwd != nil {
		if s.up == nil {
			s.forwardCommand(cmd)
			return
		}
		var ok bool
		if cmd, ok = s.forwardConnected(cmd); !ok {
			return
		}
	}
	if h := commandHandlers[cmd.Verb]; h != nil {
		h(s, cmd)
		return
	}
	if dir, ok := transferVerbs[cmd.Verb]; ok {
		s.cmdTransfer(cmd, dir)
		return
	}
	s.open(&exchange{kind: kindRelay, cmd: cmd}, cmd)
}

// open sends line to the upstream and makes x the open exchange.
func (s *session) open(x *exchange, line rewrite.Command) {
	s.cur = x
	s.sendUpstream(line)
}

// answer sends the proxy's own final reply to the command being
// dispatched.
func (s *session) answer(line string) { s.writeClientLine(line) }

// settle ends the open exchange once the upstream and the client are both
// done with it, and lets the next command go.
func (s *session) settle() {
	if x := s.cur; x != nil && x.done && x.answered {
		s.cur = nil
		s.advance()
	}
}

// onReply handles one chunk of an upstream reply.
func (s *session) onReply(r rewrite.Reply) {
	if r.Code == 421 {
		s.saw421 = true
	}
	x := s.cur
	if s.skipping || x == nil || x.done {
		s.unsolicited(r)
		return
	}
	// A transfer has one preliminary reply; a second one is taken as its
	// final reply (see onTransferReply).
	final := r.Final() || x.kind == kindTransfer && x.prelims > 0
	if !final {
		if !r.More {
			x.prelims++
		}
		if !x.answered {
			s.onPreliminary(x, r)
		}
		return
	}
	if x.answered {
		// The client has its answer from the proxy already.
		if !r.More {
			s.log.Debug().Int("code", r.Code).Str("cmd", x.cmd.Verb).Msg("upstream reply to a command the proxy answered dropped")
			x.done = true
			s.settle()
		}
		return
	}
	switch {
	case x.kind == kindLogin && x.followPass != "":
		s.onFollowPassReply(x, r)
		return
	}
	switch x.kind {
	case kindPassive:
		s.onPassiveReply(x, r)
	case kindActive:
		s.onActiveReply(x, r)
	case kindTransfer:
		s.onTransferReply(x, r)
	case kindUpstreamTLS:
		s.onUpstreamTLSReply(x, r)
	default:
		s.onRelayReply(x, r)
	}
}

// unsolicited drops a reply no command asked for: passed on, it would be
// taken as the answer to the client's next command (and a bare LF inside
// an answered reply is enough to make one). A 421 is the exception: the
// server is closing, and the client is told why.
func (s *session) unsolicited(r rewrite.Reply) {
	if r.Code == 421 {
		s.writeClientReply(r.Lines)
		return
	}
	if !s.skipping {
		s.log.Warn().Int("code", r.Code).Str("line", clip(r.Lines[0])).Msg("unsolicited reply from upstream dropped")
	}
	s.skipping = r.More
}

// onPreliminary relays a 1xx reply (150 before a transfer, 120 before a
// greeting). The proxy's own PASV/EPSV/PORT/EPRT have none.
func (s *session) onPreliminary(x *exchange, r rewrite.Reply) {
	if x.kind == kindPassive || x.kind == kindActive || x.kind == kindUpstreamTLS {
		s.log.Warn().Int("code", r.Code).Str("cmd", x.cmd.Verb).Msg("preliminary reply to a command of the proxy's dropped")
		return
	}
	s.writeClientReply(r.Lines)
}

// onRelayReply relays a final reply and follows what it changes.
func (s *session) onRelayReply(x *exchange, r rewrite.Reply) {
	lines := r.Lines
	if x.kind == kindFEAT {
		lines = filterFEAT(lines)
		if r.More {
			x.prelims = -1 // marks a FEAT reply of several chunks
		}
		if !r.More && s.tlsOffered() && r.Code == 211 && (len(lines) > 1 || x.prelims < 0) {
			// The proxy's own features go before the reply's last line.
			last := lines[len(lines)-1]
			lines = append(append(lines[:len(lines)-1:len(lines)-1], featTLS...), last)
		}
	}
	// A failed login is counted before its 530 reaches the client: a
	// client that connects again the moment it reads the reply meets the
	// ban.
	banned := false
	if !r.More && x.kind == kindLogin && failedLogin(x.cmd.Verb, r.Code) {
		banned = s.srv.adm.bans.failed(s.clientAP.Addr(), time.Now())
	}
	s.writeClientReply(lines)
	if r.More {
		return
	}
	x.done, x.answered = true, true
	switch x.kind {
	case kindLogin:
		s.afterLogin(x.cmd.Verb, r.Code, banned)
	case kindREIN:
		if r.Code == 220 {
			s.reinitialize()
		}
	case kindQuit:
		if r.Code == 221 {
			// The session is over; an upstream slow to close must not
			// keep it open.
			s.end("quit")
		}
	}
	s.settle()
}

// failedLogin reports whether code, the final reply to verb, is a failed
// login attempt (RFC 959 section 5.4: a 530 to PASS or ACCT).
func failedLogin(verb string, code int) bool {
	return code == 530 && (verb == "PASS" || verb == "ACCT")
}

// afterLogin follows the login state on the final reply to USER, PASS or
// ACCT (RFC 959 section 5.4: 230 and 232 log in; 331 and 332 ask for
// more; a 530 to PASS or ACCT is a failed attempt, which the caller has
// counted: banned says the count banned the client's address).
func (s *session) afterLogin(verb string, code int, banned bool) {
	switch {
	case code == 230 || code == 232:
		if s.phase != phaseReady {
			s.phase = phaseReady
			s.loginTimer.Stop()
			s.log.Info().Msg("logged in")
			s.cfg.Metrics.login(true)
		}
	case failedLogin(verb, code):
		s.cfg.Metrics.login(false)
		if banned {
			s.endBanned()
			return
		}
		s.log.Info().Msg("login failed")
	}
}

// loginFailed counts a failed login (or a refused forward-mode
// destination) against the client's address; when that bans it, the
// session ends with 421 and loginFailed reports true.
func (s *session) loginFailed() bool {
	if !s.srv.adm.bans.failed(s.clientAP.Addr(), time.Now()) {
		return false
	}
	s.endBanned()
	return true
}

// endBanned ends the session of a client whose address a failed login
// has just banned.
func (s *session) endBanned() {
	s.log.Warn().Int("failures", s.cfg.MaxLoginFailures).Dur("ban", s.cfg.BanDuration).Msg("address banned after failed logins")
	s.abortSession("banned", replyFor(errBanned))
}

// reinitialize takes the session back to where it was after the greeting
// (REIN, RFC 959 section 4.1.1): no user, no data channel, EPSV ALL
// forgotten, the login timer running again.
func (s *session) reinitialize() {
	if s.phase == phaseReady {
		s.log.Info().Msg("session reinitialized")
	}
	s.phase = phaseLogin
	s.setUser("")
	s.epsvAll = false
	s.dropSetup()
	s.loginTimer.Reset(s.cfg.LoginTimeout)
}

// onPassiveReply reads the upstream's answer to the proxy's PASV or EPSV.
// The reply may be long (multi-line, and hostile): the address is looked
// for line by line as the chunks come, and only a bounded part is kept for
// relaying a refusal.
func (s *session) onPassiveReply(x *exchange, r rewrite.Reply) {
	want := 227
	if x.epsv {
		want = 229
	}
	if r.Code == want && !x.dataAddr.IsValid() {
		for _, l := range r.Lines {
			if ap, err := s.upstreamPassiveAddr(l, x.epsv); err == nil {
				x.dataAddr = ap
				break
			}
		}
	}
	x.held.add(r)
	if r.More {
		return
	}
	switch {
	case x.epsv && epsvRefused(r.Code) && s.upAP.Addr().Is4():
		s.log.Debug().Int("code", r.Code).Msg("upstream refused EPSV; asking with PASV")
		s.upNoEPSV = true
		x.epsv = false
		x.held = heldReply{}
		s.sendUpstream(rewrite.Command{Verb: "PASV"})
		return
	case r.Code != want:
		s.writeClientReply(x.held.lines()) // the upstream said no (530, 425...): pass it on
	case !x.dataAddr.IsValid():
		s.log.Warn().Int("code", r.Code).Str("reply", clip(x.held.first())).Msg("malformed passive reply from upstream")
		s.writeClientLine("425 Can't open data connection: the server's passive reply was malformed.")
	default:
		s.completeData(x.req, endpoint{dialTo: x.dataAddr, dialFrom: s.upLocal.Addr()}, nil)
	}
	x.done, x.answered = true, true
	s.settle()
}

// onActiveReply reads the upstream's answer to the proxy's PORT or EPRT.
func (s *session) onActiveReply(x *exchange, r rewrite.Reply) {
	x.held.add(r)
	if r.More {
		return
	}
	up := x.listener
	x.listener = nil
	if r.Code/100 != 2 {
		up.close()
		s.writeClientReply(x.held.lines())
	} else {
		s.completeData(x.req, *up, x.held.lines())
	}
	x.done, x.answered = true, true
	s.settle()
}

// onTransferReply holds a transfer's completion reply until the data relay
// has delivered its last byte: a client that sees 226 early may read a
// short file.
func (s *session) onTransferReply(x *exchange, r rewrite.Reply) {
	if !r.Final() && !x.noCompleter {
		// A second preliminary reply: pure-ftpd sends its transfer
		// statistics with code 150 and no completion reply at all when
		// the client ends the data connection early. Taken as the final
		// reply, it keeps the session in step.
		s.log.Warn().Int("code", r.Code).Str("line", clip(r.Lines[0])).Msg("second preliminary reply to a transfer taken as its completion")
		x.noCompleter = true
	}
	x.held.add(r)
	if r.More {
		return
	}
	x.done = true
	if r.Code >= 400 || x.noCompleter {
		// The transfer failed upstream: nothing more will flow, and a
		// data connection the upstream never served would wait forever.
		x.xfer.abort()
	}
	if x.xfer.finished {
		s.releaseHeld(x)
	} else {
		x.xfer.upstreamFinished()
	}
}

// releaseHeld sends a held completion reply once the relay is over.
func (s *session) releaseHeld(x *exchange) {
	t := x.xfer
	lines := x.held.lines()
	switch {
	case x.noCompleter && t.err != nil:
		lines = []string{replyTransferFailed}
	case x.noCompleter:
		lines = []string{"451 Transfer ended without a completion reply from the server."}
	case errors.Is(t.err, errDataTLS) || errors.Is(t.err, errDataNotResumed):
		s.log.Warn().Err(t.err).Int("upstream_code", x.held.code).Msg("TLS data connection refused; reply replaced")
		lines = []string{replyFor(t.err)}
	case t.err != nil && t.err != errNoConnection && x.held.code/100 == 2:
		// The upstream finished, but the relay did not deliver every
		// byte: a success reply now would make a truncated file look
		// whole.
		s.log.Warn().Err(t.err).Int("upstream_code", x.held.code).Msg("transfer failed at the proxy; success reply replaced")
		lines = []string{replyTransferFailed}
	}
	s.writeClientReply(lines)
	x.answered = true
	s.settle()
}

// onTransferDone follows a finished data transfer: its held completion
// reply goes out, or, if the upstream waits for a data connection the
// proxy could not open, the client is told now rather than when the
// upstream gives up.
func (s *session) onTransferDone(t *transfer) {
	x := s.cur
	if x == nil || x.xfer != t || x.answered {
		return
	}
	switch {
	case x.done:
		s.releaseHeld(x)
	case t.err != nil && !t.upConnected:
		x.answered = true
		err := error(errDataFailed)
		if errors.Is(t.err, errDataTLS) || errors.Is(t.err, errDataNotResumed) {
			err = t.err
		}
		s.writeClientLine(replyFor(err))
	}
}

// transferring returns the open exchange if it is a transfer whose reply
// the client still waits for.
func (s *session) transferring() *exchange {
	if x := s.cur; x != nil && x.kind == kindTransfer && !x.answered {
		return x
	}
	return nil
}

// abortTransfer answers an ABOR sent during a transfer: the relay is reset
// at once, so no byte of the aborted file reaches the client and the
// upstream sees an aborted transfer, not the end of an upload; the client
// gets 426 for the transfer and 226 for the ABOR (RFC 959 section 4.1.3).
// The upstream is never sent the ABOR: servers differ in how they take it
// (as urgent data, with Telnet IP, or not during a transfer at all), and
// the reset makes every one of them end the transfer.
func (s *session) abortTransfer(x *exchange) {
	x.xfer.abort()
	x.answered = true
	s.log.Info().Str("cmd", x.cmd.Verb).Msg("transfer aborted by the client")
	s.writeClientReply([]string{replyTransferFailed, "226 ABOR command successful."})
	s.settle()
}

// heldReply keeps a final reply the proxy reads whole before acting on it,
// with bounded memory whatever the upstream sends: the first lines and the
// last one. The lines in between are counted, and a continuation line says
// how many were left out.
type heldReply struct {
	code     int
	kept     []string
	bytes    int
	overflow bool   // kept is full: later lines pass through last
	last     string // the latest line past the bound
	dropped  int    // lines past the bound other than last
}

const (
	maxHeldLines = 32
	maxHeldBytes = 32 << 10
)

func (h *heldReply) add(r rewrite.Reply) {
	h.code = r.Code
	for _, l := range r.Lines {
		if !h.overflow && (len(h.kept) == 0 || len(h.kept) < maxHeldLines-1 && h.bytes+len(l) <= maxHeldBytes) {
			h.kept = append(h.kept, l)
			h.bytes += len(l)
			continue
		}
		if h.overflow {
			h.dropped++
		}
		h.overflow, h.last = true, l
	}
}

// first returns the reply's first line.
func (h *heldReply) first() string {
	if len(h.kept) == 0 {
		return ""
	}
	return h.kept[0]
}

// lines returns the reply to relay: a well-formed RFC 959 reply, shortened
// if it had to be.
func (h *heldReply) lines() []string {
	if !h.overflow {
		return h.kept
	}
	out := h.kept
	if h.dropped > 0 {
		out = append(out, " ("+strconv.Itoa(h.dropped)+" lines left out by the proxy)")
	}
	return append(out, h.last)
}
