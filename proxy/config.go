package proxy

import (
	"crypto/tls"
	"fmt"
	"net/netip"
	"time"

	"github.com/rs/zerolog"

	"github.com/ftpproxy/ftpproxy/kernelpath"
	"github.com/ftpproxy/ftpproxy/nat"
)

// Config holds the knobs of a Server. The zero value of every field except
// Upstream is usable: the defaults are listed with each field.
type Config struct {
	// Upstream is the FTP server's control address, "host:port". It may
	// be empty when Pool or Forward names the servers instead.
	Upstream string

	// Pool, if set, is a set of equivalent servers used instead of
	// Upstream: each session tries them in the pool's order.
	Pool *UpstreamPool

	// Forward, if set, is forward mode: the client's login names the
	// server (see ForwardConfig). Upstream or Pool, if also set, serve a
	// login that names none.
	Forward *ForwardConfig

	// Advertiser picks the address announced in 227 replies. The zero value
	// announces the local address the client's control connection reached.
	Advertiser nat.Advertiser

	// KernelPath, if set, carries plain passive transfers in the kernel
	// (nftables DNAT, watched with conntrack) instead of the splice
	// relay; a transfer it cannot carry is relayed as without it.
	KernelPath *kernelpath.Path

	// PassivePorts, if non-nil, is the range passive data listeners are
	// bound in. If nil, the kernel picks a free port.
	PassivePorts *nat.PortPool

	// UpstreamDataMode is how data connections to the upstream are opened:
	// as the client does (DataModeSame, the default), always passive (the
	// upstream never connects out), or always active.
	UpstreamDataMode DataMode

	// ActivePorts, if non-nil, is the range of the listeners the upstream
	// connects to in active mode. If nil, the kernel picks a free port.
	ActivePorts *nat.PortPool

	// UpstreamPASVAddress makes the proxy connect to the address in the
	// upstream's 227 reply. By default it connects to the upstream's
	// control address with the announced port, because a server behind
	// NAT announces an address nobody else can reach.
	UpstreamPASVAddress bool

	// ProxyProtocolFrom lists the load balancers trusted to send a PROXY
	// header (v1 or v2). A peer in these networks must open every
	// connection, control or data, with one, and the address in it is the
	// client's address everywhere: logs, the PORT/EPRT target check, the
	// data-connection source check. A peer outside them must not send one.
	ProxyProtocolFrom []netip.Prefix

	// TLS, if set, is the server configuration for FTPS towards clients
	// (its certificate, usually through GetCertificate so that a renewed
	// one is picked up, and MinVersion). Each session uses a clone with
	// ticket keys of its own.
	TLS *tls.Config
	// ClientTLS is what clients are offered: ClientTLSOff (the default)
	// refuses AUTH; ClientTLSAllow offers AUTH TLS, PBSZ and PROT;
	// ClientTLSRequire also refuses USER, PASS and ACCT before AUTH TLS
	// (530) and transfers without PROT P (521). Needs TLS.
	ClientTLS ClientTLSMode
	// TLSDataReuse is how a TLS data connection proves it belongs to its
	// control session: DataReuseAuto (the default) accepts a resumed
	// session or a full handshake from the control connection's address;
	// DataReuseRequire accepts only a resumed one (425 otherwise).
	TLSDataReuse DataReuse

	// UpstreamTLS is how the proxy speaks to the upstream: plain FTP
	// (UpstreamTLSOff, the default), FTPS with AUTH TLS after the greeting
	// (UpstreamTLSExplicit), TLS from the first byte (UpstreamTLSImplicit),
	// or AUTH TLS exactly when the client uses TLS (UpstreamTLSMatch). With
	// TLS the proxy also sends PBSZ 0 and PROT P before the first data
	// command, whatever the client chose. A handshake or verification that
	// fails ends the session with 421: there is no fallback to plain FTP.
	UpstreamTLS UpstreamTLSMode
	// UpstreamTLSConfig is the client configuration towards the upstream:
	// RootCAs (nil: the system's), ServerName (set it: Go keys its session
	// cache by it, and the data connections must resume the control
	// session), MinVersion. Each session uses a clone with a session cache
	// of its own.
	UpstreamTLSConfig *tls.Config

	// ChainedProxies says the peers in ProxyProtocolFrom are ftpproxy
	// instances in front of this one: a PORT or EPRT may then name the
	// peer's own address, as a chained proxy in active mode does. Off by
	// default: a client behind any other balancer could otherwise aim the
	// proxy's data connection at the balancer host (an FTP bounce).
	ChainedProxies bool
	// ProxyHeaderTimeout bounds the wait for a PROXY header. Default 5s.
	ProxyHeaderTimeout time.Duration

	// UpstreamProxyProtocol, if 1 or 2, opens every upstream control
	// connection with a PROXY header of that version carrying the client's
	// address. 0, the default, sends none.
	UpstreamProxyProtocol byte

	// Allow, if not empty, lists the only client networks that may start a
	// session; Deny lists networks that may not, and wins over Allow. Both
	// are checked before the upstream is dialled.
	Allow, Deny []netip.Prefix

	// MaxSessions and MaxSessionsPerIP bound the sessions running at once,
	// in all and per client address. 0 means no limit.
	MaxSessions, MaxSessionsPerIP int

	// MaxLoginFailures failed logins from one address within
	// LoginFailureWindow ban that address for BanDuration. Defaults 10,
	// 10m and 15m; a negative MaxLoginFailures never bans.
	MaxLoginFailures   int
	LoginFailureWindow time.Duration
	BanDuration        time.Duration

	// LoginTimeout closes a session that has not logged in after this
	// long. Default 2m.
	LoginTimeout time.Duration

	// DataStallTimeout aborts a data transfer in which no byte has moved,
	// either way, for this long. Default 5m.
	DataStallTimeout time.Duration

	// Logger receives the proxy's logs; each session logs through a child
	// of it. The zero Logger writes nothing.
	Logger zerolog.Logger

	// Metrics, if set, counts sessions, logins, transfers, failures and
	// handshakes for Prometheus (see NewMetrics). Nil, the default, counts
	// nothing.
	Metrics *Metrics

	// DialTimeout bounds connecting to the upstream, for the control
	// connection and for data connections, and connecting back to an
	// active-mode client. Default 10s.
	DialTimeout time.Duration

	// GreetingTimeout bounds the wait for the upstream's 220 greeting.
	// Default 30s.
	GreetingTimeout time.Duration

	// IdleTimeout closes a control connection on which the client has sent
	// nothing for this long. It never fires while a transfer is running:
	// a long download keeps the control connection quiet. Default 15m.
	IdleTimeout time.Duration

	// DataAcceptTimeout bounds the wait for the expected peer to connect to
	// a data listener (the client after PASV/EPSV, the upstream after
	// PORT/EPRT). Default 60s.
	DataAcceptTimeout time.Duration

	// DataLinger is how long a data relay waits, once the direction that
	// carries the file has delivered its last byte and passed on the close,
	// for the other direction to close too before it closes both. Default
	// 5s.
	DataLinger time.Duration

	// WriteTimeout bounds every write on a control connection, so a peer
	// that stops reading cannot stall a session forever. Default 60s.
	WriteTimeout time.Duration

	// MaxLineLength is the longest command line accepted from a client,
	// without the line ending. Default 4096.
	MaxLineLength int
	// MaxReplyLineLength is the longest reply line accepted from the
	// upstream, without the line ending: a 257 or a 250 to MLST names a
	// path, quoted, and paths can be long. Default 16384.
	MaxReplyLineLength int

	// MaxReplyLines is the largest number of lines in one upstream reply.
	// Default 100000.
	MaxReplyLines int
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.DialTimeout, 10*time.Second)
	def(&c.GreetingTimeout, 30*time.Second)
	def(&c.IdleTimeout, 15*time.Minute)
	def(&c.DataAcceptTimeout, 60*time.Second)
	def(&c.DataLinger, 5*time.Second)
	def(&c.WriteTimeout, 60*time.Second)
	def(&c.ProxyHeaderTimeout, 5*time.Second)
	def(&c.LoginFailureWindow, 10*time.Minute)
	def(&c.BanDuration, 15*time.Minute)
	def(&c.LoginTimeout, 2*time.Minute)
	def(&c.DataStallTimeout, 5*time.Minute)
	if c.MaxLoginFailures == 0 {
		c.MaxLoginFailures = 10
	}
	if c.MaxLineLength <= 0 {
		c.MaxLineLength = 4096
	}
	if c.MaxReplyLineLength <= 0 {
		c.MaxReplyLineLength = 16384
	}
	if c.MaxReplyLines <= 0 {
		c.MaxReplyLines = 100000
	}
	return c
}

// DataMode is how the proxy opens data connections to the upstream.
type DataMode int

const (
	DataModeSame    DataMode = iota // passive if the client is, active if it is
	DataModePassive                 // always PASV/EPSV
	DataModeActive                  // always PORT/EPRT
)

// ParseDataMode parses "same", "passive" or "active".
func ParseDataMode(s string) (DataMode, error) {
	switch s {
	case "same":
		return DataModeSame, nil
	case "passive":
		return DataModePassive, nil
	case "active":
		return DataModeActive, nil
	}
	return 0, fmt.Errorf("proxy: data mode %q: want same, passive or active", s)
}
