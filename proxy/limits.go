package proxy

import (
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/ftpproxy/ftpproxy/nat"
)

var (
	errDenied          = errors.New("proxy: client address not allowed")
	errTooManySessions = errors.New("proxy: session limit reached")
	errTooManyFromIP   = errors.New("proxy: per-address session limit reached")
	errBanned          = errors.New("proxy: address banned after failed logins")
)

// admission decides, before the upstream is dialled, whether a client may
// start a session: access lists, session limits and the login-failure ban.
type admission struct {
	allow, deny        []netip.Prefix
	maxTotal, maxPerIP int
	bans               *banList

	mu    sync.Mutex
	total int
	perIP map[netip.Addr]int
}

func newAdmission(cfg *Config) *admission {
	return &admission{
		allow:    cfg.Allow,
		deny:     cfg.Deny,
		maxTotal: cfg.MaxSessions,
		maxPerIP: cfg.MaxSessionsPerIP,
		bans:     newBanList(cfg.MaxLoginFailures, cfg.LoginFailureWindow, cfg.BanDuration),
		perIP:    make(map[netip.Addr]int),
	}
}

// admit takes a session slot for ip, or says why not. The returned release
// gives the slot back; it must be called exactly once.
func (a *admission) admit(ip netip.Addr, now time.Time) (release func(), err error) {
	if a.bans.banned(ip, now) {
		return nil, errBanned
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case nat.Contains(a.deny, ip), len(a.allow) > 0 && !nat.Contains(a.allow, ip):
		return nil, errDenied
	}
	switch {
	case a.maxTotal > 0 && a.total >= a.maxTotal:
		return nil, errTooManySessions
	case a.maxPerIP > 0 && a.perIP[ip] >= a.maxPerIP:
		return nil, errTooManyFromIP
	}
	a.total++
	a.perIP[ip]++
	var once sync.Once
	return func() {
		once.Do(func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.total--
			if a.perIP[ip]--; a.perIP[ip] <= 0 {
				delete(a.perIP, ip)
			}
		})
	}, nil
}

// reconfigure takes new access lists, limits and ban settings; the
// sessions counted so far and the ban list's records stay.
func (a *admission) reconfigure(cfg *Config) {
	a.mu.Lock()
	a.allow, a.deny = cfg.Allow, cfg.Deny
	a.maxTotal, a.maxPerIP = cfg.MaxSessions, cfg.MaxSessionsPerIP
	a.mu.Unlock()
	a.bans.setLimits(cfg.MaxLoginFailures, cfg.LoginFailureWindow, cfg.BanDuration)
}

// banList counts failed logins per client address over a window and bans
// an address that reaches the limit for a while, as fail2ban and proftpd's
// mod_ban do against password guessing.
type banList struct {
	max    int // 0: never ban
	window time.Duration
	banFor time.Duration

	mu    sync.Mutex
	fails map[netip.Addr]failCount
	until map[netip.Addr]time.Time
}

type failCount struct {
	n     int
	since time.Time
}

// maxTracked bounds the memory the ban list may take; past it, expired
// entries are dropped, and if that is not enough the oldest counts go.
const maxTracked = 100000

func newBanList(max int, window, banFor time.Duration) *banList {
	return &banList{max: max, window: window, banFor: banFor,
		fails: make(map[netip.Addr]failCount), until: make(map[netip.Addr]time.Time)}
}

// setLimits changes the ban settings; what has been recorded stays.
func (b *banList) setLimits(max int, window, banFor time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.max, b.window, b.banFor = max, window, banFor
}

// banned reports whether ip is banned at now.
func (b *banList) banned(ip netip.Addr, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.max <= 0 {
		return false
	}
	t, ok := b.until[ip]
	if ok && !now.Before(t) {
		delete(b.until, ip)
		return false
	}
	return ok
}

// failed records a failed login from ip and reports whether it has just
// got ip banned.
func (b *banList) failed(ip netip.Addr, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.max <= 0 {
		return false
	}
	f := b.fails[ip]
	if f.n == 0 || now.Sub(f.since) > b.window {
		f = failCount{since: now}
	}
	f.n++
	if f.n < b.max {
		b.fails[ip] = f
		b.prune(now)
		return false
	}
	delete(b.fails, ip)
	b.until[ip] = now.Add(b.banFor)
	b.prune(now)
	return true
}

// prune keeps the maps within maxTracked entries.
func (b *banList) prune(now time.Time) {
	if len(b.fails)+len(b.until) <= maxTracked {
		return
	}
	for ip, t := range b.until {
		if !now.Before(t) {
			delete(b.until, ip)
		}
	}
	for ip, f := range b.fails {
		if now.Sub(f.since) > b.window || len(b.fails) > maxTracked/2 {
			delete(b.fails, ip)
		}
	}
}
