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
		"PASS": (*session).cmdLogin,
		"ACCT": (*session).cmdLogin,
		"REIN": (*session).cmdREIN,
		"FEAT": (*session).cmdFEAT,
		"MODE": (*session).cmdMODE,
		"QUIT": (*session).cmdQUIT,
		"PASV": (*session).cmdPASV,
		"EPSV": (*session).cmdEPSV,
		"PORT": (*session).cmdPORT,
		"EPRT": (*session).cmdEPRT,
		"ABOR": (*session).cmdABOR,
		"AUTH": (*session).cmdAUTH,
		"PBSZ": (*session).cmdPBSZ,
		"PROT": (*session).cmdPROT,
		"CCC":  (*session).cmdCCC,
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
	if s.loginRefused() {
		return
	}
	s.setUser(cmd.Arg)
	s.open(&exchange{kind: kindLogin, cmd: cmd}, cmd)
}

func (s *session) cmdLogin(cmd rewrite.Command) {
	if s.loginRefused() {
		return
	}
	s.open(&exchange{kind: kindLogin, cmd: cmd}, cmd)
}

func (s *session) cmdREIN(cmd rewrite.Command) {
	if s.tlsClient {
		// The control connection cannot go back to plain text, and a
		// login over TLS must not be reset into one that is not.
		s.answer(replyREINOverTLS)
		return
	}
	s.open(&exchange{kind: kindREIN, cmd: cmd}, cmd)
}

func (s *session) cmdFEAT(cmd rewrite.Command) {
	s.open(&exchange{kind: kindFEAT, cmd: cmd}, cmd)
}

func (s *session) cmdQUIT(cmd rewrite.Command) {
	s.quitting = true
	s.open(&exchange{kind: kindQuit, cmd: cmd}, cmd)
}

func (s *session) cmdNotImplemented(cmd rewrite.Command) {
	s.answer("502 " + cmd.Verb + " is not implemented; use EPSV/EPRT or PASV/PORT.")
}

// cmdMODE passes on stream mode only. In block and compressed mode (RFC
// 959 section 3.4) a data connection may outlive the transfer and the end
// of a file is a marker, not the end of the connection, which the relay
// waits for.
func (s *session) cmdMODE(cmd rewrite.Command) {
	if !eq(strings.TrimSpace(cmd.Arg), "S") {
		s.answer("504 Only MODE S (stream) is supported through this proxy.")
		return
	}
	s.open(&exchange{kind: kindRelay, cmd: cmd}, cmd)
}

// cmdABOR answers an ABOR that arrives when no transfer runs (one that
// arrives during a transfer is handled at once, by abortTransfer): an
// announced data channel is dropped, and the upstream is not involved.
func (s *session) cmdABOR(cmd rewrite.Command) {
	s.dropSetup()
	s.answer("225 No transfer to abort.")
}

// cmdTransfer forwards a transfer command and ties it to the data channel
// prepared by the last PASV, EPSV, PORT or EPRT.
func (s *session) cmdTransfer(cmd rewrite.Command, dir direction) {
	if err := s.setupErr; err != nil && s.setup == nil {
		s.setupErr = nil
		s.log.Info().Err(err).Str("cmd", cmd.Verb).Msg("transfer refused: its data channel is gone")
		if !errors.Is(err, errDataTLS) && !errors.Is(err, errDataNotResumed) {
			err = errDataFailed
		}
		s.answer(replyFor(err))
		return
	}
	if s.cfg.ClientTLS == ClientTLSRequire && s.tlsOffered() && !(s.tlsClient && s.protP) {
		s.dropSetup()
		s.answer(replyDataNeedsPROTP)
		return
	}
	t := s.setup
	if t == nil {
		// No data channel: the upstream answers (425 or 503).
		s.open(&exchange{kind: kindRelay, cmd: cmd}, cmd)
		return
	}
	s.setup = nil
	t.claim(cmd.Verb, dir)
	s.open(&exchange{kind: kindTransfer, cmd: cmd, xfer: t}, cmd)
}

// dropSetup discards a data channel that no command has used, and gives
// its port back at once.
func (s *session) dropSetup() {
	if t := s.setup; t != nil {
		s.setup = nil
		t.abort()
		t.release()
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
