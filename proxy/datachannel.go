package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"

	"github.com/ftpproxy/ftpproxy/nat"
	"github.com/ftpproxy/ftpproxy/rewrite"
)

// cmdPASV: RFC 959 passive mode. The 227 reply can only carry an IPv4
// address.
func (s *session) cmdPASV(cmd rewrite.Command) {
	switch {
	case s.epsvAll:
		s.replyLocal(replyFor(errAfterEPSVAll))
	case !s.localAP.Addr().Is4():
		s.replyLocal(replyFor(errPASVOverIPv6))
	default:
		s.requestPassive(cmd, false)
	}
}

// cmdEPSV: RFC 2428 extended passive mode. "EPSV ALL" is answered by the
// proxy, which from then on refuses every other data setup command;
// "EPSV 1" and "EPSV 2" name the family the client wants.
func (s *session) cmdEPSV(cmd rewrite.Command) {
	arg := strings.TrimSpace(cmd.Arg)
	switch {
	case eq(arg, "ALL"):
		s.epsvAll = true
		s.replyLocal("200 EPSV ALL command successful.")
		return
	case arg == "":
	case arg == "1" && s.localAP.Addr().Is4(), arg == "2" && s.localAP.Addr().Is6():
	case arg == "1" || arg == "2":
		s.replyLocal(s.familyReply())
		return
	default:
		s.replyLocal(replyFor(rewrite.ErrSyntax))
		return
	}
	s.requestPassive(cmd, true)
}

// familyReply is the 522 that names the family the client's control
// connection uses (RFC 2428 section 3).
func (s *session) familyReply() string {
	if s.localAP.Addr().Is4() {
		return "522 Network protocol not supported, use (1)."
	}
	return "522 Network protocol not supported, use (2)."
}

// requestPassive asks the upstream for a passive data port and, once it
// has one, opens the proxy's own passive listener and tells the client
// about that instead. The upstream is asked in its own address family:
// EPSV over IPv6, and over IPv4 the client's choice, with PASV as the
// fallback for an upstream that does not know EPSV.
func (s *session) requestPassive(cmd rewrite.Command, extended bool) {
	s.dropSetup()
	p := &pending{cmd: cmd}
	var ask func(epsv bool)
	ask = func(epsv bool) {
		if epsv {
			s.sendUpstream("EPSV")
		} else {
			s.sendUpstream("PASV")
		}
		p.onFinal = func(r rewrite.Reply) bool {
			if epsv && epsvRefused(r.Code) && s.upAP.Addr().Is4() {
				s.log.Debug().Int("code", r.Code).Msg("upstream refused EPSV; asking with PASV")
				s.upNoEPSV = true
				ask(false)
				return false
			}
			s.passiveReply(r, epsv, extended)
			return true
		}
	}
	ask(s.upAP.Addr().Is6() || (extended && !s.upNoEPSV))
	s.queue = append(s.queue, p)
}

// passiveReply handles the upstream's answer to PASV or EPSV.
func (s *session) passiveReply(r rewrite.Reply, sentEPSV, extended bool) {
	var port uint16
	var err error
	text := strings.Join(r.Lines, " ")
	switch {
	case sentEPSV && r.Code == 229:
		port, err = rewrite.ParseEPSVReply(text)
	case !sentEPSV && r.Code == 227:
		var ap netip.AddrPort
		ap, err = rewrite.ParsePASVReply(text)
		port = ap.Port()
		if err == nil && ap.Addr() != s.upAP.Addr() {
			// A server behind NAT often announces an address nobody else
			// can reach; its control address is the one known to work.
			s.log.Debug().Str("announced", ap.Addr().String()).Msg("upstream passive address differs from its control address; using the control address")
		}
	case r.Code == 227 || r.Code == 229:
		err = fmt.Errorf("%w: %d in answer to %s", rewrite.ErrBadReply, r.Code, map[bool]string{true: "EPSV", false: "PASV"}[sentEPSV])
	default:
		s.writeClientReply(r.Lines) // the upstream said no (530, 425...): pass it on
		return
	}
	if err != nil {
		s.log.Warn().Err(err).Str("reply", clip(text)).Msg("malformed passive reply from upstream")
		s.writeClientLine("425 Can't open data connection: the server's passive reply was malformed.")
		return
	}
	t, err := s.openPassive(netip.AddrPortFrom(s.upAP.Addr(), port))
	if err != nil {
		if errors.Is(err, errNoPassivePort) {
			s.log.Warn().Int("range", s.cfg.PassivePorts.Size()).Msg("passive port range exhausted")
		} else {
			s.log.Warn().Err(err).Msg("cannot open passive listener")
		}
		s.writeClientLine(replyFor(err))
		return
	}
	s.setup = t
	t.start()
	if extended {
		s.writeClientLine(rewrite.FormatEPSVReply(t.port))
		return
	}
	line, err := rewrite.FormatPASVReply(netip.AddrPortFrom(t.advertised, t.port))
	if err != nil { // an IPv6 advertised address for an IPv4 client: a configuration error
		s.log.Error().Err(err).Msg("cannot advertise passive address")
		s.dropSetup()
		line = replyFor(err)
	}
	s.writeClientLine(line)
}

