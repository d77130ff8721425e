package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/ftpproxy/ftpproxy/nat"
	"github.com/ftpproxy/ftpproxy/rewrite"
)

// ForwardConfig is forward mode: the client names the server in its login
// (USER user@host, OPEN host, or one of the proxy-authenticating forms
// FTP clients send to a proxy), and the proxy connects there if the
// destination policy allows it. The upstream is then a stranger's choice:
// it is held to the same rules as any upstream (unsolicited replies
// dropped, bounded replies, its passive address never followed), and
// nothing it says reaches the client before the login does.
type ForwardConfig struct {
	// Dest is which destinations may be reached. Required: a nil or empty
	// policy allows nothing.
	Dest *nat.DestPolicy
	// From, if not empty, lists the only client networks that may name a
	// destination. Others may still log in to Config.Upstream, if set.
	From []netip.Prefix
	// Users, if set, are the proxy's own accounts: a client must log in
	// to the proxy before it may name a destination.
	Users *ProxyUsers
	// Resolver looks up destination names (nil: the system's). Each name
	// is looked up once per connection, and the addresses checked are the
	// ones dialled.
	Resolver nat.Resolver
}

const (
	replyForwardGreeting   = "220 ftpproxy forward proxy ready: log in as USER user@host[:port]."
	replyForwardNoDest     = "530 Name the FTP server: USER user@host[:port], or OPEN host first."
	replyForwardLoginFirst = "530 Log in first: USER user@host[:port]."
	replyForwardFrom       = "530 Forwarding is not allowed from your address."
	replyProxyLoginBad     = "530 Proxy login incorrect."
	replyProxyLoginFirst   = "530 Log in to the proxy first: USER proxy-user, then PASS."
	replyForwardRefused    = "530 Destination refused: "
)

// forwardStep is what the proxy waits for in a proxy-authenticated login.
type forwardStep int

const (
	stepNone          forwardStep = iota
	stepProxyPass                 // after USER proxyuser: PASS proxypass, then USER user@host or OPEN host
	stepProxyPassHost             // after USER proxyuser@host: PASS proxypass, then USER user and PASS
	stepJoinedPass                // after USER user@proxyuser@host: PASS pass@proxypass
	stepAcctPass                  // after USER user@host proxyuser: PASS pass, then ACCT proxypass
	stepAcct                      // the server's password is kept: ACCT proxypass
)

// forwardThen is what follows once the upstream has greeted.
type forwardThen int

const (
	thenUSER     forwardThen = iota // send USER: the client waits for its reply
	thenUSERPASS                    // send USER, then PASS after a 331: the client waits for the last reply
	thenReply                       // answer the client's OPEN, SITE or proxy PASS
)

// forwardState is a forward-mode session's login before it has a server.
type forwardState struct {
	authed    bool // the proxy login is done, or none is needed
	step      forwardStep
	proxyUser string
	user      string // the server's user
	pass      string // the server's password, when it came before the connection
	host      string // the destination as named, for dialling checks, logs and TLS
	port      uint16
	then      forwardThen
	reply     string // for thenReply
	// viaUSER: the session reached its server through a USER that named
	// it (user@host), so a later USER is read the same way.
	viaUSER bool
}

// forwardLogin is what one USER argument says in forward mode.
type forwardLogin struct {
	step      forwardStep // stepNone: a plain USER user@host (or USER user)
	user      string
	proxyUser string
	dest      string // "" when the USER names no server
}

var errForwardUSER = errors.New("proxy: malformed forward-mode USER")

