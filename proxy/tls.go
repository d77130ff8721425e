package proxy

import (
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ftpproxy/ftpproxy/rewrite"
)

// ClientTLSMode is what the proxy offers its clients: FTPS (RFC 4217) on
// the control connection and, with PROT P, on the data connections.
type ClientTLSMode int

const (
	ClientTLSOff     ClientTLSMode = iota // AUTH is refused; plain FTP only
	ClientTLSAllow                        // AUTH TLS is offered; plain FTP still works
	ClientTLSRequire                      // no login before AUTH TLS, no transfer without PROT P
)

// ParseClientTLSMode parses "off", "allow" or "require".
func ParseClientTLSMode(s string) (ClientTLSMode, error) {
	switch s {
	case "off":
		return ClientTLSOff, nil
	case "allow":
		return ClientTLSAllow, nil
	case "require":
		return ClientTLSRequire, nil
	}
	return 0, fmt.Errorf("proxy: client TLS mode %q: want off, allow or require", s)
}

// DataReuse is how strictly a TLS data connection must prove that it
// belongs to its control session.
type DataReuse int

const (
	// DataReuseAuto accepts a data connection that resumes the control
	// session's TLS session, and one with a full handshake from the
	// control connection's address (which every data connection must come
	// from anyway); the log says which.
	DataReuseAuto DataReuse = iota
	// DataReuseRequire accepts only a data connection that resumes the
	// control session's TLS session, as vsftpd's require_ssl_reuse does.
	DataReuseRequire
)

// ParseDataReuse parses "auto" or "require".
func ParseDataReuse(s string) (DataReuse, error) {
	switch s {
	case "auto":
		return DataReuseAuto, nil
	case "require":
		return DataReuseRequire, nil
	}
	return 0, fmt.Errorf("proxy: TLS data reuse %q: want auto or require", s)
}

// Replies of the FTPS commands (RFC 4217 section 9 and RFC 2228).
const (
	replyAuthOK         = "234 AUTH TLS successful: start the TLS handshake."
	replyAuthMechanism  = "504 Security mechanism not understood: use AUTH TLS."
	replyAuthAgain      = "503 TLS is already in use on this connection."
	replyNeedAuth       = "503 Security data exchange not complete: send AUTH TLS first."
	replyNeedPBSZ       = "503 Send PBSZ 0 before PROT."
	replyPBSZ           = "200 PBSZ=0"
	replyProtUnknown    = "504 PROT takes C or P."
	replyProtLevel      = "536 Protection level not supported: use PROT C or PROT P."
	replyCCC            = "534 CCC refused: the control connection stays encrypted."
	replyREINOverTLS    = "502 REIN is not available on a TLS session; reconnect instead."
	replyLoginNeedsTLS  = "530 TLS required: send AUTH TLS before logging in."
	replyDataNeedsPROTP = "521 Data connections must be protected: send PROT P."
	replyDataNotResumed = "425 TLS session of data connection not resumed."
	replyDataTLSFailed  = "425 Can't open data connection: TLS handshake failed."
)

var (
	errDataTLS        = errors.New("proxy: TLS handshake on the data connection failed")
	errDataNotResumed = errors.New("proxy: TLS session of data connection not resumed")
)

// tlsOffered reports whether the proxy offers AUTH TLS.
func (s *session) tlsOffered() bool {
	return s.cfg.ClientTLS != ClientTLSOff && s.cfg.TLS != nil
}

// sessionTLS returns the TLS configuration of the session's client side.
// Its ticket keys are the session's own: a data connection that resumes a
// session from a ticket proves it belongs to this control session, and a
// ticket of another session cannot be resumed here.
func (s *session) sessionTLS() *tls.Config {
	if s.tlsConf == nil {
		c := s.cfg.TLS.Clone()
		var key [32]byte
		if _, err := rand.Read(key[:]); err == nil {
			c.SetSessionTicketKeys([][32]byte{key})
		}
		s.tlsConf = c
	}
	return s.tlsConf
}

