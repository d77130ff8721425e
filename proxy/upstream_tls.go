package proxy

import (
	"crypto/tls"
	"fmt"
	"net"
	"time"

	"github.com/ftpproxy/ftpproxy/rewrite"
)

// UpstreamTLSMode is how the proxy speaks to the upstream: plain FTP, or
// FTPS that it starts itself, whatever the client does.
type UpstreamTLSMode int

const (
	UpstreamTLSOff      UpstreamTLSMode = iota // plain FTP
	UpstreamTLSExplicit                        // AUTH TLS after the greeting (RFC 4217)
	UpstreamTLSImplicit                        // TLS from the first byte
	UpstreamTLSMatch                           // AUTH TLS exactly when the client uses TLS
)

// ParseUpstreamTLSMode parses "off", "explicit", "implicit" or "match".
func ParseUpstreamTLSMode(s string) (UpstreamTLSMode, error) {
	switch s {
	case "off":
		return UpstreamTLSOff, nil
	case "explicit":
		return UpstreamTLSExplicit, nil
	case "implicit":
		return UpstreamTLSImplicit, nil
	case "match":
		return UpstreamTLSMatch, nil
	}
	return 0, fmt.Errorf("proxy: upstream TLS mode %q: want off, explicit, implicit or match", s)
}

// Replies for an upstream that cannot be reached over TLS. There is no
// silent fallback to plain FTP: the client is told, and the session ends.
const (
	replyUpstreamNoTLS   = "421 Service not available: the FTP server refused AUTH TLS."
	replyUpstreamTLSBad  = "421 Service not available: TLS with the FTP server failed: "
	replyUpstreamNoPROTP = "421 Service not available: the FTP server refused PBSZ/PROT P."
)

// upstreamTLS returns the session's TLS configuration towards the
// upstream: a clone of Config.UpstreamTLSConfig with a session cache of its
// own, so the data connections resume this control session (servers such
// as vsftpd with require_ssl_reuse insist) and never another's.
func (s *session) upstreamTLS() *tls.Config {
	if s.upConf == nil {
		c := s.cfg.UpstreamTLSConfig.Clone()
		if c == nil {
			c = &tls.Config{}
		}
		c.ClientSessionCache = tls.NewLRUClientSessionCache(4)
		if s.fwd != nil && s.fwd.host != "" {
			// Forward mode: the certificate must be the server's the
			// client named.
			c.ServerName = s.fwd.host
		}
		s.upConf = c
	}
	return s.upConf
}

// upstreamTLSAfterGreeting reports whether the proxy starts TLS with the
// upstream right after its greeting.
func (s *session) upstreamTLSAfterGreeting() bool {
	switch s.cfg.UpstreamTLS {
	case UpstreamTLSExplicit:
		return true
	case UpstreamTLSMatch:
		return s.tlsClient // an implicit client is in TLS already
	}
	return false
}

// openUpstreamAUTH opens the proxy's own AUTH TLS towards the upstream.
func (s *session) openUpstreamAUTH() {
	cmd := rewrite.Command{Verb: "AUTH", Arg: "TLS"}
	s.open(&exchange{kind: kindUpstreamTLS, cmd: cmd}, cmd)
}

// needUpstreamPROT reports whether a data command must wait for the
// proxy's PBSZ 0 and PROT P to the upstream. After a 530 to them the data
// command goes once without (the upstream answers it), and they are tried
// again before the next one.
func (s *session) needUpstreamPROT() bool {
	if s.upProtLater {
		s.upProtLater = false
		return false
	}
	return s.upTLS && !s.upProtP
}

// openUpstreamPROT puts cmd back at the head of the inbox and sends PBSZ 0,
// then PROT P, so the upstream's data connections are TLS whatever the
// client chose; cmd goes once PROT P is accepted.
func (s *session) openUpstreamPROT(cmd rewrite.Command) {
	q := queued{cmd: cmd}
	s.inbox = append([]queued{q}, s.inbox...)
	s.backlog += q.size()
	pbsz := rewrite.Command{Verb: "PBSZ", Arg: "0"}
	s.open(&exchange{kind: kindUpstreamTLS, cmd: pbsz}, pbsz)
}

