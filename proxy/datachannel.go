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

// dataRequest is what a client's PASV, EPSV, PORT or EPRT asks for.
type dataRequest struct {
	cmd      rewrite.Command
	passive  bool           // the client will connect to the proxy (PASV, EPSV)
	extended bool           // RFC 2428 forms: answer EPSV with 229
	target   netip.AddrPort // active: the client's data address
}

// cmdPASV: RFC 959 passive mode. The 227 reply can only carry an IPv4
// address.
func (s *session) cmdPASV(cmd rewrite.Command) {
	switch {
	case s.epsvAll:
		s.answer(replyFor(errAfterEPSVAll))
	case !s.dialedAP.Addr().Is4():
		s.answer(replyFor(errPASVOverIPv6))
	default:
		s.prepareData(dataRequest{cmd: cmd, passive: true})
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
		s.answer("200 EPSV ALL command successful.")
		return
	case arg == "":
	case arg == "1" && s.dialedAP.Addr().Is4(), arg == "2" && s.dialedAP.Addr().Is6():
	case arg == "1" || arg == "2":
		s.answer(s.familyReply())
		return
	default:
		s.answer(replyFor(rewrite.ErrSyntax))
		return
	}
	s.prepareData(dataRequest{cmd: cmd, passive: true, extended: true})
}

// familyReply is the 522 that names the family the client's control
// connection uses (RFC 2428 section 3).
func (s *session) familyReply() string {
	if s.dialedAP.Addr().Is4() {
		return "522 Network protocol not supported, use (1)."
	}
	return "522 Network protocol not supported, use (2)."
}

// cmdPORT and cmdEPRT: active mode. The client names its own data address;
// the proxy accepts it only if it is the client's own address and not a
// privileged port, so nobody can use the proxy to reach a third host (the
// FTP bounce attack, RFC 2577 section 3).
func (s *session) cmdPORT(cmd rewrite.Command) { s.requestActive(cmd, rewrite.ParsePORT, false) }
func (s *session) cmdEPRT(cmd rewrite.Command) { s.requestActive(cmd, rewrite.ParseEPRT, true) }

func (s *session) requestActive(cmd rewrite.Command, parse func(string) (netip.AddrPort, error), extended bool) {
	if s.epsvAll {
		s.answer(replyFor(errAfterEPSVAll))
		return
	}
	target, err := parse(strings.TrimSpace(cmd.Arg))
	if errors.Is(err, rewrite.ErrFamily) {
		s.answer(s.familyReply())
		return
	}
	if err == nil {
		target = netip.AddrPortFrom(target.Addr().Unmap(), target.Port())
		switch {
		case target.Addr() != s.clientAP.Addr() && !s.fromVia(target.Addr()):
			err = errNotOwnAddress
		case target.Port() < 1024:
			err = errPrivilegedPort
		}
	}
	if err != nil {
		s.log.Warn().Err(err).Str("cmd", cmd.Redacted()).Msg("data address refused")
		s.answer(replyFor(err))
		return
	}
	s.prepareData(dataRequest{cmd: cmd, extended: extended, target: target})
}

// fromVia reports whether addr is the trusted proxy the session came
// through, and that proxy is a chained ftpproxy: in active mode it names
// its own address, and is trusted to send only its client's data. Any
// other balancer's address is refused like any third host, or a client
// could use the proxy to reach the balancer (an FTP bounce).
func (s *session) fromVia(addr netip.Addr) bool {
	return s.cfg.ChainedProxies && s.viaAP.IsValid() && addr == s.viaAP.Addr()
}

// prepareData sets up the upstream's end of a data connection in the mode
// the configuration picks, then the client's end as the client asked.
func (s *session) prepareData(req dataRequest) {
	if s.needUpstreamPROT() {
		s.openUpstreamPROT(req.cmd)
		return
	}
	s.dropSetup()
	s.setupErr = nil
	passive := req.passive
	switch s.cfg.UpstreamDataMode {
	case DataModePassive:
		passive = true
	case DataModeActive:
		passive = false
	}
	if passive {
		// The upstream is asked in its own address family: EPSV over
		// IPv6; over IPv4 EPSV if the client used an RFC 2428 command,
		// with PASV as the fallback for an upstream that does not know it.
		epsv := s.upAP.Addr().Is6() || (req.extended && !s.upNoEPSV)
		line := rewrite.Command{Verb: "PASV"}
		if epsv {
			line.Verb = "EPSV"
		}
		s.open(&exchange{kind: kindPassive, cmd: req.cmd, req: req, epsv: epsv}, line)
		return
	}
	s.askUpstreamActive(req)
}