// parseForwardUSER reads a USER argument in forward mode. The last @
// separates the server, so a user name may hold @ itself. With proxyAuth
// (proxy users configured and not logged in yet), the forms that carry the
// proxy user are read as such:
//
//	proxyuser                  PASS proxypass; then USER user@host or OPEN host
//	proxyuser@host             PASS proxypass; then USER user, PASS pass
//	user@proxyuser@host        PASS pass@proxypass
//	user@host proxyuser        PASS pass; ACCT proxypass
func parseForwardUSER(arg string, proxyAuth bool) (forwardLogin, error) {
	if arg == "" {
		return forwardLogin{}, errForwardUSER
	}
	split := func(s string) (before, after string, ok bool) {
		i := strings.LastIndexByte(s, '@')
		if i <= 0 || i == len(s)-1 {
			return "", "", false
		}
		return s[:i], s[i+1:], true
	}
	if !proxyAuth {
		if !strings.Contains(arg, "@") {
			return forwardLogin{user: arg}, nil
		}
		user, dest, ok := split(arg)
		if !ok {
			return forwardLogin{}, errForwardUSER
		}
		return forwardLogin{user: user, dest: dest}, nil
	}
	if i := strings.LastIndexByte(arg, ' '); i >= 0 {
		proxyUser := arg[i+1:]
		user, dest, ok := split(arg[:i])
		if !ok || proxyUser == "" || strings.Contains(proxyUser, "@") {
			return forwardLogin{}, errForwardUSER
		}
		return forwardLogin{step: stepAcctPass, user: user, proxyUser: proxyUser, dest: dest}, nil
	}
	if !strings.Contains(arg, "@") {
		return forwardLogin{step: stepProxyPass, proxyUser: arg}, nil
	}
	rest, dest, ok := split(arg)
	if !ok {
		return forwardLogin{}, errForwardUSER
	}
	if !strings.Contains(rest, "@") {
		return forwardLogin{step: stepProxyPassHost, proxyUser: rest, dest: dest}, nil
	}
	user, proxyUser, ok := split(rest)
	if !ok {
		return forwardLogin{}, errForwardUSER
	}
	return forwardLogin{step: stepJoinedPass, user: user, proxyUser: proxyUser, dest: dest}, nil
}

// forwardCommand handles a client command in forward mode before the
// session has a server: the login that names it, and the few commands the
// proxy answers itself.
func (s *session) forwardCommand(cmd rewrite.Command) {
	f := s.fwd
	switch cmd.Verb {
	case "USER":
		if s.loginRefused() {
			return
		}
		s.forwardUSER(cmd.Arg)
	case "PASS":
		if s.loginRefused() {
			return
		}
		s.forwardPASS(cmd.Arg)
	case "ACCT":
		if f.step != stepAcct {
			s.answer("503 Send USER first.")
			return
		}
		proxyUser, pass := f.proxyUser, f.pass
		f.step, f.pass = stepNone, ""
		if !s.proxyLogin(proxyUser, cmd.Arg) {
			return
		}
		f.pass = pass
		s.forwardConnect(thenUSERPASS)
	case "OPEN", "SITE":
		s.forwardOPEN(cmd)
	case "AUTH", "PBSZ", "PROT", "CCC":
		commandHandlers[cmd.Verb](s, cmd)
	case "QUIT":
		s.answer("221 Goodbye.")
		s.end("quit")
	case "NOOP":
		s.answer("200 NOOP ok.")
	case "FEAT":
		if s.tlsOffered() {
			s.writeClientReply(append(append([]string{"211-Features:"}, featTLS...), "211 End"))
		} else {
			s.answer("211 No features before the server is named.")
		}
	case "HELP":
		s.writeClientReply([]string{
			"214-ftpproxy forward proxy. Name the FTP server in the login:",
			" USER user@host[:port], then PASS; or OPEN host[:port] (or SITE host), then USER and PASS.",
			" With a proxy account: USER proxy-user and PASS first, or USER user@proxy-user@host",
			" with PASS pass@proxy-pass, or USER proxy-user@host, or USER user@host proxy-user and ACCT.",
			"214 End.",
		})
	default:
		s.answer(replyForwardLoginFirst)
	}
}

// forwardConnected looks at a command of a forward-mode session that has
// its server. A client that named the server in its USER may send USER
// user@host again (after a failed password, or REIN): the same server is
// taken off and the USER goes on; another server is refused, because the
// password that follows was meant for that one, not for this. OPEN has no
// meaning for the server. It reports whether cmd (maybe changed) goes on.
func (s *session) forwardConnected(cmd rewrite.Command) (rewrite.Command, bool) {
	f := s.fwd
	switch {
	case cmd.Verb == "OPEN":
		s.answer("530 Already connected to " + f.where() + ": open a new connection to reach another server.")
		return cmd, false
	case cmd.Verb != "USER" || !f.viaUSER:
		return cmd, true
	}
	l, err := parseForwardUSER(cmd.Arg, false)
	if err != nil || l.dest == "" {
		return cmd, true
	}
	host, port, err := nat.SplitDestination(l.dest, 21)
	if err == nil && host == f.host && port == f.port {
		cmd.Arg = l.user
		return cmd, true
	}
	s.log.Warn().Str("dest", clip(l.dest)).Msg("USER names another server than the session's: refused")
	s.answer("530 This session is connected to " + f.where() + ": open a new connection to reach another server.")
	return cmd, false
}