// cmdAUTH starts TLS on the control connection (RFC 4217 section 4): the
// proxy answers 234, and the client reader, which has been waiting since it
// read the AUTH line, does the handshake before it reads anything else.
// Whatever the client sent after AUTH and before the 234 is plaintext that
// anyone on the path could have put there, and is thrown away.
func (s *session) cmdAUTH(cmd rewrite.Command) {
	wait := s.authWait
	s.authWait = nil
	decide := func(ok bool) {
		if wait != nil {
			wait <- ok
		}
	}
	switch mech := strings.ToUpper(strings.TrimSpace(cmd.Arg)); {
	case !s.tlsOffered():
		s.answer(replyNoTLS)
		decide(false)
	case s.tlsClient:
		s.answer(replyAuthAgain)
		decide(false)
	case mech != "TLS" && mech != "SSL" && mech != "TLS-C" && mech != "TLS-P":
		s.answer(replyAuthMechanism)
		decide(false)
	default:
		s.answer(replyAuthOK)
		s.handshaking = true
		decide(true)
	}
}

// startTLS runs the control connection's handshake after a 234. It is
// called by the client reader; lr is what it has read the plain
// connection with. It returns the reader for the TLS connection, or nil if
// the session is over.
func (s *session) startTLS(lr *rewrite.LineReader) *rewrite.LineReader {
	if n := lr.Buffered(); n > 0 {
		s.log.Warn().Int("bytes", n).Msg("plaintext sent after AUTH TLS discarded")
	}
	s.mu.Lock()
	raw := s.client
	conf := s.sessionTLS()
	s.mu.Unlock()
	tc, err := s.handshake(raw, conf)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handshaking = false
	if err != nil {
		s.log.Warn().Err(err).Msg("TLS handshake with the client failed")
		s.end("client TLS handshake failed")
		return nil
	}
	s.client, s.clientWD = tc, time.Time{}
	s.tlsClient = true
	s.logTLS(tc, "client TLS established")
	if s.cfg.UpstreamTLS == UpstreamTLSMatch && !s.upTLS {
		s.openUpstreamAUTH()
	}
	s.advance()
	return rewrite.NewLineReader(tc, s.cfg.MaxLineLength)
}

// handshake runs a server-side TLS handshake on c within DialTimeout.
func (s *session) handshake(c net.Conn, conf *tls.Config) (*tls.Conn, error) {
	tc := tls.Server(c, conf)
	c.SetDeadline(time.Now().Add(s.cfg.DialTimeout))
	err := tc.Handshake()
	c.SetDeadline(time.Time{})
	s.cfg.Metrics.tlsHandshake(sideClient, err)
	if err != nil {
		return nil, fmt.Errorf("proxy: TLS handshake: %w", err)
	}
	return tc, nil
}

// logTLS logs what a TLS connection negotiated.
func (s *session) logTLS(tc *tls.Conn, msg string) {
	st := tc.ConnectionState()
	s.log.Info().Str("tls", tls.VersionName(st.Version)).Str("cipher", tls.CipherSuiteName(st.CipherSuite)).
		Bool("resumed", st.DidResume).Msg(msg)
}

// cmdPBSZ: RFC 4217 section 8 fixes the protection buffer size at 0 for
// TLS.
func (s *session) cmdPBSZ(cmd rewrite.Command) {
	if !s.tlsClient {
		s.answer(replyNeedAuth)
		return
	}
	s.pbsz = true
	s.answer(replyPBSZ)
}

// cmdPROT sets the protection of the data connections: C (clear) or P
// (private, TLS). S and E have no meaning with TLS (RFC 4217 section 9).
func (s *session) cmdPROT(cmd rewrite.Command) {
	switch level := strings.ToUpper(strings.TrimSpace(cmd.Arg)); {
	case !s.tlsClient:
		s.answer(replyNeedAuth)
	case !s.pbsz:
		s.answer(replyNeedPBSZ)
	case level == "C" || level == "P":
		s.protP = level == "P"
		s.answer("200 PROT " + level + " OK.")
	case level == "S" || level == "E":
		s.answer(replyProtLevel)
	default:
		s.answer(replyProtUnknown)
	}
}

