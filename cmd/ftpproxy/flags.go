package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/ftpproxy/ftpproxy/nat"
	"github.com/ftpproxy/ftpproxy/proxy"
)

// options is the parsed command line.
type options struct {
	listen       []string
	upstream     string
	pool         []string // every server of --upstream when it names more than one; upstream is the first
	passivePorts *nat.PortPool
	activePorts  *nat.PortPool
	dataMode     proxy.DataMode
	ppFrom       []netip.Prefix
	upstreamPP   byte
	health       string
	pidFile      string
	allow, deny  []netip.Prefix

	maxSessions, maxPerIP, maxLine, maxFailures     int
	maxReplyLine                                    int
	chained                                         bool
	failWindow, banTime, loginTimeout, stallTimeout time.Duration
	pasvAddress                                     string
	advertiser                                      nat.Advertiser
	logFormat                                       string
	logLevel                                        zerolog.Level
	drainTimeout                                    time.Duration

	// The data path (process-wide): "splice" or "kernel", and the
	// kernel path's nftables table and forward guard.
	dataPath    string
	kernelTable string
	kernelGuard bool

	dialTimeout, greetingTimeout, idleTimeout, dataTimeout time.Duration

	// FTPS towards clients.
	certs          *certStore
	clientTLS      proxy.ClientTLSMode
	dataReuse      proxy.DataReuse
	tlsMin         uint16
	listenImplicit []string

	// FTPS towards the upstream.
	upstreamTLS      proxy.UpstreamTLSMode
	upstreamTLSConf  *tls.Config
	upstreamInsecure bool

	// Forward mode (nil: off).
	forward *proxy.ForwardConfig

	// name is the service's name under services: in the configuration
	// file, "" for the top level; services are those services (nil
	// without), each parsed into options of its own (services.go).
	name     string
	services []*options
}

// listFlag is a flag that may be repeated.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

const usage = `Usage:
  ftpproxy --upstream HOST:PORT [--listen ADDR]... [options]
  ftpproxy --forward --allow-dest LIST [--listen ADDR]... [options]
  ftpproxy passwd NAME < password
  ftpproxy check-config --config FILE [options]
  ftpproxy version

Relays FTP sessions to the upstream server and rewrites PASV, EPSV, PORT and
EPRT so that data connections work through the proxy in both modes.

Options:
`

// parseFlags parses args and the --config file they name; every bad value
// is refused with a message that names its flag (and, for a value from the
// file, the file, line and key).
func parseFlags(args []string, out io.Writer) (*options, error) {
	sc := &scope{}
	o, err := parseScope(args, out, sc)
	if err != nil || !sc.hasServices() {
		return o, err
	}
	return o, o.parseServices(args, sc.file)
}

