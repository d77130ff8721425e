package proxy

import (
	"context"
	"errors"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// UpstreamPool is a set of equivalent FTP servers a Server spreads its
// sessions over. A session tries the servers in the order Candidates gives,
// moving on when one cannot be reached, does not greet in time or greets
// with anything but 2xx, and reports each try with Report.
//
// The policy is passive: the pool learns only from the sessions' tries, so
// it needs no goroutine and sends nothing of its own to the servers.
//
//   - Servers that are up are handed out in turn: each call of Candidates
//     starts one server further on, so sessions spread evenly.
//   - A server that fails Failures tries in a row (or refuses one
//     connection outright) is marked down and left out for Backoff. Each
//     time it fails again after that, the wait doubles, up to MaxBackoff.
//   - Once its wait is over, the next session tries it first (one session
//     at a time: the probe). A success marks it up again; a failure marks
//     it down for the doubled wait.
//   - When every server is down, Candidates still returns them all, the
//     soonest due first: a session that may work is better than a 421.
type UpstreamPool struct {
	opts    PoolOptions
	mu      sync.Mutex
	servers []*poolServer
	byAddr  map[string]*poolServer
	next    uint64 // the rotation: where the next list of up servers starts
}

// PoolOptions are the knobs of an UpstreamPool. The zero value of each
// field is usable: the defaults are listed with each.
type PoolOptions struct {
	// Failures is how many tries in a row must fail before a server is
	// marked down. Default 2: a single reset or "421 too many users" is
	// often load, not a dead server, and the session that saw it has
	// already moved on to the next server, so waiting for a second one
	// costs little. A refused connection (nothing listens on the port) is
	// unambiguous and marks the server down at once.
	Failures int
	// Backoff is how long a server is left out the first time it is marked
	// down. Default 10s.
	Backoff time.Duration
	// MaxBackoff caps the wait, which doubles each time the probe after
	// it fails. Default 5m.
	MaxBackoff time.Duration
	// ProbeTimeout is how long a probe may go without a Report before
	// another session may probe the server again (a session that ends
	// before it reports must not keep the server out for good). Default 1m,
	// above a dial timeout plus a greeting timeout.
	ProbeTimeout time.Duration
	// Logger receives "upstream marked down" and "upstream marked up". The
	// zero Logger writes nothing.
	Logger zerolog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

func (o PoolOptions) withDefaults() PoolOptions {
	if o.Failures <= 0 {
		o.Failures = 2
	}
	if o.Backoff <= 0 {
		o.Backoff = 10 * time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Minute
	}
	o.MaxBackoff = max(o.MaxBackoff, o.Backoff)
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// poolServer is the state of one server of a pool; the pool's mutex
// guards it.
type poolServer struct {
	addr       string
	down       bool
	failures   int           // tries in a row that failed
	wait       time.Duration // the current wait while down; doubles per failed probe
	downSince  time.Time
	retryAt    time.Time // when down: when it may be probed
	probeUntil time.Time // a probe is out until then
	lastErr    string

	sessions, connectFailures uint64
}

// PoolServerStatus is what the health endpoint and the metrics show of one
// server of a pool.
type PoolServerStatus struct {
	Addr string
	// Up is false while the server is left out after failures, and
	// until a probe of it has succeeded.
	Up bool
	// Failures is the number of tries in a row that failed.
	Failures int
	// DownSince and RetryAt are set while the server is down: when it
	// was marked down, and when the next probe may go.
	DownSince, RetryAt time.Time
	// LastError is the last failure seen, "" if none since the last
	// success.
	LastError string
	// Sessions counts the tries that connected and were greeted with 2xx;
	// ConnectFailures the tries that failed.
	Sessions, ConnectFailures uint64
}

// NewUpstreamPool returns a pool of the servers at addrs, "host:port" each,
// all up. opts, if given, is at most one PoolOptions (variadic so that a
// pool with the defaults needs none); a second one panics.
func NewUpstreamPool(addrs []string, opts ...PoolOptions) *UpstreamPool {
	var o PoolOptions
	switch len(opts) {
	case 0:
	case 1:
		o = opts[0]
	default:
		panic("proxy: NewUpstreamPool takes at most one PoolOptions")
	}
	p := &UpstreamPool{opts: o.withDefaults()}
	p.SetServers(addrs)
	return p
}

// SetServers makes addrs the pool's servers, in that order, as a reload
// that edits the list does. A server the pool already holds keeps what the
// pool knows of it (down, its wait, its counts), so that adding a server
// does not send sessions back to one that is down; a new one starts up; a
// server no longer listed is forgotten, and the reports of sessions that
// still try it are ignored.
func (p *UpstreamPool) SetServers(addrs []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	byAddr := make(map[string]*poolServer, len(addrs))
	servers := make([]*poolServer, 0, len(addrs))
	for _, a := range addrs {
		if _, dup := byAddr[a]; dup {
			continue
		}
		s := p.byAddr[a]
		if s == nil {
			s = &poolServer{addr: a}
		}
		servers = append(servers, s)
		byAddr[a] = s
	}
	p.servers, p.byAddr = servers, byAddr
}

// SetLogger replaces the logger of PoolOptions, as a reload that keeps the
// pool changes the log level.
func (p *UpstreamPool) SetLogger(l zerolog.Logger) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.opts.Logger = l
}

// Addrs returns the pool's servers, in the order they were given.
func (p *UpstreamPool) Addrs() []string {
	out := make([]string, len(p.servers))
	for i, s := range p.servers {
		out[i] = s.addr
	}
	return out
}

// Candidates returns the servers a new session tries, in order: a server
// due for a probe first, then the servers that are up, starting one further
// on at each call. Servers that are down and not due are left out, unless
// every server is: then they all come, the soonest due first.
func (p *UpstreamPool) Candidates() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.opts.Now()
	var probe, up, down []*poolServer
	for _, s := range p.servers {
		switch {
		case !s.down:
			up = append(up, s)
		case !now.Before(s.retryAt) && !now.Before(s.probeUntil):
			probe = append(probe, s)
		default:
			down = append(down, s)
		}
	}
	// One probe per call: the session takes the risk for one server at a
	// time. The others wait for the next session.
	if len(probe) > 1 {
		down = append(down, probe[1:]...)
		probe = probe[:1]
	}
	for _, s := range probe {
		s.probeUntil = now.Add(p.opts.ProbeTimeout)
	}
	out := make([]string, 0, len(p.servers))
	for _, s := range probe {
		out = append(out, s.addr)
	}
	if n := len(up); n > 0 {
		start := int(p.next % uint64(n))
		p.next++
		for i := range n {
			out = append(out, up[(start+i)%n].addr)
		}
	}
	if len(out) > 0 {
		return out
	}
	// Every server is down and none is due: the last resort.
	slices.SortStableFunc(down, func(a, b *poolServer) int { return a.retryAt.Compare(b.retryAt) })
	for _, s := range down {
		out = append(out, s.addr)
	}
	return out
}

// Report records one try of addr: err is nil when it connected and greeted
// with 2xx. A try cut short because its session ended (context.Canceled)
// says nothing about the server and is not counted. An addr the pool does
// not hold is ignored: a session that started before a reload may report a
// server of the pool it started with.
func (p *UpstreamPool) Report(addr string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.byAddr[addr]
	if s == nil {
		return
	}
	now := p.opts.Now()
	probing := s.down && !now.Before(s.retryAt)
	// Only Canceled: a dial timeout is also context.DeadlineExceeded
	// (net's timeout error says so), and that is the server's failure.
	if errors.Is(err, context.Canceled) {
		if probing {
			s.probeUntil = time.Time{} // let the next session probe
		}
		return
	}
	if err == nil {
		s.sessions++
		s.failures = 0
		s.lastErr = ""
		if s.down {
			p.opts.Logger.Info().Str("server", addr).Dur("down_for", now.Sub(s.downSince)).Msg("upstream marked up")
		}
		s.down, s.wait = false, 0
		s.retryAt, s.probeUntil, s.downSince = time.Time{}, time.Time{}, time.Time{}
		return
	}
	s.connectFailures++
	s.failures++
	s.lastErr = err.Error()
	switch {
	case probing:
		// The probe failed: out again, for twice as long.
		s.wait = min(2*s.wait, p.opts.MaxBackoff)
		s.retryAt, s.probeUntil = now.Add(s.wait), time.Time{}
		p.opts.Logger.Warn().Err(err).Str("server", addr).Int("failures", s.failures).
			Dur("retry_in", s.wait).Msg("upstream still down")
	case s.down:
		// A last-resort try while it waits: the wait stands.
	case s.failures >= p.opts.Failures || errors.Is(err, syscall.ECONNREFUSED):
		s.down, s.wait, s.downSince = true, p.opts.Backoff, now
		s.retryAt, s.probeUntil = now.Add(s.wait), time.Time{}
		p.opts.Logger.Warn().Err(err).Str("server", addr).Int("failures", s.failures).
			Dur("retry_in", s.wait).Msg("upstream marked down")
	}
}

// Servers returns the state of each server, in the order they were given.
func (p *UpstreamPool) Servers() []PoolServerStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]PoolServerStatus, len(p.servers))
	for i, s := range p.servers {
		out[i] = PoolServerStatus{
			Addr: s.addr, Up: !s.down, Failures: s.failures, DownSince: s.downSince, RetryAt: s.retryAt,
			LastError: s.lastErr, Sessions: s.sessions, ConnectFailures: s.connectFailures,
		}
	}
	return out
}