// where names the session's server for a reply.
func (f *forwardState) where() string {
	if f.host == "" {
		return "the default server"
	}
	return net.JoinHostPort(f.host, fmt.Sprint(f.port))
}

// fromAllowed reports whether the client may name a destination
// (--forward-from).
func (s *session) fromAllowed() bool {
	from := s.cfg.Forward.From
	return len(from) == 0 || nat.Contains(from, s.clientAP.Addr())
}

// refuseFrom answers a client outside --forward-from.
func (s *session) refuseFrom(what string) {
	s.log.Warn().Str("reason", "client not in --forward-from").Str("dest", clip(what)).Msg("forward refused")
	s.cfg.Metrics.forwardRefused(forwardRefusedClient)
	s.answer(replyForwardFrom)
}

func (s *session) forwardUSER(arg string) {
	f := s.fwd
	f.step, f.pass = stepNone, ""
	needProxy := s.cfg.Forward.Users != nil && !f.authed
	if !s.fromAllowed() {
		// Only the default upstream, if any, and no proxy login: a
		// client that may not forward has no use for a proxy password
		// and must not be able to try them.
		needProxy = false
	}
	l, err := parseForwardUSER(arg, needProxy)
	if err != nil {
		s.log.Info().Msg("malformed forward-mode USER")
		s.answer("501 Expected USER user@host[:port].")
		return
	}
	if l.step != stepNone {
		f.step, f.proxyUser, f.user = l.step, l.proxyUser, l.user
		if l.dest != "" && !s.setDest(l.dest) {
			f.step = stepNone
			return
		}
		switch l.step {
		case stepJoinedPass:
			s.answer("331 Send the password as PASS password@proxy-password.")
		case stepAcctPass:
			s.answer("331 Send the server's password, then the proxy password with ACCT.")
		default:
			s.answer("331 Proxy password required for " + clip(l.proxyUser) + ".")
		}
		return
	}
	f.user = l.user
	if l.dest != "" && !s.fromAllowed() {
		s.refuseFrom(l.dest)
		return
	}
	f.viaUSER = true
	if l.dest == "" {
		if s.cfg.Upstream == "" && s.cfg.Pool == nil {
			if !s.fromAllowed() {
				s.refuseFrom("")
				return
			}
			s.answer(replyForwardNoDest)
			return
		}
		// The configured upstream: no destination policy applies.
		s.setUser(f.user)
		s.cur = &exchange{kind: kindGreeting}
		f.then = thenUSER
		targets := s.upstreamTargets()
		s.wg.Go(func() { s.connect(targets, false) })
		return
	}
	if s.setDest(l.dest) {
		s.forwardConnect(thenUSER)
	}
}

func (s *session) forwardPASS(arg string) {
	f := s.fwd
	step := f.step
	f.step = stepNone
	switch step {
	case stepProxyPass:
		if s.proxyLogin(f.proxyUser, arg) {
			s.answer("230 Proxy login accepted: now USER user@host[:port], or OPEN host.")
		}
	case stepProxyPassHost:
		if s.proxyLogin(f.proxyUser, arg) {
			f.reply = "230 Proxy login accepted; connected to " + f.host + ": send USER and PASS for the server."
			s.forwardConnect(thenReply)
		}
	case stepJoinedPass:
		i := strings.LastIndexByte(arg, '@')
		if i < 0 {
			s.proxyLoginFailed(f.proxyUser, "no proxy password after @")
			return
		}
		if s.proxyLogin(f.proxyUser, arg[i+1:]) {
			f.pass = arg[:i]
			s.forwardConnect(thenUSERPASS)
		}
	case stepAcctPass:
		f.pass, f.step = arg, stepAcct
		s.answer("332 Send the proxy password with ACCT.")
	default:
		s.answer("503 Send USER user@host[:port] first.")
	}
}