// onUpstreamTLSReply follows the proxy's own AUTH, PBSZ and PROT.
func (s *session) onUpstreamTLSReply(x *exchange, r rewrite.Reply) {
	x.held.add(r)
	if r.More {
		return
	}
	switch {
	case x.cmd.Verb == "AUTH" && r.Code == 234:
		// The upstream reader starts the handshake once this returns:
		// it owns the connection's reader.
		s.upHandshake = true
		return
	case x.cmd.Verb == "AUTH":
		s.log.Warn().Int("code", r.Code).Str("reply", clip(x.held.first())).Msg("upstream refused AUTH TLS")
		s.cfg.Metrics.upstreamRefusedTLS()
		s.abortSession("upstream refused TLS", replyUpstreamNoTLS)
		return
	case r.Code == 530:
		// Not logged in yet: the data command goes on and the upstream
		// answers it; PBSZ and PROT are tried again before the next one.
		s.log.Debug().Str("cmd", x.cmd.Verb).Msg("upstream wants a login before PBSZ/PROT")
		s.upProtLater = true
	case r.Code/100 != 2:
		s.log.Warn().Int("code", r.Code).Str("cmd", x.cmd.Verb).Str("reply", clip(x.held.first())).Msg("upstream refused data protection")
		s.abortSession("upstream refused PROT P", replyUpstreamNoPROTP)
		return
	case x.cmd.Verb == "PBSZ":
		x.cmd = rewrite.Command{Verb: "PROT", Arg: "P"}
		x.held = heldReply{}
		s.sendUpstream(x.cmd)
		return
	default:
		s.upProtP = true
	}
	x.done, x.answered = true, true
	s.settle()
}

// upstreamHandshake runs the TLS handshake with the upstream after its 234;
// the upstream reader calls it with the reader of the plain connection and
// goes on with the one it returns (nil: the session is over).
func (s *session) upstreamHandshake(lr *rewrite.LineReader) *rewrite.LineReader {
	s.mu.Lock()
	s.upHandshake = false
	raw, conf := s.up, s.upstreamTLS()
	s.mu.Unlock()
	var tc *tls.Conn
	err := fmt.Errorf("proxy: the FTP server sent %d bytes after 234", lr.Buffered())
	if lr.Buffered() == 0 {
		tc, err = clientHandshake(raw, conf, s.cfg.DialTimeout)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg.Metrics.upstreamTLS(err)
	if err != nil {
		s.log.Warn().Err(err).Msg("TLS with the upstream failed")
		s.abortSession("upstream TLS failed", replyUpstreamTLSBad+clip(err.Error()))
		return nil
	}
	s.up, s.upWD, s.upTLS = tc, time.Time{}, true
	s.logUpstreamTLS(tc)
	// The AUTH exchange is over: the greeting held for it, or the login
	// waiting in forward mode, goes on.
	s.cur = nil
	g := s.heldGreeting
	s.heldGreeting = nil
	s.upstreamReady(g)
	return rewrite.NewLineReader(tc, s.cfg.MaxReplyLineLength)
}

// clientHandshake runs a client-side TLS handshake on c within timeout.
func clientHandshake(c net.Conn, conf *tls.Config, timeout time.Duration) (*tls.Conn, error) {
	tc := tls.Client(c, conf)
	c.SetDeadline(time.Now().Add(timeout))
	err := tc.Handshake()
	c.SetDeadline(time.Time{})
	if err != nil {
		return nil, fmt.Errorf("proxy: TLS handshake with %s: %w", conf.ServerName, err)
	}
	return tc, nil
}

func (s *session) logUpstreamTLS(tc *tls.Conn) {
	st := tc.ConnectionState()
	s.log.Info().Str("tls", tls.VersionName(st.Version)).Str("cipher", tls.CipherSuiteName(st.CipherSuite)).
		Bool("resumed", st.DidResume).Msg("upstream TLS established")
}

// clientTLS runs the upstream data connection's TLS handshake, the proxy as
// the client; it resumes the upstream control session from the session's
// cache.
func (t *transfer) clientTLS(c *net.TCPConn) (dataEnd, error) {
	cc := &countingConn{TCPConn: c}
	tc := tls.Client(cc, t.upTLSConf)
	c.SetDeadline(time.Now().Add(t.s.cfg.DataAcceptTimeout))
	err := tc.HandshakeContext(t.ctx)
	c.SetDeadline(time.Time{})
	t.s.cfg.Metrics.dataTLS(sideUpstreamData, tc, err, t.ctx.Err() != nil)
	if err != nil {
		if t.ctx.Err() != nil {
			return dataEnd{}, errAborted
		}
		return dataEnd{}, fmt.Errorf("%w: with the upstream: %w", errDataTLS, err)
	}
	t.upTLSResumed = tc.ConnectionState().DidResume
	return dataEnd{tcp: c, stream: tc, tls: tc, counter: cc}, nil
}
