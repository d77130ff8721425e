package probe

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
)

// lookup is the answer for one address family.
type lookup struct {
	addrs []netip.Addr
	err   error
}

// resolve looks up the host's IPv4 and IPv6 addresses, reports each family,
// and picks the address to connect to: the first IPv4 one, else the first
// IPv6 one. An address literal needs no lookup and gets no DNS results.
func (p *prober) resolve() (netip.Addr, bool) {
	if a, err := netip.ParseAddr(p.host); err == nil {
		return a.Unmap(), true
	}
	ctx, cancel := p.stepContext()
	defer cancel()
	var v4, v6 lookup
	var wg sync.WaitGroup
	wg.Go(func() { v4.addrs, v4.err = p.cfg.Resolver.LookupNetIP(ctx, "ip4", p.host) })
	wg.Go(func() { v6.addrs, v6.err = p.cfg.Resolver.LookupNetIP(ctx, "ip6", p.host) })
	wg.Wait()
	// The resolver may give IPv4 addresses in their IPv6-mapped form.
	for _, l := range []*lookup{&v4, &v6} {
		for i := range l.addrs {
			l.addrs[i] = l.addrs[i].Unmap()
		}
	}
	name := p.hostLabel()
	st, finding, fix := dnsVerdict(name, "A", v4, len(v6.addrs) > 0)
	p.add(CheckDNS4, st, finding, fix)
	st, finding, fix = dnsVerdict(name, "AAAA", v6, len(v4.addrs) > 0)
	p.add(CheckDNS6, st, finding, fix)
	switch {
	case len(v4.addrs) > 0:
		return v4.addrs[0], true
	case len(v6.addrs) > 0:
		return v6.addrs[0], true
	}
	return netip.Addr{}, false
}

// hostLabel names the host connected to in findings.
func (p *prober) hostLabel() string {
	if p.cfg.Through != "" {
		return "the proxy " + p.host
	}
	return p.host
}

// dnsVerdict judges one family's lookup; other says whether the other
// family has addresses.
func dnsVerdict(host, rr string, l lookup, other bool) (Status, string, string) {
	fam, otherFam := "IPv4", "IPv6"
	if rr == "AAAA" {
		fam, otherFam = otherFam, fam
	}
	switch {
	case len(l.addrs) > 0:
		return OK, fmt.Sprintf("%s has %s %s", host, rr, listAddrs(l.addrs)), ""
	case l.err == nil || notFound(l.err):
		if other {
			return OK, fmt.Sprintf("%s has no %s record: it is reached over %s", host, rr, otherFam), ""
		}
		return Fail, fmt.Sprintf("%s has no %s record (%s)", host, rr, lookupErr(l.err)),
			"check the name; if it is right, its DNS has no address for it"
	}
	st := Fail
	if other {
		st = Warn
	}
	return st, fmt.Sprintf("the %s lookup for %s failed: %s", rr, host, lookupErr(l.err)),
		fmt.Sprintf("check this machine's DNS resolver (/etc/resolv.conf): %s addresses may be missed", fam)
}

func notFound(err error) bool {
	var de *net.DNSError
	if errors.As(err, &de) {
		return de.IsNotFound
	}
	var ae *net.AddrError
	return errors.As(err, &ae)
}

func lookupErr(err error) string {
	var de *net.DNSError
	switch {
	case err == nil:
		return "empty answer"
	case isTimeout(err):
		return "timed out"
	case errors.As(err, &de):
		return de.Err
	}
	return err.Error()
}

func listAddrs(as []netip.Addr) string {
	const show = 4
	var s []string
	for i, a := range as {
		if i == show {
			s = append(s, fmt.Sprintf("and %d more", len(as)-show))
			break
		}
		s = append(s, a.String())
	}
	return strings.Join(s, ", ")
}

// dialResult is one TCP connection attempt.
type dialResult struct {
	ap   netip.AddrPort
	conn net.Conn
	err  error
	out  outcome
}