// parseScope parses args and the settings of sc: the top level of the
// --config file, or one service of it.
func parseScope(args []string, out io.Writer, sc *scope) (_ *options, retErr error) {
	fs := flag.NewFlagSet("ftpproxy", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, usage)
		fs.PrintDefaults()
	}
	var (
		listen, advertise listFlag
		o                 options
		ports, level      string
		activePorts, mode string
		ppFrom, upPP      string
		allow, deny       string
	)
	var (
		listenImplicit                            listFlag
		tlsCert, tlsKey, clientTLS, reuse, tlsMin string
	)
	fs.Var(&listenImplicit, "listen-implicit", "`ADDR` to accept implicit FTPS clients on (TLS from the first byte, port 990 by convention); may be repeated; needs --tls-cert")
	fs.StringVar(&tlsCert, "tls-cert", "", "PEM `FILE` with the certificate (and chain) presented to FTPS clients; read again on SIGHUP")
	fs.StringVar(&tlsKey, "tls-key", "", "PEM `FILE` with the certificate's private key")
	fs.StringVar(&clientTLS, "client-tls", "", "FTPS towards clients: off, allow (AUTH TLS offered) or require (no login before AUTH TLS, no transfer without PROT P) (default: allow with --tls-cert, else off)")
	fs.StringVar(&reuse, "tls-data-reuse", "auto", "TLS data connections: auto (a resumed session, or a full handshake from the client's address) or require (only a resumed session of this control connection)")
	fs.StringVar(&tlsMin, "tls-min-version", "1.2", "oldest TLS version accepted from clients: 1.2 or 1.3")
	var upTLS, upCA, upName string
	fs.StringVar(&upTLS, "upstream-tls", "off", "FTPS towards the upstream: off, explicit (AUTH TLS), implicit (TLS from the first byte) or match (TLS exactly when the client uses it); no fallback to plain FTP")
	fs.StringVar(&upCA, "upstream-ca", "", "PEM `FILE` of the roots the upstream's certificate is verified against (default: the system's)")
	fs.StringVar(&upName, "upstream-server-name", "", "the `NAME` the upstream's certificate must carry (default: the host part of --upstream, even an IP)")
	fs.BoolVar(&o.upstreamInsecure, "upstream-insecure-skip-verify", false, "do not verify the upstream's certificate (logged at start; for tests and broken servers only)")
	var fwd forwardFlags
	fwd.register(fs)
	configPath := fs.String(configFlag, "", "read settings from the YAML `FILE` (keys are flag names); flags given here win")
	fs.Var(&listen, "listen", "`ADDR` to accept FTP clients on, host:port; may be repeated (default \":21\")")
	var upstreams listFlag
	fs.Var(&upstreams, "upstream", "the FTP server, `HOST:PORT` (required); repeat it, or separate with commas, for a pool of equivalent servers that sessions are spread over")
	fs.StringVar(&ports, "passive-ports", "", "passive data port range `LO-HI` (default: any free port)")
	fs.Var(&advertise, "advertise", "`ADDR` announced in PASV replies: an IP, a host name or a go-sockaddr template; CIDR=ADDR for clients from CIDR; may be repeated (default: the address the client connected to)")
	fs.StringVar(&activePorts, "active-ports", "", "port range `LO-HI` of the listeners the upstream connects to in active mode (default: any free port)")
	fs.StringVar(&mode, "upstream-data-mode", "same", "data connections to the upstream: same (as the client), passive or active")
	fs.StringVar(&o.pasvAddress, "upstream-pasv-address", "control", "where to connect for the upstream's passive replies: control (its control address with the announced port) or reply (the address in the 227)")
	fs.StringVar(&ppFrom, "proxy-protocol-from", "", "`CIDR[,CIDR]` of load balancers that must open every connection with a PROXY header (v1 or v2); others must not send one")
	fs.BoolVar(&o.chained, "proxy-protocol-chained", false, "the peers in --proxy-protocol-from are ftpproxy instances: their PORT/EPRT may name their own address (off: a client behind a balancer could aim data connections at it)")
	fs.StringVar(&upPP, "upstream-proxy-protocol", "off", "send the upstream a PROXY header with the client's address: off, v1 or v2")
	fs.StringVar(&o.pidFile, "pid-file", "", "write the PID to `FILE` once ready (systemd's PIDFile=, which follows an upgrade: SIGUSR2 starts the binary on disk, hands it the listeners and drains this process)")
	fs.StringVar(&o.health, "health", "", "`ADDR` of an HTTP health endpoint: 200 while accepting sessions, 503 while draining; Prometheus metrics on /metrics")
	fs.StringVar(&allow, "allow", "", "only clients in `CIDR[,CIDR]` may connect (default: everyone)")
	fs.StringVar(&deny, "deny", "", "clients in `CIDR[,CIDR]` are refused; wins over --allow")
	fs.IntVar(&o.maxSessions, "max-sessions", 0, "most sessions at once, 0 for no limit")
	fs.IntVar(&o.maxPerIP, "max-sessions-per-ip", 0, "most sessions at once from one client address, 0 for no limit")
	fs.IntVar(&o.maxLine, "max-line-length", 4096, "longest command line accepted; a longer one gets 500, and the third closes the session")
	fs.IntVar(&o.maxReplyLine, "max-reply-line-length", 16384, "longest reply line accepted from the upstream; a longer one ends the session with 421")
	fs.IntVar(&o.maxFailures, "max-login-failures", 10, "failed logins from one address within --login-failure-window that ban it for --ban-time; 0 never bans")
	fs.DurationVar(&o.failWindow, "login-failure-window", 10*time.Minute, "the window failed logins are counted over")
	fs.DurationVar(&o.banTime, "ban-time", 15*time.Minute, "how long a banned address is refused")
	fs.DurationVar(&o.loginTimeout, "login-timeout", 2*time.Minute, "close a session not logged in after this long")
	fs.DurationVar(&o.stallTimeout, "data-stall-timeout", 5*time.Minute, "abort a transfer in which no byte moved for this long")
	fs.StringVar(&o.dataPath, "data-path", "splice", "how plain passive transfers are carried: splice (relayed by the proxy) or kernel (redirected by nftables, no process in the data path; needs CAP_NET_ADMIN, see docs/kernel-path.md)")
	fs.StringVar(&o.kernelTable, "kernel-table", "ftpproxy", "with --data-path kernel: the proxy's nftables table (family inet); instances sharing a host need one each")
	fs.BoolVar(&o.kernelGuard, "kernel-forward-guard", true, "with --data-path kernel: drop every forwarded packet that is not a redirected data connection, so forwarding serves the proxy alone (false on a host that also routes)")
	fs.StringVar(&o.logFormat, "log-format", "json", "log format: json or console")
	fs.StringVar(&level, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM or SIGINT, how long running sessions may go on before they are closed")
	fs.DurationVar(&o.dialTimeout, "dial-timeout", 10*time.Second, "timeout for connecting to the upstream and for data connections")
	fs.DurationVar(&o.greetingTimeout, "greeting-timeout", 30*time.Second, "timeout for the upstream's greeting")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", 15*time.Minute, "close a control connection idle this long (never during a transfer)")
	fs.DurationVar(&o.dataTimeout, "data-accept-timeout", 60*time.Second, "timeout for the expected peer to open a data connection")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (see --help)", fs.Arg(0))
	}
	file, fileErr := sc.apply(fs, *configPath)
	if fileErr != nil {
		return nil, fileErr
	}
	defer func() { retErr = file.locate(retErr) }()
	if len(listen) == 0 {
		listen = listFlag{":21"}
	}
	for _, l := range listen {
		if _, _, err := net.SplitHostPort(l); err != nil {
			return nil, fmt.Errorf("--listen %q: want host:port, e.g. :2121 or [::1]:2121", l)
		}
	}
	o.listen = listen
	if err := o.parseUpstreams(upstreams); err != nil {
		return nil, err
	}
	if o.upstream == "" && !fwd.on && !sc.hasServices() {
		return nil, errors.New("--upstream is required: the FTP server's HOST:PORT (or --forward)")
	}
	if _, _, err := net.SplitHostPort(o.upstream); err != nil && o.upstream != "" {
		return nil, fmt.Errorf("--upstream %q: want HOST:PORT, e.g. 10.0.0.5:21", o.upstream)
	}
	if ports != "" {
		lo, hi, err := nat.ParsePortRange(ports)
		if err != nil {
			return nil, fmt.Errorf("--passive-ports: %w", err)
		}
		if o.passivePorts, err = nat.NewPortPool(lo, hi); err != nil {
			return nil, fmt.Errorf("--passive-ports: %w", err)
		}
	}
	if activePorts != "" {
		lo, hi, err := nat.ParsePortRange(activePorts)
		if err != nil {
			return nil, fmt.Errorf("--active-ports: %w", err)
		}
		if o.activePorts, err = nat.NewPortPool(lo, hi); err != nil {
			return nil, fmt.Errorf("--active-ports: %w", err)
		}
	}
	var err error
	if o.dataMode, err = proxy.ParseDataMode(mode); err != nil {
		return nil, fmt.Errorf("--upstream-data-mode %q: want same, passive or active", mode)
	}
	if o.dataPath != "splice" && o.dataPath != "kernel" {
		return nil, fmt.Errorf("--data-path %q: want splice or kernel", o.dataPath)
	}
	if o.pasvAddress != "control" && o.pasvAddress != "reply" {
		return nil, fmt.Errorf("--upstream-pasv-address %q: want control or reply", o.pasvAddress)
	}
	if ppFrom != "" {
		if o.ppFrom, err = nat.ParseCIDRs(ppFrom); err != nil {
			return nil, fmt.Errorf("--proxy-protocol-from: %w", err)
		}
	}
	switch upPP {
	case "off":
	case "v1":
		o.upstreamPP = 1
	case "v2":
		o.upstreamPP = 2
	default:
		return nil, fmt.Errorf("--upstream-proxy-protocol %q: want off, v1 or v2", upPP)
	}
	if o.health != "" {
		if _, _, err := net.SplitHostPort(o.health); err != nil {
			return nil, fmt.Errorf("--health %q: want host:port, e.g. 127.0.0.1:8021", o.health)
		}
	}
	for _, l := range []struct {
		flag, value string
		nets        *[]netip.Prefix
	}{{"--allow", allow, &o.allow}, {"--deny", deny, &o.deny}} {
		if l.value == "" {
			continue
		}
		if *l.nets, err = nat.ParseCIDRs(l.value); err != nil {
			return nil, fmt.Errorf("%s: %w", l.flag, err)
		}
	}
	for _, n := range []struct {
		flag  string
		value int
	}{{"--max-sessions", o.maxSessions}, {"--max-sessions-per-ip", o.maxPerIP}, {"--max-login-failures", o.maxFailures}} {
		if n.value < 0 {
			return nil, fmt.Errorf("%s %d: want 0 or more", n.flag, n.value)
		}
	}
	if o.maxLine < 512 {
		return nil, fmt.Errorf("--max-line-length %d: want at least 512 (RFC 959 pathnames need room)", o.maxLine)
	}
	if err := o.parseTLS(tlsCert, tlsKey, clientTLS, reuse, tlsMin, listenImplicit); err != nil {
		return nil, err
	}
	if err := o.parseUpstreamTLS(upTLS, upCA, upName); err != nil {
		return nil, err
	}
	if err := fwd.parse(&o); err != nil {
		return nil, err
	}
	if o.maxReplyLine < 512 {
		return nil, fmt.Errorf("--max-reply-line-length %d: want at least 512", o.maxReplyLine)
	}
	if o.chained && len(o.ppFrom) == 0 {
		return nil, errors.New("--proxy-protocol-chained needs --proxy-protocol-from: it names the chained peers")
	}
	if len(advertise) > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		adv, err := nat.ParseAdvertiser(ctx, advertise, net.DefaultResolver)
		if err != nil {
			return nil, fmt.Errorf("--advertise %w", err)
		}
		o.advertiser = adv
	}
	switch o.logFormat {
	case "json", "console":
	default:
		return nil, fmt.Errorf("--log-format %q: want json or console", o.logFormat)
	}
	lv, err := zerolog.ParseLevel(level)
	if err != nil || level == "" || lv > zerolog.ErrorLevel || lv < zerolog.DebugLevel {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	o.logLevel = lv
	for name, d := range map[string]time.Duration{
		"--drain-timeout": o.drainTimeout, "--dial-timeout": o.dialTimeout, "--greeting-timeout": o.greetingTimeout,
		"--idle-timeout": o.idleTimeout, "--data-accept-timeout": o.dataTimeout,
		"--login-failure-window": o.failWindow, "--ban-time": o.banTime, "--login-timeout": o.loginTimeout,
		"--data-stall-timeout": o.stallTimeout,
	} {
		if d <= 0 {
			return nil, fmt.Errorf("%s %v: want a positive duration such as 30s", name, d)
		}
	}
	return &o, nil
}