// openPassive opens the client-facing listener of a passive transfer whose
// upstream end is target.
func (s *session) openPassive(target netip.AddrPort) (*transfer, error) {
	local := s.localAP.Addr()
	adv := s.cfg.Advertiser.Advertise(s.clientAP.Addr(), local)
	bind := nat.ListenAddr(adv, local)
	ln, port, pooled, err := listenData(bind, s.cfg.PassivePorts)
	if err != nil {
		return nil, err
	}
	t := s.newTransfer(modePassive, ln, port, pooled)
	t.advertised = adv
	t.acceptFrom = s.clientAP.Addr()
	t.dialTo = target
	t.dialFrom = s.upLocal.Addr()
	return t, nil
}

// cmdPORT and cmdEPRT: active mode. The client names its own data address;
// the proxy accepts it only if it is the client's own address and not a
// privileged port, so nobody can use the proxy to reach a third host (the
// FTP bounce attack, RFC 2577 section 3).
func (s *session) cmdPORT(cmd rewrite.Command) { s.requestActive(cmd, rewrite.ParsePORT) }
func (s *session) cmdEPRT(cmd rewrite.Command) { s.requestActive(cmd, rewrite.ParseEPRT) }

func (s *session) requestActive(cmd rewrite.Command, parse func(string) (netip.AddrPort, error)) {
	if s.epsvAll {
		s.replyLocal(replyFor(errAfterEPSVAll))
		return
	}
	target, err := parse(strings.TrimSpace(cmd.Arg))
	if errors.Is(err, rewrite.ErrFamily) {
		s.replyLocal(s.familyReply())
		return
	}
	if err == nil {
		target = netip.AddrPortFrom(target.Addr().Unmap(), target.Port())
		switch {
		case target.Addr() != s.clientAP.Addr():
			err = errNotOwnAddress
		case target.Port() < 1024:
			err = errPrivilegedPort
		}
	}
	if err != nil {
		s.log.Warn().Err(err).Str("cmd", cmd.Redacted()).Msg("data address refused")
		s.replyLocal(replyFor(err))
		return
	}
	s.dropSetup()
	ln, port, _, err := listenData(s.upLocal.Addr(), nil)
	if err != nil {
		s.log.Warn().Err(err).Msg("cannot open active-mode listener")
		s.replyLocal(replyFor(err))
		return
	}
	t := s.newTransfer(modeActive, ln, port, false)
	t.acceptFrom = s.upAP.Addr()
	t.dialTo = target
	t.dialFrom = s.localAP.Addr()

	// Tell the upstream the proxy's own address, in the upstream's family.
	ap := netip.AddrPortFrom(s.upLocal.Addr(), port)
	line := "EPRT " + rewrite.FormatEPRT(ap)
	if ap.Addr().Is4() {
		arg, _ := rewrite.FormatPORT(ap) // cannot fail for IPv4
		line = "PORT " + arg
	}
	s.sendUpstream(line)
	p := &pending{cmd: cmd}
	p.onFinal = func(r rewrite.Reply) bool {
		if r.Code/100 == 2 {
			s.setup = t
			t.start()
		} else {
			t.abort()
			t.release()
			delete(s.xfers, t)
		}
		s.writeClientReply(r.Lines)
		return true
	}
	s.queue = append(s.queue, p)
}

// listenData opens a data listener on ip, with a port from pool if there
// is one. A port taken by another program is given back and another tried.
func listenData(ip netip.Addr, pool *nat.PortPool) (ln *net.TCPListener, port uint16, pooled bool, err error) {
	if pool == nil {
		ln, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		if err != nil {
			return nil, 0, false, fmt.Errorf("proxy: listen for data on %v: %w", ip, err)
		}
		return ln, uint16(ln.Addr().(*net.TCPAddr).Port), false, nil
	}
	for range min(pool.Size(), 32) {
		p, ok := pool.Acquire()
		if !ok {
			break
		}
		ln, err = net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, p)))
		if err == nil {
			return ln, p, true, nil
		}
		pool.Release(p)
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, 0, false, fmt.Errorf("proxy: listen for data on %v: %w", ip, err)
		}
	}
	return nil, 0, false, errNoPassivePort
}

// clip shortens text for a log line.
func clip(text string) string {
	if len(text) > 128 {
		return text[:128] + "..."
	}
	return text
}
