package probe

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ErrUsage reports a target or proxy address that cannot be probed.
var ErrUsage = errors.New("probe: bad usage")

// Default timeouts.
const (
	DefaultTimeout  = 5 * time.Second
	DefaultDeadline = 60 * time.Second
)

// DefaultPassword is sent for an anonymous login when no password is given.
const DefaultPassword = "probe@"

// Resolver looks up a host's addresses of one family ("ip4" or "ip6").
// *net.Resolver is one.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Config says what to probe and how. The zero value of every field but Host
// is usable.
type Config struct {
	// Host is the FTP server: a name or an IP address. Port defaults to 21.
	Host string
	Port uint16

	// Through, if set, is the "host:port" of an FTP proxy in front of Host:
	// the DNS, TCP and FTP checks connect to it instead of Host. Ports is
	// then ignored.
	Through string

	// Ports lists alternate ports to try a TCP connection to, besides Port,
	// to tell a block of one port from a host that cannot be reached. Nil
	// tries none; the command's default is 21, 2121 and 990.
	Ports []uint16

	// User logs in; default "anonymous". Password is sent after it; for an
	// anonymous login an empty Password sends DefaultPassword. Neither the
	// password nor server text quoting it appears in the Report.
	User, Password string

	// RootCAs, if non-nil, are the roots the server's TLS certificate is
	// verified against, named RootCAsName in findings. If nil, the system
	// roots are used.
	RootCAs     *x509.CertPool
	RootCAsName string

	// Timeout bounds each step: a lookup, a dial, a reply, a data
	// connection. Default DefaultTimeout.
	Timeout time.Duration
	// Deadline bounds the whole probe. Default DefaultDeadline.
	Deadline time.Duration

	// Resolver looks up Host (or the proxy's host). If nil,
	// net.DefaultResolver is used.
	Resolver Resolver
	// Dial opens every outgoing TCP connection. If nil, a net.Dialer is
	// used.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// ParseHostPort splits "host", "host:port", "[v6]:port", a bare IPv6
// address or an ftp:// URL into a host and a port, defPort when none is
// given. Errors wrap ErrUsage.
func ParseHostPort(s string, defPort uint16) (string, uint16, error) {
	if strings.HasPrefix(s, "ftp://") {
		u, err := url.Parse(s)
		if err != nil {
			return "", 0, fmt.Errorf("%w: %q is not a valid ftp:// URL", ErrUsage, s)
		}
		s = u.Host
	}
	if s == "" {
		return "", 0, fmt.Errorf("%w: empty host", ErrUsage)
	}
	if a, err := netip.ParseAddr(s); err == nil {
		if !validZone(a.Zone()) {
			return "", 0, fmt.Errorf("%w: %q: %q is not an interface name", ErrUsage, s, a.Zone())
		}
		return a.String(), defPort, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if strings.ContainsAny(s, ":[]") {
			return "", 0, fmt.Errorf("%w: %q: want HOST, HOST:PORT or [IPv6]:PORT", ErrUsage, s)
		}
		return s, defPort, nil
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 || host == "" {
		return "", 0, fmt.Errorf("%w: %q: want HOST:PORT with a port from 1 to 65535", ErrUsage, s)
	}
	if a, err := netip.ParseAddr(host); err == nil && !validZone(a.Zone()) {
		return "", 0, fmt.Errorf("%w: %q: %q is not an interface name", ErrUsage, s, a.Zone())
	}
	return host, uint16(n), nil
}

// validZone reports whether z, the zone of an IPv6 address (fe80::1%eth0),
// can name an interface: empty, or up to 15 printable characters without
// the brackets, colon, slash and percent sign that would make the address
// unreadable once written as [addr%zone]:port.
func validZone(z string) bool {
	if len(z) > 15 {
		return false
	}
	for _, c := range []byte(z) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte("[]:/%", c) >= 0 {
			return false
		}
	}
	return true
}

// Run probes the server cfg names and returns the report. It returns when
// every check has run, when the deadline passes, or when ctx is done.
func Run(ctx context.Context, cfg Config) *Report {
	cfg = cfg.withDefaults()
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, cfg.Deadline)
	defer cancel()
	p := &prober{cfg: cfg, ctx: ctx, start: start}
	p.rep = &Report{
		Schema:     SchemaVersion,
		Target:     net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))),
		Results:    []Result{},
		Transcript: []Entry{},
	}
	if cfg.Through != "" {
		p.rep.Through = cfg.Through
	}
	p.run()
	p.stopped("next")
	p.rep.finish(time.Since(start))
	return p.rep
}