// connect opens the control connection to addr at the port probed, and
// tries the alternate ports at the same time; it returns the control
// connection if it opened.
func (p *prober) connect(addr netip.Addr) (net.Conn, bool) {
	main := netip.AddrPortFrom(addr, p.port)
	var alts []uint16
	if p.cfg.Through == "" {
		for _, port := range p.cfg.Ports {
			if port != p.port && port != 0 && !containsPort(alts, port) {
				alts = append(alts, port)
			}
		}
	}
	results := make([]dialResult, 1+len(alts))
	var wg sync.WaitGroup
	for i := range results {
		ap := main
		if i > 0 {
			ap = netip.AddrPortFrom(addr, alts[i-1])
		}
		wg.Go(func() {
			conn, err := p.dial(ap)
			results[i] = dialResult{ap: ap, conn: conn, err: err, out: classify(err)}
		})
	}
	wg.Wait()
	for _, r := range results[1:] {
		if r.conn != nil {
			r.conn.Close()
		}
	}

	m := results[0]
	if m.conn == nil {
		p.note(ConnControl, fmt.Sprintf("connect to %s: %s", m.ap, describeErr(m.err)))
		st, finding, fix := tcpVerdict(p.hostLabel(), m, results[1:], p.cfg.Through != "")
		p.add(CheckTCP, st, finding, fix)
	} else {
		p.ctl, p.local = addrPortOf(m.conn.RemoteAddr()), addrPortOf(m.conn.LocalAddr())
		p.note(ConnControl, fmt.Sprintf("connected to %s from %s", p.ctl, p.local))
		what := fmt.Sprintf("%s port %d is open", hostAt(p.hostLabel(), m.ap.Addr()), p.port)
		if p.cfg.Through != "" {
			what += fmt.Sprintf(", in front of %s", p.rep.Target)
		}
		p.add(CheckTCP, OK, what, "")
	}
	for _, r := range results[1:] {
		p.add(CheckTCP+"/"+strconv.Itoa(int(r.ap.Port())), OK, altFinding(r, m.conn != nil), "")
	}
	return m.conn, m.conn != nil
}

func containsPort(ports []uint16, p uint16) bool {
	for _, q := range ports {
		if q == p {
			return true
		}
	}
	return false
}

// tcpVerdict judges a control port that did not open, using what the
// alternate ports answered.
func tcpVerdict(host string, m dialResult, alts []dialResult, through bool) (Status, string, string) {
	port := m.ap.Port()
	var openAlt, answered []string
	for _, a := range alts {
		switch a.out {
		case open:
			openAlt = append(openAlt, strconv.Itoa(int(a.ap.Port())))
		case refused:
			answered = append(answered, strconv.Itoa(int(a.ap.Port())))
		}
	}
	hint := ""
	if len(openAlt) > 0 {
		hint = fmt.Sprintf("; %s open on %s: if an FTP server or an ftpproxy listens there, probe %s",
			portsAre(openAlt, "is", "are"), m.ap.Addr(), net.JoinHostPort(m.ap.Addr().String(), openAlt[0]))
	}
	switch m.out {
	case refused:
		fix := "the FTP server is down or listens on another port"
		if through {
			fix = "the proxy is not running there, or listens on another port"
		}
		return Fail, fmt.Sprintf("%s port %d refused the connection: the host answered, nothing listens", hostAt(host, m.ap.Addr()), port), fix + hint
	case timedOut:
		finding := fmt.Sprintf("%s port %d timed out: the connection is filtered", hostAt(host, m.ap.Addr()), port)
		if len(answered) > 0 {
			finding += fmt.Sprintf(" (%s, so the host is reachable and only port %d is blocked)", portsAre(answered, "answered", "answered"), port)
		}
		fix := fmt.Sprintf("a firewall or your ISP is likely dropping port %d: use an alternate port the server listens on, or run ftpproxy on a port that gets through (e.g. --listen :2121 --upstream %s) and check it with --through", port, m.ap)
		return Fail, finding, fix + hint
	case unreachable:
		return Fail, fmt.Sprintf("%s is unreachable: %s", hostAt(host, m.ap.Addr()), describeErr(m.err)),
			"no route to the host from here, or a firewall rejects it: check the address, your VPN and routes" + hint
	}
	return Fail, fmt.Sprintf("connecting to %s failed: %s", m.ap, describeErr(m.err)), "check the address and this machine's network" + hint
}

// portsAre names ports, "port 2121" or "ports 2121 and 990", followed by
// the verb in its singular or plural form.
func portsAre(ports []string, one, many string) string {
	if len(ports) == 1 {
		return "port " + ports[0] + " " + one
	}
	return "ports " + strings.Join(ports, " and ") + " " + many
}

// hostAt names a host and the address connected to, once if they are the
// same.
func hostAt(label string, a netip.Addr) string {
	if strings.HasSuffix(label, a.String()) {
		return label
	}
	return fmt.Sprintf("%s (%s)", label, a)
}

// altFinding describes an alternate port; mainOpen says whether the
// probed port opened, in which case the alternates are only for reference.
func altFinding(r dialResult, mainOpen bool) string {
	var s string
	switch r.out {
	case open:
		s = "open"
	case refused:
		s = "refused (nothing listens, but the host answers)"
	case timedOut:
		s = "timed out (filtered)"
	case unreachable:
		s = "unreachable"
	default:
		s = "failed: " + describeErr(r.err)
	}
	s = fmt.Sprintf("port %d: %s", r.ap.Port(), s)
	if mainOpen && r.out != open {
		s += " (for reference only)"
	}
	return s
}
