package proxy

import (
	"errors"
	"strings"

	"github.com/ftpproxy/ftpproxy/rewrite"
)

// commandHandlers are the verbs the proxy does not simply forward. Every
// other verb goes to the upstream as it came, and its reply comes back as
// it came.
var commandHandlers map[string]func(*session, rewrite.Command)

func init() {
	commandHandlers = map[string]func(*session, rewrite.Command){
		"USER": (*session).cmdUSER,
		"QUIT": (*session).cmdQUIT,
		"PASV": (*session).cmdPASV,
		"EPSV": (*session).cmdEPSV,
		"PORT": (*session).cmdPORT,
		"EPRT": (*session).cmdEPRT,
		"ABOR": (*session).cmdABOR,
		"AUTH": (*session).cmdRefuseTLS,
		// Long addresses (RFC 1639) carry addresses the proxy would have
		// to rewrite; clients fall back to EPSV/EPRT or PASV/PORT.
		"LPRT": (*session).cmdNotImplemented,
		"LPSV": (*session).cmdNotImplemented,
	}
}

// transferVerbs are the commands that move data over a data connection,
// with the direction the data flows.
var transferVerbs = map[string]direction{
	"RETR": dirDown,
	"LIST": dirDown,
	"NLST": dirDown,
	"MLSD": dirDown,
	"STOR": dirUp,
	"STOU": dirUp,
	"APPE": dirUp,
}

func (s *session) cmdUSER(cmd rewrite.Command) {
	s.setUser(cmd.Arg)
	s.forward(cmd, &pending{cmd: cmd})
}

func (s *session) cmdQUIT(cmd rewrite.Command) {
	s.quitting = true
	if s.upstreamStuck() {
		// The upstream still works on a command the proxy has already
		// answered (it waits for a data connection that will not come)
		// and would answer QUIT only after that: say goodbye here.
		s.writeClientLine("221 Goodbye.")
		s.end("quit")
		return
	}
	s.forward(cmd, &pending{cmd: cmd})
}

// upstreamStuck reports whether every reply still due from the upstream
// belongs to a command the proxy has answered itself.
func (s *session) upstreamStuck() bool {
	for _, p := range s.queue {
		if !p.answered {
			return false
		}
	}
	return len(s.queue) > 0
}

// cmdRefuseTLS answers AUTH TLS and AUTH SSL: the proxy does not offer TLS
// yet, and passing AUTH on would start a TLS handshake it cannot follow.
// Clients such as lftp carry on in plain FTP after this refusal.
func (s *session) cmdRefuseTLS(cmd rewrite.Command) {
	s.replyLocal(replyNoTLS)
}

func (s *session) cmdNotImplemented(cmd rewrite.Command) {
	s.replyLocal("502 " + cmd.Verb + " is not implemented; use EPSV/EPRT or PASV/PORT.")
}

// cmdABOR stops the data relay at once, so that no byte of the aborted file
// reaches the client, and lets the upstream answer (426 then 226, or 225)
// as RFC 959 section 4.1.3 describes.
func (s *session) cmdABOR(cmd rewrite.Command) {
	s.dropSetup()
	for t := range s.xfers {
		if t.claimed {
			t.abort()
		}
	}
	s.forward(cmd, &pending{cmd: cmd})
}

// cmdTransfer forwards a transfer command and ties it to the data channel
// prepared by the last PASV, EPSV, PORT or EPRT.
func (s *session) cmdTransfer(cmd rewrite.Command, dir direction) {
	if err := s.setupErr; err != nil && s.setup == nil {
		s.setupErr = nil
		s.log.Info().Err(err).Str("cmd", cmd.Verb).Msg("transfer refused: its data channel is gone")
		s.replyLocal(replyFor(errDataFailed))
		return
	}
	p := &pending{cmd: cmd}
	if t := s.setup; t != nil {
		s.setup = nil
		t.claim(cmd.Verb, dir)
		s.busy++
		p.xfer = t
	}
	s.forward(cmd, p)
}

// dropSetup discards a data channel that no command has used.
func (s *session) dropSetup() {
	if t := s.setup; t != nil {
		s.setup = nil
		t.abort()
	}
}

// filterFEAT hides the features the proxy does not pass through (RFC 2389
// section 3.2: feature lines start with a space).
func filterFEAT(lines []string) []string {
	out := lines[:0:0]
	for _, l := range lines {
		if !rewrite.HideFeature(l) {
			out = append(out, l)
		}
	}
	return out
}

// epsvRefused reports whether an upstream reply to EPSV means "not
// supported" rather than "not now" (RFC 2428 section 3, RFC 959 section
// 4.2): the proxy then asks with PASV.
func epsvRefused(code int) bool {
	switch code {
	case 500, 501, 502, 504, 522:
		return true
	}
	return false
}

var errNotOwnAddress = errors.New("proxy: data address is not the client's own")
var errPrivilegedPort = errors.New("proxy: data port below 1024")
var errNoPassivePort = errors.New("proxy: no free passive port")
var errAfterEPSVAll = errors.New("proxy: only EPSV is allowed after EPSV ALL")
var errPASVOverIPv6 = errors.New("proxy: PASV cannot carry an IPv6 address")
var errDataFailed = errors.New("proxy: data connection failed")

func eq(a, b string) bool { return strings.EqualFold(a, b) }