// parseTLS checks the FTPS flags and loads the certificate.
func (o *options) parseTLS(cert, key, mode, reuse, minVersion string, implicit []string) error {
	var err error
	if (cert == "") != (key == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if mode == "" {
		mode = "off"
		if cert != "" {
			mode = "allow"
		}
	}
	if o.clientTLS, err = proxy.ParseClientTLSMode(mode); err != nil {
		return fmt.Errorf("--client-tls %q: want off, allow or require", mode)
	}
	if o.dataReuse, err = proxy.ParseDataReuse(reuse); err != nil {
		return fmt.Errorf("--tls-data-reuse %q: want auto or require", reuse)
	}
	if o.tlsMin, err = parseTLSVersion(minVersion); err != nil {
		return err
	}
	for _, l := range implicit {
		if _, _, err := net.SplitHostPort(l); err != nil {
			return fmt.Errorf("--listen-implicit %q: want host:port, e.g. :990", l)
		}
	}
	o.listenImplicit = implicit
	if cert == "" {
		if o.clientTLS != proxy.ClientTLSOff || len(implicit) > 0 {
			return errors.New("--client-tls allow/require and --listen-implicit need --tls-cert and --tls-key")
		}
		return nil
	}
	o.certs, err = newCertStore(cert, key)
	return err
}

func (o *options) proxyConfig() proxy.Config {
	failures := o.maxFailures
	if failures == 0 {
		failures = -1 // Config's "never"
	}
	return proxy.Config{
		Upstream:              o.upstream,
		Advertiser:            o.advertiser,
		PassivePorts:          o.passivePorts,
		ActivePorts:           o.activePorts,
		UpstreamDataMode:      o.dataMode,
		UpstreamPASVAddress:   o.pasvAddress == "reply",
		ProxyProtocolFrom:     o.ppFrom,
		ChainedProxies:        o.chained,
		Allow:                 o.allow,
		Deny:                  o.deny,
		MaxSessions:           o.maxSessions,
		MaxSessionsPerIP:      o.maxPerIP,
		MaxLineLength:         o.maxLine,
		MaxReplyLineLength:    o.maxReplyLine,
		MaxLoginFailures:      failures,
		LoginFailureWindow:    o.failWindow,
		BanDuration:           o.banTime,
		LoginTimeout:          o.loginTimeout,
		DataStallTimeout:      o.stallTimeout,
		UpstreamProxyProtocol: o.upstreamPP,
		DialTimeout:           o.dialTimeout,
		GreetingTimeout:       o.greetingTimeout,
		IdleTimeout:           o.idleTimeout,
		DataAcceptTimeout:     o.dataTimeout,
		ClientTLS:             o.clientTLS,
		UpstreamTLS:           o.upstreamTLS,
		UpstreamTLSConfig:     o.upstreamTLSConf,
		TLSDataReuse:          o.dataReuse,
		Forward:               o.forward,
	}
}