func (c Config) withDefaults() Config {
	if c.Port == 0 {
		c.Port = 21
	}
	if c.User == "" {
		c.User = "anonymous"
	}
	if c.Password == "" && isAnonymous(c.User) {
		c.Password = DefaultPassword
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Deadline <= 0 {
		c.Deadline = DefaultDeadline
	}
	if c.Resolver == nil {
		c.Resolver = net.DefaultResolver
	}
	if c.Dial == nil {
		d := &net.Dialer{}
		c.Dial = d.DialContext
	}
	if c.RootCAsName == "" {
		if c.RootCAs != nil {
			c.RootCAsName = "the given CA"
		} else {
			c.RootCAsName = "the system roots"
		}
	}
	return c
}

// isAnonymous reports whether user is one of the names RFC 1635 has
// servers accept for anonymous FTP.
func isAnonymous(user string) bool {
	return strings.EqualFold(user, "anonymous") || strings.EqualFold(user, "ftp")
}

// prober is one run of the checks.
type prober struct {
	cfg   Config
	ctx   context.Context
	start time.Time
	rep   *Report

	host  string         // the host connected to: cfg.Host, or the proxy's
	port  uint16         // its port
	ctl   netip.AddrPort // the control connection's remote address
	local netip.AddrPort // and its local address
}

// add appends a check's result.
func (p *prober) add(check string, st Status, finding, fix string) {
	p.rep.Results = append(p.rep.Results, Result{Check: check, Status: st, Finding: p.scrub(finding), Fix: p.scrub(capitalize(fix))})
}

// capitalize upper-cases the first letter of a fix, which follows a full
// stop. Findings follow "check: " and start with whatever they name.
func capitalize(s string) string {
	if s != "" && 'a' <= s[0] && s[0] <= 'z' {
		return string(s[0]-'a'+'A') + s[1:]
	}
	return s
}

// note, sent and recv append to the transcript.
func (p *prober) note(conn, text string) { p.entry(conn, DirNote, text) }
func (p *prober) sent(conn, text string) { p.entry(conn, DirSent, text) }
func (p *prober) recv(conn, text string) { p.entry(conn, DirRecv, text) }

func (p *prober) entry(conn, dir, text string) {
	p.rep.Transcript = append(p.rep.Transcript, Entry{
		MS: time.Since(p.start).Milliseconds(), Conn: conn, Dir: dir, Text: p.scrub(text),
	})
}

// scrub masks the password wherever a server quotes it back.
func (p *prober) scrub(s string) string {
	if p.cfg.Password == "" {
		return s
	}
	return strings.ReplaceAll(s, p.cfg.Password, "****")
}

// stepDeadline is when the current step must end: Timeout from now, or the
// probe's deadline if that comes first.
func (p *prober) stepDeadline() time.Time {
	if p.ctx.Err() != nil {
		return aLongTimeAgo
	}
	d := time.Now().Add(p.cfg.Timeout)
	if dl, ok := p.ctx.Deadline(); ok && dl.Before(d) {
		return dl
	}
	return d
}

// stepContext is a context that ends with the current step.
func (p *prober) stepContext() (context.Context, context.CancelFunc) {
	return context.WithDeadline(p.ctx, p.stepDeadline())
}

// stopped reports whether the probe's deadline has passed or its context
// ended, and if so adds the deadline result once, naming the check that
// did not run.
func (p *prober) stopped(next string) bool {
	err := p.ctx.Err()
	if dl, ok := p.ctx.Deadline(); ok && err == nil && !time.Now().Before(dl) {
		err = context.DeadlineExceeded // passed, though the context's timer has yet to fire
	}
	if err == nil {
		return false
	}
	for _, r := range p.rep.Results {
		if r.Check == CheckDeadline {
			return true
		}
	}
	when := fmt.Sprintf(" before the %s check", next)
	if next == "next" {
		when = "; the checks after the last one reported did not run"
	}
	if errors.Is(err, context.DeadlineExceeded) {
		p.add(CheckDeadline, Fail, fmt.Sprintf("the probe reached its %s deadline%s", p.cfg.Deadline, when),
			"raise --deadline, or lower --timeout so that each step gives up sooner")
	} else {
		p.add(CheckDeadline, Fail, "the probe was interrupted"+when, "")
	}
	return true
}

// dial opens a TCP connection to ap within one step.
func (p *prober) dial(ap netip.AddrPort) (net.Conn, error) {
	ctx, cancel := p.stepContext()
	defer cancel()
	return p.cfg.Dial(ctx, "tcp", ap.String())
}

// run performs the checks in order; each returns false when the ones after
// it cannot run.
func (p *prober) run() {
	p.host, p.port = p.cfg.Host, p.cfg.Port
	if p.cfg.Through != "" {
		h, port, err := ParseHostPort(p.cfg.Through, 21)
		if err != nil {
			p.add(CheckTCP, Fail, err.Error(), "give --through as PROXYHOST:PORT")
			return
		}
		p.host, p.port = h, port
	}
	addr, ok := p.resolve()
	if !ok {
		return
	}
	conn, ok := p.connect(addr)
	if !ok {
		return
	}
	c := p.newCtrl(conn, ConnControl)
	defer c.close()
	steps := []struct {
		check string
		run   func(*ctrl) bool
	}{
		{CheckGreeting, p.greeting},
		{CheckFEAT, p.feat},
		{CheckTLS, func(*ctrl) bool { p.tlsCheck(); return true }},
		{CheckLogin, p.login},
		{CheckPASV, p.passive},
		{CheckActive, p.active},
	}
	for _, s := range steps {
		if p.stopped(s.check) || !s.run(c) {
			return
		}
	}
	c.quit()
}