// The pool's series, read at each scrape through the Server's metrics. The
// server label takes the addresses of the configuration: a small fixed set.
var (
	descUpstreamUp = prometheus.NewDesc(namespace+"_upstream_up",
		"Whether a server of the upstream pool takes new sessions (1), or is left out after failed tries (0); absent without a pool.",
		[]string{"server"}, nil)
	descUpstreamSessions = prometheus.NewDesc(namespace+"_upstream_server_sessions_total",
		"Tries of a server of the upstream pool that connected and were greeted with 2xx.",
		[]string{"server"}, nil)
	descUpstreamFailures = prometheus.NewDesc(namespace+"_upstream_server_connect_failures_total",
		"Tries of a server of the upstream pool that failed: refused, timed out, or greeted with anything but 2xx.",
		[]string{"server"}, nil)
)

func describePools(ch chan<- *prometheus.Desc) {
	ch <- descUpstreamUp
	ch <- descUpstreamSessions
	ch <- descUpstreamFailures
}

// collectPools sends the state of the pools of the servers that accept
// sessions: a server that drains (a service removed by a reload) has
// handed its pool on. A server address is sent once.
func collectPools(ch chan<- prometheus.Metric, servers []*Server) {
	seen := make(map[string]bool)
	for _, srv := range servers {
		p := srv.config().Pool
		if p == nil || !srv.Accepting() {
			continue
		}
		for _, st := range p.Servers() {
			if seen[st.Addr] {
				continue
			}
			seen[st.Addr] = true
			up := 0.0
			if st.Up {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(descUpstreamUp, prometheus.GaugeValue, up, st.Addr)
			ch <- prometheus.MustNewConstMetric(descUpstreamSessions, prometheus.CounterValue, float64(st.Sessions), st.Addr)
			ch <- prometheus.MustNewConstMetric(descUpstreamFailures, prometheus.CounterValue, float64(st.ConnectFailures), st.Addr)
		}
	}
}