// upstreamPassiveAddr reads the upstream's data address from one line of
// its 227 or 229 reply.
func (s *session) upstreamPassiveAddr(line string, sentEPSV bool) (netip.AddrPort, error) {
	if sentEPSV {
		port, err := rewrite.ParseEPSVReply(line)
		return netip.AddrPortFrom(s.upAP.Addr(), port), err
	}
	ap, err := rewrite.ParsePASVReply(line)
	if err != nil {
		return ap, err
	}
	if ap.Addr() == s.upAP.Addr() || s.cfg.UpstreamPASVAddress {
		return ap, nil
	}
	// A server behind NAT often announces an address nobody else can
	// reach; its control address is the one known to work.
	s.log.Debug().Str("announced", ap.Addr().String()).Msg("upstream passive address differs from its control address; using the control address")
	return netip.AddrPortFrom(s.upAP.Addr(), ap.Port()), nil
}

// askUpstreamActive opens a listener on the proxy's upstream side and gives
// the upstream its address with PORT or EPRT (in the upstream's family);
// once the upstream agrees, the client's end is completed.
func (s *session) askUpstreamActive(req dataRequest) {
	up, err := s.listenEndpoint(s.upLocal.Addr(), s.cfg.ActivePorts, s.upAP.Addr())
	if err != nil {
		s.log.Warn().Err(err).Msg("cannot open a listener for the upstream's data connection")
		s.cfg.Metrics.dataListenFailed(err, false)
		s.answer(replyFor(err))
		return
	}
	ap := netip.AddrPortFrom(s.upLocal.Addr(), up.port)
	line := rewrite.Command{Verb: "EPRT", Arg: rewrite.FormatEPRT(ap)}
	if ap.Addr().Is4() {
		arg, _ := rewrite.FormatPORT(ap) // cannot fail for IPv4
		line = rewrite.Command{Verb: "PORT", Arg: arg}
	}
	s.open(&exchange{kind: kindActive, cmd: req.cmd, req: req, listener: &up}, line)
}

// completeData sets up the client's end once the upstream's is ready,
// starts the transfer and answers the client. upReply is the upstream's
// answer to a PORT/EPRT of the proxy's, relayed to a client that sent one
// too.
func (s *session) completeData(req dataRequest, up endpoint, upReply []string) {
	var client endpoint
	var advertised netip.Addr
	if req.passive {
		advertised = s.cfg.Advertiser.Advertise(s.clientAP.Addr(), s.dialedAP.Addr())
		bind := nat.ListenAddr(advertised, s.localAP.Addr())
		if s.viaAP.IsValid() {
			// Behind a load balancer the data connection arrives the way
			// the control connection did, at this end's own address; the
			// advertised address is the balancer's, which may share the
			// host and hold the same port numbers.
			bind = s.localAP.Addr()
		}
		var err error
		client, err = s.listenEndpoint(bind, s.cfg.PassivePorts, s.clientAP.Addr())
		if err != nil {
			up.close()
			s.cfg.Metrics.dataListenFailed(err, true)
			if errors.Is(err, errNoPassivePort) {
				s.log.Warn().Int("range", s.cfg.PassivePorts.Size()).Msg("passive port range exhausted")
			} else {
				s.log.Warn().Err(err).Msg("cannot open passive listener")
			}
			s.writeClientLine(replyFor(err))
			return
		}
	} else {
		client = endpoint{dialTo: req.target, dialFrom: s.localAP.Addr()}
	}

	var line string
	switch {
	case !req.passive && upReply != nil:
		s.writeClientReply(upReply)
	case !req.passive:
		line = "200 " + req.cmd.Verb + " command successful."
	case req.extended:
		line = rewrite.FormatEPSVReply(client.port)
	default:
		var err error
		if line, err = rewrite.FormatPASVReply(netip.AddrPortFrom(advertised, client.port)); err != nil {
			// The advertiser never gives an IPv4 client an IPv6 address;
			// if it did, the client must not be left waiting.
			s.log.Error().Err(err).Msg("cannot advertise passive address")
			client.close()
			up.close()
			s.writeClientLine(replyFor(err))
			return
		}
	}
	t := s.newTransfer(client, up)
	t.tlsConf = s.dataTLS()
	if s.upProtP {
		t.upTLSConf = s.upstreamTLS()
	}
	s.useKernelPath(t)
	s.setup = t
	t.start()
	if line != "" {
		s.writeClientLine(line)
	}
}

// listenEndpoint opens a data listener on ip that accepts only from.
func (s *session) listenEndpoint(ip netip.Addr, pool *nat.PortPool, from netip.Addr) (endpoint, error) {
	ln, port, pooled, err := listenData(ip, pool)
	if err != nil {
		return endpoint{}, err
	}
	e := endpoint{ln: ln, port: port, acceptFrom: from}
	if pooled {
		e.pool = pool
	}
	return e, nil
}

// close releases a listening endpoint that no transfer took over.
func (e *endpoint) close() {
	if e.ln == nil {
		return
	}
	e.ln.Close()
	if e.pool != nil {
		e.pool.Release(e.port)
	}
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
