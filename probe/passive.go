package probe

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"

	"github.com/ftpproxy/ftpproxy/rewrite"
)

// cgnat is the shared address space of carrier-grade NAT (RFC 6598):
// private in effect, though netip does not count it as such.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// addrKind names the kind of address a for findings.
func addrKind(a netip.Addr) string {
	switch {
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case a.IsLinkLocalUnicast():
		return "link-local"
	case a.IsPrivate() || cgnat.Contains(a):
		return "private"
	}
	return "public"
}

// pasvObs is what the PASV check saw.
type pasvObs struct {
	r       reply
	err     error // the conversation broke
	addrErr error // the 227 names no address

	adv    netip.AddrPort // the address in the 227
	advOut outcome
	advErr error

	ctlTried bool           // adv is not the control address, so that was tried too
	ctlAP    netip.AddrPort // the control address with the port of a second 227
	ctlOut   outcome
	ctlErr   error
}

// epsvObs is what the EPSV check saw.
type epsvObs struct {
	r       reply
	err     error
	portErr error
	ap      netip.AddrPort // the control address with the 229's port
	out     outcome
	dialErr error
}

// passive runs the PASV, EPSV and LIST checks.
func (p *prober) passive(c *ctrl) bool {
	pv := p.pasvObserve(c)
	var ev epsvObs
	if !c.broken && !p.stopped(CheckEPSV) {
		ev = p.epsvObserve(c)
	}
	v6 := p.ctl.Addr().Is6()
	st, finding, fix := pasvVerdict(p.ctl, pv, v6)
	epsvRan := ev.err != nil || ev.r.code != 0
	if st == Fail && pv.err == nil && pv.r.code != 227 && epsvRan && ev.err == nil && ev.r.code == 229 && ev.out == open {
		st, finding = Warn, finding+": clients that only speak PASV fail; EPSV works"
	}
	p.add(CheckPASV, st, finding, fix)
	if epsvRan {
		st, finding, fix = epsvVerdict(p.ctl, ev, v6)
		p.add(CheckEPSV, st, finding, fix)
	}
	if c.broken || p.stopped(CheckLIST) {
		return false
	}
	// The control address first: a connection to another address that
	// opens may have reached another host or a middlebox, not the server.
	switch {
	case pv.ctlTried && pv.ctlOut == open:
		p.list(c, "PASV", true)
	case pv.advOut == open && pv.r.code == 227 && pv.addrErr == nil:
		p.list(c, "PASV", false)
	case epsvRan && ev.r.code == 229 && ev.out == open:
		p.list(c, "EPSV", true)
	}
	return !c.broken
}

// pasvObserve sends PASV, connects to the address in the 227 and, if that is
// not the control address, sends PASV again and connects to the control
// address with the new port.
func (p *prober) pasvObserve(c *ctrl) pasvObs {
	var o pasvObs
	o.r, o.err = c.cmd("PASV")
	if o.err != nil || o.r.code != 227 {
		return o
	}
	o.adv, o.addrErr = parse227(o.r)
	if o.addrErr != nil {
		return o
	}
	conn, err := p.dialData(o.adv)
	o.advOut, o.advErr = classify(err), err
	if conn != nil {
		conn.Close()
	}
	if o.adv.Addr() == p.ctl.Addr() || p.ctx.Err() != nil {
		return o
	}
	o.ctlTried = true
	r, err := c.cmd("PASV")
	if err == nil && r.code != 227 {
		err = fmt.Errorf("a second PASV got %s", r.quoted())
	}
	var ap netip.AddrPort
	if err == nil {
		ap, err = parse227(r)
	}
	if err != nil {
		o.ctlOut, o.ctlErr = failed, err
		return o
	}
	o.ctlAP = netip.AddrPortFrom(p.ctl.Addr(), ap.Port())
	conn, err = p.dialData(o.ctlAP)
	o.ctlOut, o.ctlErr = classify(err), err
	if conn != nil {
		conn.Close()
	}
	return o
}