// forwardOPEN connects to the server an OPEN or SITE names; USER and PASS
// then go to it as they come.
func (s *session) forwardOPEN(cmd rewrite.Command) {
	f := s.fwd
	dest := strings.TrimSpace(cmd.Arg)
	if !s.fromAllowed() {
		s.refuseFrom(dest)
		return
	}
	if s.cfg.Forward.Users != nil && !f.authed {
		s.log.Info().Str("cmd", cmd.Verb).Msg("destination named before the proxy login: refused")
		s.answer(replyProxyLoginFirst)
		return
	}
	if dest == "" || strings.ContainsAny(dest, " \t") {
		s.answer("501 Expected " + cmd.Verb + " host[:port].")
		return
	}
	if s.setDest(dest) {
		f.reply = "220 Connected to " + f.host + ": send USER and PASS for the server."
		s.forwardConnect(thenReply)
	}
}

// setDest records the destination a login names, if this client may use
// forward mode and the name is well formed; it answers otherwise.
func (s *session) setDest(dest string) bool {
	if !s.fromAllowed() {
		s.refuseFrom(dest)
		return false
	}
	host, port, err := nat.SplitDestination(dest, 21)
	if err != nil {
		s.log.Info().Str("reason", "malformed destination").Msg("forward refused")
		s.answer("501 Malformed destination: expected host[:port] or [IPv6]:port.")
		return false
	}
	s.fwd.host, s.fwd.port = host, port
	return true
}

// proxyLogin checks a proxy password; on failure it answers and counts
// the failure towards a ban.
func (s *session) proxyLogin(name, pass string) bool {
	users := s.cfg.Forward.Users
	if users == nil {
		s.answer("503 This proxy has no proxy accounts.")
		return false
	}
	// bcrypt takes tens of milliseconds: long for the lock, but the
	// session has nothing else to do, and the ban bounds how often.
	if !users.Verify(name, pass) {
		s.proxyLoginFailed(name, "wrong proxy user or password")
		return false
	}
	s.fwd.authed = true
	s.log.Info().Str("proxy_user", name).Msg("proxy login accepted")
	return true
}

func (s *session) proxyLoginFailed(name, why string) {
	s.log.Warn().Str("proxy_user", clip(name)).Str("reason", why).Msg("proxy login failed")
	s.cfg.Metrics.forwardRefused(forwardRefusedProxyAuth)
	s.cfg.Metrics.login(false)
	if s.loginFailed() {
		return
	}
	s.answer(replyProxyLoginBad)
}

// forwardConnect looks the destination up, checks it, and connects to
// the checked address, in a goroutine: the client's next commands wait
// behind the connecting exchange.
func (s *session) forwardConnect(then forwardThen) {
	f := s.fwd
	f.then = then
	f.viaUSER = then != thenReply
	s.cur = &exchange{kind: kindGreeting}
	host, port := f.host, f.port
	s.wg.Go(func() {
		// The interface list is a netlink dump: read it here, not
		// under the session's lock.
		targets, refusal := s.resolveDest(host, port, s.protectedRanges())
		if refusal != nil {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.forwardRefused(host, port, refusal)
			return
		}
		s.connect(targets, false)
	})
}

// destRefusal is why a destination was refused, for the reply, the log
// and the metrics.
type destRefusal struct {
	reason   string
	resolved []netip.Addr
	kind     string
}

// resolveDest looks host up once and returns the addresses the policy
// allows, in the resolver's order. A name with any address in a protected
// range is refused whole: that is how DNS rebinding aims a proxy at
// itself.
func (s *session) resolveDest(host string, port uint16, protected []nat.NamedPrefix) ([]target, *destRefusal) {
	pol := s.cfg.Forward.Dest
	if pol == nil {
		pol = &nat.DestPolicy{}
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a.Unmap()}
	} else {
		res := s.cfg.Forward.Resolver
		if res == nil {
			res = net.DefaultResolver
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DialTimeout)
		found, err := res.LookupNetIP(ctx, "ip", host)
		cancel()
		if err != nil || len(found) == 0 {
			reason := "cannot resolve " + host
			var de *net.DNSError
			if errors.As(err, &de) && de.IsNotFound {
				reason = host + " does not exist"
			}
			return nil, &destRefusal{reason: reason, kind: forwardRefusedResolve}
		}
		for _, a := range found {
			addrs = append(addrs, a.Unmap())
		}
	}
	var targets []target
	var first error
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a, port)
		err := pol.Check(host, ap, protected)
		if err == nil {
			targets = append(targets, target{addr: ap.String(), name: net.JoinHostPort(host, fmt.Sprint(port))})
			continue
		}
		if first == nil {
			first = err
		}
		if r, ok := err.(*nat.DestRefusal); ok && r.Protected {
			return nil, &destRefusal{reason: err.Error(), resolved: addrs, kind: forwardRefusedDest}
		}
	}
	if len(targets) == 0 {
		return nil, &destRefusal{reason: first.Error(), resolved: addrs, kind: forwardRefusedDest}
	}
	return targets, nil
}

