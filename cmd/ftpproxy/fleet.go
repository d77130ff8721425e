package main

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/ftpproxy/ftpproxy/kernelpath"
	"github.com/ftpproxy/ftpproxy/nat"
	"github.com/ftpproxy/ftpproxy/proxy"
)

// service is one proxy.Server with its listeners: a service of the
// configuration file, or the one proxy of a configuration without
// services (name "").
type service struct {
	name string
	srv  *proxy.Server
	lns  *listenerSet

	// What it runs with now; the fleet's mutex guards them, as a reload
	// replaces them while the health endpoint reads them.
	opts *options
	pool *proxy.UpstreamPool
}

// fleet is the process's services: it starts them, applies a reload to
// them (matched by name) and drains them.
type fleet struct {
	upg *upgrader
	wg  *sync.WaitGroup
	reg *prometheus.Registry // nil without --health

	// metrics are by service name, made at a service's first start and
	// kept: a registry takes a service's series once, and a service
	// removed by one reload may come back with the next.
	metrics map[string]*proxy.Metrics

	// kernel is the process's kernel data path, nil when transfers are
	// relayed; set before the first start.
	kernel *kernelpath.Path

	mu       sync.Mutex
	live     []*service // in the file's order
	draining []*service // removed by a reload, with sessions still running
}

func newFleet(upg *upgrader, wg *sync.WaitGroup, reg *prometheus.Registry) *fleet {
	return &fleet{upg: upg, wg: wg, reg: reg, metrics: make(map[string]*proxy.Metrics)}
}

// serviceOptions returns the options of each service of o: its services,
// or o itself when it has none.
func serviceOptions(o *options) []*options {
	if len(o.services) > 0 {
		return o.services
	}
	return []*options{o}
}

// metricsFor returns the metrics of the service name. Named services
// carry their name in a service label on every series; the one proxy of
// a configuration without services keeps the series without it, as they
// have always been.
func (f *fleet) metricsFor(name string) *proxy.Metrics {
	if f.reg == nil {
		return nil
	}
	if m, ok := f.metrics[name]; ok {
		return m
	}
	var r prometheus.Registerer = f.reg
	if name != "" {
		r = prometheus.WrapRegistererWith(prometheus.Labels{"service": name}, f.reg)
	}
	m := proxy.NewMetrics(r)
	f.metrics[name] = m
	return m
}

// config builds the proxy configuration of o. With old, the service o
// replaces, a port range that stays the same keeps its pool (which knows
// the ports that running transfers hold) and its upstream pool keeps what
// it learnt of the servers still listed.
func (f *fleet) config(o *options, old *service, log zerolog.Logger) (proxy.Config, *proxy.UpstreamPool, zerolog.Logger) {
	if o.name != "" {
		log = log.With().Str("service", o.name).Logger()
	}
	if old != nil {
		o.passivePorts = samePool(o.passivePorts, old.opts.passivePorts)
		o.activePorts = samePool(o.activePorts, old.opts.activePorts)
	}
	cfg := o.proxyConfig()
	cfg.Logger, cfg.Metrics = log, f.metricsFor(o.name)
	cfg.KernelPath = f.kernel
	if o.certs != nil {
		cfg.TLS = o.certs.serverConfig(o.tlsMin)
		logLoaded(log, o.certs.cur.Load().Leaf, o.certs.certFile)
	}
	if o.upstreamInsecure {
		log.Warn().Msg("--upstream-insecure-skip-verify: the upstream's certificate is not verified; anyone on the path can read and change the sessions")
	}
	var pool *proxy.UpstreamPool
	if len(o.pool) > 0 {
		if old != nil && old.pool != nil {
			// The same pool, so that its servers' state outlives the
			// reload, with the list as it now is.
			pool = old.pool
			pool.SetLogger(log)
			pool.SetServers(o.pool)
		} else {
			pool = proxy.NewUpstreamPool(o.pool, proxy.PoolOptions{Logger: log})
		}
		cfg.Pool = pool
	}
	return cfg, pool, log
}

// startService makes the service of o and opens its listeners, or none.
func (f *fleet) startService(o *options, log zerolog.Logger) (*service, error) {
	cfg, pool, slog := f.config(o, nil, log)
	s := &service{name: o.name, srv: proxy.New(cfg), opts: o, pool: pool}
	s.lns = newListenerSet(s.srv, f.upg, f.wg, slog)
	if err := s.lns.openAll(o.listen, o.listenImplicit); err != nil {
		s.srv.Close()
		if o.name != "" {
			return nil, fmt.Errorf("service %q: %w", o.name, err)
		}
		return nil, err
	}
	return s, nil
}