// cmdCCC refuses to clear the control connection (RFC 4217 section 6):
// the passwords and addresses it carries stay encrypted.
func (s *session) cmdCCC(cmd rewrite.Command) { s.answer(replyCCC) }

// featTLS are the feature lines the proxy adds to FEAT when it offers TLS.
var featTLS = []string{" AUTH TLS", " PBSZ", " PROT"}

// loginRefused reports, and answers, a login command that must wait for
// TLS.
func (s *session) loginRefused() bool {
	if s.cfg.ClientTLS == ClientTLSRequire && s.tlsOffered() && !s.tlsClient {
		s.answer(replyLoginNeedsTLS)
		return true
	}
	return false
}

// dataTLS returns the TLS configuration a new data channel's client end
// uses: the session's, when the client asked for PROT P.
func (s *session) dataTLS() *tls.Config {
	if s.tlsClient && s.protP {
		return s.sessionTLS()
	}
	return nil
}

// countingConn counts the bytes written to a TCP connection under TLS, so
// the relay can wait for the peer to acknowledge all of them.
type countingConn struct {
	*net.TCPConn
	written atomic.Int64
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.TCPConn.Write(b)
	c.written.Add(int64(n))
	return n, err
}

// dataEnd is one side of a relay: a TCP connection, and the stream the
// data is copied through: the connection itself, or TLS over it.
type dataEnd struct {
	tcp     *net.TCPConn
	stream  net.Conn
	tls     *tls.Conn     // nil for plain
	counter *countingConn // with tls: what has been written to tcp
}

func plainEnd(c *net.TCPConn) dataEnd { return dataEnd{tcp: c, stream: c} }

// closeWrite passes the end of the data on: a TLS close_notify first,
// then the TCP half-close.
func (e dataEnd) closeWrite() error {
	if e.tls != nil {
		if err := e.tls.CloseWrite(); err != nil {
			return err
		}
	}
	return e.tcp.CloseWrite()
}

// sent is how many bytes the peer must acknowledge for the n bytes of
// data copied so far to be delivered: n itself, or with TLS every byte
// written to the connection, handshake and records included.
func (e dataEnd) sent(n int64) int64 {
	if e.counter != nil {
		return e.counter.written.Load()
	}
	return n
}

// closeNotify sends a TLS end its close_notify, if it has not had one, so
// a client reading to the end (Python's ssl module does) sees a clean end
// before the connection closes; bounded, since the peer may not read.
func (e dataEnd) closeNotify() {
	if e.tls != nil {
		e.tcp.SetWriteDeadline(time.Now().Add(time.Second))
		e.tls.CloseWrite()
	}
}

// serverTLS runs the data connection's TLS handshake, the proxy as the
// server whatever the mode (RFC 4217 section 7: the client is always the
// TLS client), and checks that it resumed the control session if it must.
func (t *transfer) serverTLS(c *net.TCPConn) (dataEnd, error) {
	cc := &countingConn{TCPConn: c}
	tc := tls.Server(cc, t.tlsConf)
	c.SetDeadline(time.Now().Add(t.s.cfg.DataAcceptTimeout))
	err := tc.HandshakeContext(t.ctx)
	c.SetDeadline(time.Time{})
	t.s.cfg.Metrics.dataTLS(sideClientData, tc, err, t.ctx.Err() != nil)
	if err != nil {
		if t.ctx.Err() != nil {
			return dataEnd{}, errAborted
		}
		return dataEnd{}, fmt.Errorf("%w: %w", errDataTLS, err)
	}
	st := tc.ConnectionState()
	t.tlsVersion, t.tlsResumed = st.Version, st.DidResume
	if !st.DidResume && t.s.cfg.TLSDataReuse == DataReuseRequire {
		return dataEnd{}, errDataNotResumed
	}
	return dataEnd{tcp: c, stream: tc, tls: tc, counter: cc}, nil
}

var _ io.Writer = (*countingConn)(nil)
