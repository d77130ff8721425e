package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/ftpproxy/ftpproxy/rewrite"
)

// target is one upstream server a session may connect to.
type target struct {
	addr string // what is dialled: "host:port", or the checked address in forward mode
	name string // what the logs and TLS verification call it
}

// upstreamTargets returns the servers a reverse-proxy session tries, in
// order: the pool's, or the one upstream.
func (s *session) upstreamTargets() []target {
	if p := s.cfg.Pool; p != nil {
		addrs := p.Candidates()
		ts := make([]target, len(addrs))
		for i, a := range addrs {
			ts[i] = target{addr: a, name: a}
		}
		return ts
	}
	return []target{{addr: s.cfg.Upstream, name: s.cfg.Upstream}}
}

// connectFailure is why one upstream could not be used, and what the client
// is told if it was the last one to try.
type connectFailure struct {
	err    error
	reason string   // the session's end reason
	reply  []string // the client's last reply
}

// errGreetingRefused is an upstream greeting other than 1xx or 2xx.
var errGreetingRefused = errors.New("proxy: the FTP server refused the session")

// connect runs in a goroutine of its own: it tries the targets in turn
// (dial, PROXY header, implicit TLS, greeting) until one greets with 2xx,
// then hands the connection to the session. Nothing here holds the
// session's lock while it waits, so a slow server delays no other event,
// and the client's commands queue behind the connecting exchange. relay
// says whether the upstream's greeting reaches the client (not in forward
// mode, where the proxy has greeted already).
func (s *session) connect(targets []target, relay bool) {
	var last connectFailure
	for i, t := range targets {
		up, lr, greeting, f := s.tryUpstream(t, relay && i == len(targets)-1)
		if p := s.cfg.Pool; p != nil && s.fwd == nil {
			p.Report(t.addr, f.err)
		}
		if f.err == nil {
			s.mu.Lock()
			s.upstreamConnected(up, lr, greeting, t)
			s.mu.Unlock()
			return
		}
		if s.ctx.Err() != nil {
			return
		}
		s.log.Warn().Err(f.err).Str("server", t.name).Msg("upstream unusable")
		last = f
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fwd != nil {
		last.reply = []string{replyUpstreamDown}
	}
	s.writeClientReply(last.reply)
	s.end(last.reason)
}

// tryUpstream connects to one target and reads its greeting. The 1xx and
// 2xx lines of the greeting are relayed as they come when relay is set and
// nothing must go first (TLS with the upstream); the greeting is returned
// when it is held. A refusal is relayed only if relayLast is set: another
// server may still greet.
func (s *session) tryUpstream(t target, relayLast bool) (net.Conn, *rewrite.LineReader, []string, connectFailure) {
	d := net.Dialer{Timeout: s.cfg.DialTimeout}
	start := time.Now()
	up, err := d.DialContext(s.ctx, "tcp", t.addr)
	if err != nil {
		s.cfg.Metrics.upstreamFailed(err)
		return nil, nil, nil, connectFailure{err: err, reason: "upstream unreachable", reply: []string{replyUpstreamDown}}
	}
	s.log.Debug().Str("server", t.name).Dur("connect", time.Since(start)).Msg("upstream connected")
	s.cfg.Metrics.upstreamConnected(time.Since(start))
	// Closing the connection is what ends a read or a handshake when the
	// session ends first.
	stop := context.AfterFunc(s.ctx, func() { up.Close() })
	defer stop()
	fail := func(f connectFailure) (net.Conn, *rewrite.LineReader, []string, connectFailure) {
		up.Close()
		return nil, nil, nil, f
	}
	if v := s.cfg.UpstreamProxyProtocol; v != 0 {
		if err := writeProxyHeader(up, v, s.clientAP, s.dialedAP, time.Now().Add(s.cfg.DialTimeout)); err != nil {
			s.cfg.Metrics.upstreamFailed(err)
			return fail(connectFailure{err: fmt.Errorf("proxy: PROXY header to %s: %w", t.name, err), reason: "upstream unreachable", reply: []string{replyUpstreamDown}})
		}
	}
	upTLS := false
	if s.cfg.UpstreamTLS == UpstreamTLSImplicit {
		s.mu.Lock()
		conf := s.upstreamTLS()
		s.mu.Unlock()
		tc, err := clientHandshake(up, conf, s.cfg.DialTimeout)
		s.cfg.Metrics.upstreamTLS(err)
		if err != nil {
			return fail(connectFailure{err: err, reason: "upstream TLS failed", reply: []string{replyUpstreamTLSBad + clip(err.Error())}})
		}
		s.logUpstreamTLS(tc)
		up, upTLS = tc, true
	}

	s.mu.Lock()
	relayNow := relayLast && !s.upstreamTLSAfterGreeting()
	s.mu.Unlock()
	lr := rewrite.NewLineReader(up, s.cfg.MaxReplyLineLength)
	rr := rewrite.NewReplyReader(lr, replyChunkLines, s.cfg.MaxReplyLines)
	rr.SetChunkBytes(replyChunkBytes)
	up.SetReadDeadline(time.Now().Add(s.cfg.GreetingTimeout))
	var held heldReply
	for {
		r, err := rr.ReadReply()
		switch {
		case s.ctx.Err() != nil:
			return fail(connectFailure{err: s.ctx.Err()})
		case errors.Is(err, os.ErrDeadlineExceeded):
			s.cfg.Metrics.upstreamFailed(err)
			return fail(connectFailure{err: fmt.Errorf("proxy: no greeting from %s within %s", t.name, s.cfg.GreetingTimeout), reason: "greeting timeout", reply: []string{replyGreetTimeout}})
		case errors.Is(err, rewrite.ErrBadReply), errors.Is(err, rewrite.ErrReplyTooLong), errors.Is(err, rewrite.ErrLineTooLong):
			return fail(connectFailure{err: fmt.Errorf("proxy: greeting from %s: %w", t.name, err), reason: "malformed upstream reply", reply: []string{replyUpstreamBad}})
		case err != nil:
			return fail(connectFailure{err: fmt.Errorf("proxy: greeting from %s: %w", t.name, err), reason: "upstream gone", reply: []string{replyUpstreamGone}})
		}
		ok := r.Code/100 == 1 || r.Code/100 == 2
		if ok && relayNow {
			s.mu.Lock()
			s.writeClientReply(r.Lines)
			s.mu.Unlock()
		} else if r.Code/100 != 1 {
			held.add(r)
		}
		if r.More || r.Code/100 == 1 {
			continue
		}
		if !ok {
			reply := []string{replyUpstreamDown}
			if relayLast {
				reply = held.lines()
			}
			return fail(connectFailure{err: fmt.Errorf("%w: %s greeted with %d", errGreetingRefused, t.name, r.Code), reason: "upstream refused", reply: reply})
		}
		up.SetReadDeadline(time.Time{})
		var greeting []string
		if !relayNow {
			greeting = held.lines()
		}
		if upTLS {
			s.mu.Lock()
			s.upTLS = true
			s.mu.Unlock()
		}
		return up, lr, greeting, connectFailure{}
	}
}

// upstreamConnected makes up the session's upstream once it has greeted:
// its reader starts, TLS with it starts if the configuration asks, and the
// client's commands go on.
func (s *session) upstreamConnected(up net.Conn, lr *rewrite.LineReader, greeting []string, t target) {
	if s.closing {
		up.Close()
		return
	}
	s.up = up
	s.upAP = addrPortOf(up.RemoteAddr())
	s.upLocal = addrPortOf(up.LocalAddr())
	if s.cfg.Pool != nil || s.fwd != nil {
		s.setUpstream(t.name)
	}
	s.wg.Go(func() { s.readReplies(lr) })
	x := s.cur
	if s.upstreamTLSAfterGreeting() {
		// The client hears the greeting once TLS with the upstream is
		// up, so a server that cannot do TLS gets it a 421 instead.
		if s.fwd == nil {
			s.phase = phaseLogin
		}
		s.heldGreeting = greeting
		s.cur = nil
		s.openUpstreamAUTH()
		return
	}
	if x != nil {
		x.done, x.answered = true, true
	}
	s.cur = nil
	s.upstreamReady(greeting)
}

// upstreamReady goes on once the upstream has greeted and TLS with it, if
// any, is up: the held greeting reaches the client, or, in forward mode,
// the login the client started continues with the server.
func (s *session) upstreamReady(greeting []string) {
	if s.fwd != nil {
		s.forwardReady()
		return
	}
	s.phase = phaseLogin
	s.writeClientReply(greeting)
	s.settle()
	s.advance()
}