// start starts every service of o, or none.
func (f *fleet) start(o *options, log zerolog.Logger) error {
	var started []*service
	for _, so := range serviceOptions(o) {
		s, err := f.startService(so, log)
		if err != nil {
			for _, s := range started {
				s.lns.closeAll()
				s.srv.Close()
			}
			return err
		}
		started = append(started, s)
	}
	f.mu.Lock()
	f.live = started
	f.mu.Unlock()
	return nil
}

// reload applies next to the services, matched by name: a service that
// stays takes its new settings for the sessions that start from now on
// and follows its listen addresses; a service that is new starts; a
// service that is gone stops accepting and drains, its sessions never cut
// by the reload. An address that cannot be opened is logged, as the rest
// of the reload stands.
func (f *fleet) reload(next *options, log zerolog.Logger) {
	f.mu.Lock()
	live := slices.Clone(f.live)
	f.mu.Unlock()
	byName := make(map[string]*service, len(live))
	for _, s := range live {
		byName[s.name] = s
	}
	wanted := serviceOptions(next)
	// First every address that goes away is closed, in every service,
	// so that one moving between services is free to open again.
	for _, s := range live {
		i := slices.IndexFunc(wanted, func(o *options) bool { return o.name == s.name })
		if i < 0 {
			f.retire(s, log)
			continue
		}
		plain, implicit := s.lns.addrs()
		s.lns.update(keepOnly(wanted[i].listen, plain), keepOnly(wanted[i].listenImplicit, implicit), s.lns.logger())
	}
	var now []*service
	for _, o := range wanted {
		s := byName[o.name]
		if s == nil {
			ns, err := f.startService(o, log)
			if err != nil {
				log.Error().Err(err).Str("service", o.name).Msg("reload: cannot start an added service")
				continue
			}
			log.Info().Str("service", o.name).Msg("service added by a reload")
			now = append(now, ns)
			continue
		}
		cfg, pool, slog := f.config(o, s, log)
		s.srv.Reconfigure(cfg)
		s.lns.update(o.listen, o.listenImplicit, slog)
		f.mu.Lock()
		s.opts, s.pool = o, pool
		f.mu.Unlock()
		now = append(now, s)
	}
	f.mu.Lock()
	f.live = now
	f.mu.Unlock()
}

// keepOnly returns the items of want that are in have.
func keepOnly(want, have []string) []string {
	var out []string
	for _, a := range want {
		if slices.Contains(have, a) {
			out = append(out, a)
		}
	}
	return out
}

// retire stops a service that a reload removed: its listeners close at
// once and its sessions go on until they end by themselves.
func (f *fleet) retire(s *service, log zerolog.Logger) {
	s.lns.update(nil, nil, s.lns.logger())
	f.mu.Lock()
	f.draining = append(f.draining, s)
	f.mu.Unlock()
	log.Info().Str("service", s.name).Int("sessions", s.srv.Sessions()).Msg("service removed by a reload: no new sessions; its sessions go on")
	go func() {
		s.srv.Shutdown(context.Background())
		f.mu.Lock()
		f.draining = slices.DeleteFunc(f.draining, func(d *service) bool { return d == s })
		f.mu.Unlock()
		log.Info().Str("service", s.name).Msg("removed service drained")
	}()
}

// all returns the live services and the ones draining after a reload.
func (f *fleet) all() []*service {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append(slices.Clone(f.live), f.draining...)
}

// sessions counts the sessions of every service.
func (f *fleet) sessions() int {
	n := 0
	for _, s := range f.all() {
		n += s.srv.Sessions()
	}
	return n
}

// shutdown drains every service at once, as proxy.Server.Shutdown does
// one; it returns the first error.
func (f *fleet) shutdown(ctx context.Context) error {
	svcs := f.all()
	errs := make([]error, len(svcs))
	var wg sync.WaitGroup
	for i, s := range svcs {
		wg.Go(func() { errs[i] = s.srv.Shutdown(ctx) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// close closes every listener and ends every session at once, for a start
// that fails half-way.
func (f *fleet) close() {
	for _, s := range f.all() {
		s.lns.closeAll()
		s.srv.Close()
	}
}

// healthViews is what the health endpoint reports of each service.
func (f *fleet) healthViews() []healthView {
	f.mu.Lock()
	defer f.mu.Unlock()
	views := make([]healthView, 0, len(f.live)+len(f.draining))
	for _, s := range f.live {
		views = append(views, healthView{name: s.name, srv: s.srv, ports: s.opts.passivePorts, pool: s.pool})
	}
	for _, s := range f.draining {
		views = append(views, healthView{name: s.name, srv: s.srv, ports: s.opts.passivePorts, removed: true})
	}
	return views
}

// healthView is one service as the health endpoint reports it.
type healthView struct {
	name    string
	srv     *proxy.Server
	ports   *nat.PortPool       // its passive range, nil without
	pool    *proxy.UpstreamPool // its servers, nil with one upstream
	removed bool                // removed by a reload, draining
}