// protectedRanges are the proxy's own addresses and its trusted balancers:
// a destination must not loop back into the proxy or reach the balancer
// through it. It reads only what is fixed when the session starts, so it
// needs no lock.
func (s *session) protectedRanges() []nat.NamedPrefix {
	var out []nat.NamedPrefix
	own := func(a netip.Addr) {
		if a.IsValid() {
			a = a.Unmap()
			out = append(out, nat.NamedPrefix{Name: "the proxy's own address", Prefix: netip.PrefixFrom(a, a.BitLen())})
		}
	}
	own(s.localAP.Addr())
	own(s.dialedAP.Addr())
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, ia := range addrs {
			if n, ok := ia.(*net.IPNet); ok {
				if a, ok := netip.AddrFromSlice(n.IP); ok {
					own(a)
				}
			}
		}
	}
	for _, p := range s.cfg.ProxyProtocolFrom {
		out = append(out, nat.NamedPrefix{Name: "a trusted load balancer", Prefix: p})
	}
	return out
}

// forwardRefused answers a destination the policy refuses; the refusal
// counts towards a ban, so the proxy cannot be used to scan.
func (s *session) forwardRefused(host string, port uint16, r *destRefusal) {
	if x := s.cur; x != nil && x.kind == kindGreeting {
		s.cur = nil
	}
	if s.closing {
		return
	}
	resolved := make([]string, len(r.resolved))
	for i, a := range r.resolved {
		resolved[i] = a.String()
	}
	s.log.Warn().Str("dest", net.JoinHostPort(host, fmt.Sprint(port))).Strs("resolved", resolved).
		Str("reason", r.reason).Msg("forward refused")
	s.cfg.Metrics.forwardRefused(r.kind)
	s.fwd.host, s.fwd.port, s.fwd.pass = "", 0, ""
	if s.loginFailed() {
		return
	}
	s.answer(replyForwardRefused + clip(r.reason) + ".")
	s.advance()
}

// forwardReady continues the login once the chosen server has greeted
// (and TLS with it is up).
func (s *session) forwardReady() {
	f := s.fwd
	s.log.Info().Msg("forwarding to the server the login named")
	switch f.then {
	case thenReply:
		s.answer(f.reply)
		f.reply = ""
		s.advance()
	case thenUSERPASS:
		s.setUser(f.user)
		cmd := rewrite.Command{Verb: "USER", Arg: f.user}
		s.open(&exchange{kind: kindLogin, cmd: cmd, followPass: f.pass}, cmd)
		f.pass = ""
	default:
		s.setUser(f.user)
		cmd := rewrite.Command{Verb: "USER", Arg: f.user}
		s.open(&exchange{kind: kindLogin, cmd: cmd}, cmd)
	}
}

// onFollowPassReply handles the server's reply to a USER the proxy sent
// with the password already in hand: a 331 is answered with the PASS and
// not relayed (the client had its 331 from the proxy); anything else is
// the login's outcome.
func (s *session) onFollowPassReply(x *exchange, r rewrite.Reply) {
	x.held.add(r)
	if r.More {
		return
	}
	pass := x.followPass
	x.followPass = ""
	if r.Code == 331 {
		x.cmd = rewrite.Command{Verb: "PASS", Arg: pass}
		x.held = heldReply{}
		s.sendUpstream(x.cmd)
		return
	}
	s.writeClientReply(x.held.lines())
	x.done, x.answered = true, true
	s.afterLogin("USER", r.Code, false) // a reply to USER is no failed attempt
	s.settle()
}

// Why a forward-mode login was refused (the reason label of
// ftpproxy_forward_refusals_total).
const (
	forwardRefusedDest      = "destination"
	forwardRefusedResolve   = "resolve"
	forwardRefusedClient    = "client"
	forwardRefusedProxyAuth = "proxy_auth"
)

var forwardRefusalValues = []string{forwardRefusedDest, forwardRefusedResolve, forwardRefusedClient, forwardRefusedProxyAuth}

// forwardRefused counts a refused forward-mode login.
func (m *Metrics) forwardRefused(reason string) {
	if m == nil {
		return
	}
	m.fwdRefusals[reason].Inc()
}