// epsvObserve sends EPSV and connects to the control address with the
// 229's port.
func (p *prober) epsvObserve(c *ctrl) epsvObs {
	var o epsvObs
	o.r, o.err = c.cmd("EPSV")
	if o.err != nil || o.r.code != 229 {
		return o
	}
	port, err := rewrite.ParseEPSVReply(strings.Join(o.r.lines, " "))
	if err != nil {
		o.portErr = err
		return o
	}
	o.ap = netip.AddrPortFrom(p.ctl.Addr(), port)
	conn, err := p.dialData(o.ap)
	o.out, o.dialErr = classify(err), err
	if conn != nil {
		conn.Close()
	}
	return o
}

// parse227 finds the address in a 227 reply, on any of its lines.
func parse227(r reply) (netip.AddrPort, error) {
	ap, err := rewrite.ParsePASVReply(strings.Join(r.lines, " "))
	if err != nil {
		return ap, err
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// dialData opens a data connection within one step.
func (p *prober) dialData(ap netip.AddrPort) (net.Conn, error) {
	conn, err := p.dial(ap)
	if err != nil {
		p.note(ConnData, fmt.Sprintf("connect to %s: %s", ap, describeErr(err)))
		return nil, err
	}
	p.note(ConnData, fmt.Sprintf("connected to %s", ap))
	return conn, nil
}

// masqFix names the server settings that make a server behind NAT
// announce its public address.
func masqFix(public netip.Addr) string {
	a := public.String()
	return fmt.Sprintf("set the server's public address for passive replies (vsftpd pasv_address=%s, proftpd MasqueradeAddress %s, pure-ftpd -P %s), or put ftpproxy in front of it (it connects to the control address)", a, a, a)
}

// firewallFix is the advice for a passive port that is filtered.
func firewallFix(dataPort uint16) string {
	return fmt.Sprintf("open the server's passive port range (it includes %d) in the firewalls on the way, or make the range match the open one (vsftpd pasv_min_port/pasv_max_port, proftpd PassivePorts, pure-ftpd -p); or run ftpproxy with an open --passive-ports range in front of the server and probe again with --through", dataPort)
}

// dataVerdict judges a data connection to ap that did not open.
func dataVerdict(ctl, ap netip.AddrPort, out outcome, err error) (Status, string, string) {
	switch out {
	case timedOut:
		return Fail, fmt.Sprintf("the control connection works but the data connection to %s timed out: a firewall opens %d but not the passive range: port %d", ap, ctl.Port(), ap.Port()),
			firewallFix(ap.Port())
	case refused:
		return Fail, fmt.Sprintf("nothing listens on the passive port: %s refused the data connection", ap),
			"the server announces a port it does not listen on: a NAT or port forwarding in front of it maps a different range than the server's passive range; forward the range one to one"
	case unreachable:
		return Fail, fmt.Sprintf("the data connection to %s is unreachable: %s", ap, describeErr(err)),
			firewallFix(ap.Port())
	}
	return Fail, fmt.Sprintf("the data connection to %s failed: %s", ap, describeErr(err)), "check the network between here and the server"
}

// pasvVerdict judges the PASV check: where the 227 points, and which of
// that address and the control address answered. v6 says the control
// connection is IPv6, where PASV cannot work (RFC 2428).
func pasvVerdict(ctl netip.AddrPort, o pasvObs, v6 bool) (Status, string, string) {
	switch {
	case o.err != nil:
		return Fail, "PASV got no reply: " + describeErr(o.err), "the control connection broke: a firewall or middlebox may be interfering"
	case o.r.code == 0:
		return Fail, "PASV did not run: the probe's deadline passed", ""
	case o.r.code != 227 && v6 && o.r.code >= 500:
		return OK, fmt.Sprintf("PASV is refused on an IPv6 control connection (%s), as RFC 2428 allows: EPSV is the passive mode here", o.r.quoted()), ""
	case o.r.code != 227:
		return Fail, "PASV is refused: " + o.r.quoted(), "passive mode is what clients behind NAT need: enable it on the server"
	case o.addrErr != nil:
		return Fail, "the 227 reply names no valid address: " + o.r.quoted(), "the server's passive reply is malformed: ask its admin"
	}
	adv := o.adv
	if adv.Addr() == ctl.Addr() {
		if o.advOut == open {
			return OK, fmt.Sprintf("227 names the control address, port %d; the data connection opens", adv.Port()), ""
		}
		return dataVerdict(ctl, adv, o.advOut, o.advErr)
	}
	kind := addrKind(adv.Addr())
	desc := fmt.Sprintf("227 names %s (%s), not the control address %s", adv, kind, ctl.Addr())
	if kind == "public" {
		desc = fmt.Sprintf("227 names %s, a public address other than the control address %s", adv, ctl.Addr())
	}
	switch {
	case o.advOut == open && kind == "public":
		return OK, desc + "; the data connection to it opens", ""
	case o.advOut == open:
		return Warn, desc + "; a connection to it opens from here (on the server's network, or through a middlebox), but clients outside that network cannot reach it", masqFix(ctl.Addr())
	case o.ctlOut == open:
		return Warn, fmt.Sprintf("%s; it %s, the control address with the port of the next 227 (%s) opens: a server behind NAT without its masquerade setting. Clients that fall back to the control address (curl, FileZilla, WinSCP, ftpproxy) work, others fail",
				desc, didNotOpen(o.advOut, o.advErr), o.ctlAP),
			masqFix(ctl.Addr())
	case o.ctlOut == timedOut:
		return Fail, fmt.Sprintf("%s; it %s, and the control address with the port of the next 227 (%s) timed out too: a firewall opens %d but not the passive range",
				desc, didNotOpen(o.advOut, o.advErr), o.ctlAP, ctl.Port()),
			masqFix(ctl.Addr()) + "; and " + firewallFix(o.ctlAP.Port())
	}
	what := "could not be tried"
	if o.ctlAP.IsValid() {
		what = fmt.Sprintf("(%s) %s", o.ctlAP, didNotOpen(o.ctlOut, o.ctlErr))
	}
	return Fail, fmt.Sprintf("%s; it %s, and the control address with the port of the next 227 %s", desc, didNotOpen(o.advOut, o.advErr), what),
		masqFix(ctl.Addr())
}

// didNotOpen says how a data connection failed, as a verb phrase.
func didNotOpen(out outcome, err error) string {
	switch out {
	case timedOut:
		return "timed out"
	case refused:
		return "refused the connection"
	case unreachable:
		return "is unreachable"
	case untried:
		return "was not tried"
	}
	if err == nil {
		return "failed"
	}
	return "failed (" + describeErr(err) + ")"
}

// epsvVerdict judges the EPSV check.
func epsvVerdict(ctl netip.AddrPort, o epsvObs, v6 bool) (Status, string, string) {
	switch {
	case o.err != nil:
		return Fail, "EPSV got no reply: " + describeErr(o.err), "the control connection broke: a firewall or middlebox may be interfering"
	case o.r.code != 229 && v6:
		return Fail, "EPSV is refused on an IPv6 control connection: " + o.r.quoted() + "; no passive mode works",
			"enable EPSV (RFC 2428) on the server, or reach it over IPv4"
	case o.r.code != 229:
		return Warn, "EPSV is refused (" + o.r.quoted() + "): clients that try it first fall back to PASV, IPv6 clients cannot",
			"enable EPSV (RFC 2428) on the server"
	case o.portErr != nil:
		return Fail, "the 229 reply names no valid port: " + o.r.quoted(), "the server's EPSV reply is malformed: ask its admin"
	case o.out == open:
		return OK, fmt.Sprintf("229 names port %d; the data connection to the control address opens", o.ap.Port()), ""
	}
	return dataVerdict(ctl, o.ap, o.out, o.dialErr)
}

// list opens a passive data connection as verb does (to the control
// address if toControl, else to the 227's) and lists the directory over it.
func (p *prober) list(c *ctrl, verb string, toControl bool) {
	how := verb
	if verb == "PASV" && toControl {
		how = "PASV to the control address"
	}
	r, err := c.cmd(verb)
	want := 227
	if verb == "EPSV" {
		want = 229
	}
	if err != nil || r.code != want {
		p.listBroken(c, err, fmt.Sprintf("%s got %s this time", verb, r.quoted()))
		return
	}
	var ap netip.AddrPort
	if verb == "EPSV" {
		var port uint16
		port, err = rewrite.ParseEPSVReply(strings.Join(r.lines, " "))
		ap = netip.AddrPortFrom(p.ctl.Addr(), port)
	} else {
		ap, err = parse227(r)
		if toControl {
			ap = netip.AddrPortFrom(p.ctl.Addr(), ap.Port())
		}
	}
	if err != nil {
		p.add(CheckLIST, Fail, fmt.Sprintf("%s's reply names no address this time: %s", verb, r.quoted()), "")
		return
	}
	conn, err := p.dialData(ap)
	if err != nil {
		st, finding, fix := dataVerdict(p.ctl, ap, classify(err), err)
		p.add(CheckLIST, st, "for LIST, "+finding, fix)
		return
	}
	defer conn.Close()
	p.transfer(c, conn, ap, "LIST over "+how, CheckLIST, Fail)
}

// listBroken reports a LIST that could not start.
func (p *prober) listBroken(c *ctrl, err error, what string) {
	if err != nil {
		what = readFailure(err, p)
	}
	p.add(CheckLIST, Fail, "LIST could not start: "+what, "")
}

// transfer sends LIST and reads its data from conn, a passive data
// connection to ap, and its replies. A failure is reported as bad.
func (p *prober) transfer(c *ctrl, conn net.Conn, ap netip.AddrPort, how, check string, bad Status) {
	r, err := c.cmd("LIST")
	if err != nil {
		if isTimeout(err) {
			// Servers answer 150 once they have the data connection.
			p.add(check, bad, fmt.Sprintf("%s: the data connection to %s opened, but the server did not start the transfer within %s: the connection reached something other than the server (another host at that address, or a middlebox)", how, ap, p.cfg.Timeout),
				"clients must connect to the server's own address: see the pasv result")
			return
		}
		p.add(check, bad, fmt.Sprintf("%s: LIST got no reply: %s", how, readFailure(err, p)), "")
		return
	}
	switch {
	case r.code == 425 || r.code == 426:
		p.add(check, bad, fmt.Sprintf("%s: the server says it cannot use the data connection: %s", how, r.quoted()),
			"a firewall or NAT on the way interferes with the data connection")
		return
	case r.code >= 400:
		p.add(check, Warn, fmt.Sprintf("%s: LIST is refused (%s), so no data moved", how, r.quoted()),
			"the login's directory cannot be listed: check its permissions")
		return
	}
	p.finish(c, conn, r, how, check, bad)
}

// finish reads a transfer's data from conn and its completion reply, after
// its first reply r.
func (p *prober) finish(c *ctrl, conn net.Conn, r reply, how, check string, bad Status) {
	n, derr := p.readData(conn)
	if derr != nil {
		c.broken = true
		p.add(check, bad, fmt.Sprintf("%s: the data connection opened but did not finish: %d bytes, then %s", how, n, describeErr(derr)),
			"a firewall on the way interferes with data connections")
		return
	}
	cut := n == maxDataBytes
	// Closed before the completion reply is read, as clients do: a
	// server may wait for the client's end of the data connection to
	// close before it sends its 226 (proftpd's lingering close). Cut
	// short, the server ends the transfer, most with 426.
	conn.Close()
	if r.code < 200 {
		var err error
		if r, err = c.read(); err != nil {
			p.add(check, bad, fmt.Sprintf("%s: %d bytes came, but no completion reply: %s", how, n, readFailure(err, p)),
				"the control connection stalls during a transfer: a firewall may drop quiet control connections")
			return
		}
	}
	switch {
	case cut:
		p.add(check, OK, fmt.Sprintf("%s: the first %d bytes came (the rest was not read)", how, n), "")
	case r.code == 226 || r.code == 250:
		p.add(check, OK, fmt.Sprintf("%s: %d bytes, then %s", how, n, r.quoted()), "")
	default:
		p.add(check, bad, fmt.Sprintf("%s: %d bytes, then %s", how, n, r.quoted()), "the transfer failed on the server's side")
	}
}

// readData reads a data connection to its end, at most maxDataBytes, within
// one step.
func (p *prober) readData(conn net.Conn) (int64, error) {
	conn.SetReadDeadline(p.stepDeadline())
	n, err := io.Copy(io.Discard, io.LimitReader(conn, maxDataBytes))
	switch {
	case err != nil:
		p.note(ConnData, fmt.Sprintf("%d bytes, then %s", n, describeErr(err)))
	case n == maxDataBytes:
		p.note(ConnData, fmt.Sprintf("%d bytes; the rest is not read", n))
	default:
		p.note(ConnData, fmt.Sprintf("%d bytes, then the end", n))
	}
	return n, err
}
