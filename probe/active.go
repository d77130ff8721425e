package probe

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/ftpproxy/ftpproxy/rewrite"
)

// behindNAT reports whether the probe's local address is private while
// the server's is public: then the server is sent an address it cannot
// reach, unless a NAT helper on the way rewrites the PORT. Without outside
// help the probe cannot learn its public address to check.
func behindNAT(local, remote netip.Addr) bool {
	k := addrKind(local)
	return (k == "private" || k == "link-local") && addrKind(remote) == "public"
}

// activeFailure is how an active-mode attempt failed.
type activeFailure int

const (
	portRefused  activeFailure = iota // PORT/EPRT got no 200
	neverConnect                      // the server did not connect in time
	serverGaveUp                      // the server said 425 or 426
	listRefused                       // LIST refused for another reason
)

// activeVerdict judges an active-mode attempt that failed: verb is PORT or
// EPRT, lap the probe's listener, r the server's reply that said so (for
// neverConnect, none).
func activeVerdict(local, remote netip.Addr, lap netip.AddrPort, how activeFailure, verb string, r reply, timeout time.Duration) (Status, string, string) {
	usePassive := "use passive mode (PASV or EPSV), the default of curl, FileZilla and most clients"
	natNote := ""
	if behindNAT(local, remote) {
		natNote = fmt.Sprintf(". The probe's address %s is private and the server's %s is public: the server was told to connect to %s, which it cannot reach from outside (the probe cannot learn its public address without outside help). Active mode is unlikely to work from behind NAT",
			local, remote, lap)
	}
	switch how {
	case portRefused:
		finding := fmt.Sprintf("the server refuses %s (%s): active mode is not available", verb, r.quoted())
		if behindNAT(local, remote) {
			// Servers refuse a PORT naming an address other than the
			// one the control connection comes from, which NAT
			// changed.
			finding += fmt.Sprintf(". The probe's address %s is private and the server's %s is public: the %s named %s, which is not the address the server sees the probe connect from, and which it could not reach from outside anyway. Active mode is unlikely to work from behind NAT",
				local, remote, verb, lap)
		}
		return Warn, finding, usePassive
	case serverGaveUp:
		return Warn, fmt.Sprintf("the server could not connect to the probe's listener %s: %s%s", lap, r.quoted(), natNote),
			usePassive + "; or let the server's connections (from its port 20) through the firewalls on the way"
	case listRefused:
		return Warn, fmt.Sprintf("LIST is refused after %s (%s), so active mode could not be tried", verb, r.quoted()),
			"the login's directory cannot be listed: check its permissions"
	}
	return Warn, fmt.Sprintf("the server did not connect to the probe's listener %s within %s%s", lap, timeout, natNote),
		usePassive + "; or let the server's connections (from its port 20) through the firewalls on the way"
}

type accepted struct {
	conn net.Conn
	err  error
}

// active gives the server a PORT (or EPRT, on IPv6) naming a listener of
// the probe's own, and lists the directory over the connection the server
// opens to it.
func (p *prober) active(c *ctrl) bool {
	local, remote := p.local.Addr(), p.ctl.Addr()
	var lc net.ListenConfig
	ln, err := lc.Listen(p.ctx, "tcp", netip.AddrPortFrom(local, 0).String())
	if err != nil {
		p.add(CheckActive, Warn, fmt.Sprintf("the probe cannot listen on its address %s for the server to connect to: %s", local, describeErr(err)), "")
		return true
	}
	defer ln.Close()
	lap := addrPortOf(ln.Addr())
	p.note(ConnData, fmt.Sprintf("listening on %s", lap))
	verb, arg := "EPRT", rewrite.FormatEPRT(lap)
	if local.Is4() {
		verb = "PORT"
		arg, _ = rewrite.FormatPORT(lap) // an IPv4 address and a listener's port: cannot fail
	}
	verdict := func(how activeFailure, r reply) {
		st, finding, fix := activeVerdict(local, remote, lap, how, verb, r, p.cfg.Timeout)
		p.add(CheckActive, st, finding, fix)
	}
	r, err := c.cmd(verb + " " + arg)
	if err != nil {
		p.add(CheckActive, Fail, verb+" got no reply: "+readFailure(err, p), "the control connection broke: a firewall or middlebox may be interfering")
		return false
	}
	if r.code != 200 {
		verdict(portRefused, r)
		return true
	}

	ln.(*net.TCPListener).SetDeadline(p.stepDeadline())
	defer context.AfterFunc(p.ctx, func() { ln.Close() })()
	got := make(chan accepted, 1)
	go func() {
		conn, err := ln.Accept()
		got <- accepted{conn, err}
	}()
	var a accepted
	waited := false
	defer func() {
		ln.Close()
		if !waited {
			a = <-got
		}
		if a.conn != nil {
			a.conn.Close()
		}
	}()
	r, err = c.cmd("LIST")
	switch {
	case err != nil && !isTimeout(err):
		p.add(CheckActive, Fail, "LIST got no reply: "+readFailure(err, p), "the control connection broke: a firewall or middlebox may be interfering")
		return false
	case err != nil:
		// Servers connect before they answer 150; one that has not
		// answered is still trying.
		verdict(neverConnect, r)
		return false
	case r.code == 425 || r.code == 426:
		verdict(serverGaveUp, r)
		return true
	case r.code >= 400:
		verdict(listRefused, r)
		return true
	}
	a, waited = <-got, true
	if a.conn == nil {
		p.note(ConnData, fmt.Sprintf("no connection to %s: %s", lap, describeErr(a.err)))
		c.broken = true
		verdict(neverConnect, r)
		return false
	}
	from := addrPortOf(a.conn.RemoteAddr())
	p.note(ConnData, fmt.Sprintf("connection from %s", from))
	how := fmt.Sprintf("%s: the server connected from %s to the probe's listener %s; LIST", verb, from, lap)
	if behindNAT(local, remote) {
		how = fmt.Sprintf("%s: the server connected from %s to the probe's listener %s, though the probe's address is private (a NAT helper on the way rewrites %s); LIST", verb, from, lap, verb)
	}
	p.finish(c, a.conn, r, how, CheckActive, Warn)
	return !c.broken
}
