package main

import (
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/ftpproxy/ftpproxy/nat"
)

// reloader applies the command line and the --config file again on
// SIGHUP (systemctl reload). The new settings apply to sessions that start
// afterwards and at once to the access lists, limits and bans; sessions
// and transfers in progress keep what they started with. A file that does
// not parse or validate is refused, logged and counted, and the running
// configuration stays. Services are matched by name (fleet.reload): one
// added starts, one removed stops accepting and drains. Listen addresses
// added are opened and removed ones stop accepting (their sessions go on);
// the health address needs a restart, and so does a switch between a
// configuration with services and one without.
type reloader struct {
	args   []string
	cur    *options
	svcs   *fleet
	log    zerolog.Logger
	counts *reloadMetrics // nil without --health
}

func (r *reloader) reload() {
	next, err := parseFlags(r.args, io.Discard)
	if err == nil && (len(next.services) > 0) != (len(r.cur.services) > 0) {
		err = errMixedServices
	}
	if err != nil {
		r.log.Error().Err(err).Msg("configuration reload refused; the running configuration stays")
		r.counts.record(false)
		return
	}
	if next.health != r.cur.health {
		r.log.Warn().Msg("the health address changed: it applies at the next restart")
	}
	if next.dataPath != r.cur.dataPath || next.kernelTable != r.cur.kernelTable || next.kernelGuard != r.cur.kernelGuard {
		r.log.Warn().Msg("the data path settings changed: they apply at the next restart")
	}
	log := newLogger(logOutput, next.logFormat, next.logLevel)
	r.svcs.reload(next, log)
	r.cur, r.log = next, log
	r.counts.record(true)
	ev := log.Info()
	if len(next.services) == 0 {
		ev = ev.Str("upstream", next.upstream)
	} else {
		ev = ev.Int("services", len(next.services))
	}
	ev.Msg("configuration reloaded: new sessions use it")
}

// samePool returns old if next covers the same ports.
func samePool(next, old *nat.PortPool) *nat.PortPool {
	if next == nil || old == nil {
		return next
	}
	nlo, nhi := next.Range()
	olo, ohi := old.Range()
	if nlo == olo && nhi == ohi {
		return old
	}
	return next
}

// reloadMetrics counts reloads by result and keeps the time of the last
// one that took.
type reloadMetrics struct {
	total *prometheus.CounterVec
	last  prometheus.Gauge
}

func newReloadMetrics(reg prometheus.Registerer) *reloadMetrics {
	m := &reloadMetrics{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ftpproxy", Name: "config_reloads_total",
			Help: "Configuration reloads (SIGHUP) by result: success, or failure (the running configuration stayed).",
		}, []string{"result"}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "ftpproxy", Name: "config_last_reload_success_timestamp_seconds",
			Help: "When the configuration in use was loaded, at start or by the last successful reload.",
		}),
	}
	m.total.WithLabelValues("success")
	m.total.WithLabelValues("failure")
	m.last.SetToCurrentTime()
	reg.MustRegister(m.total, m.last)
	return m
}

func (m *reloadMetrics) record(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.total.WithLabelValues("success").Inc()
		m.last.Set(float64(time.Now().UnixNano()) / 1e9)
		return
	}
	m.total.WithLabelValues("failure").Inc()
}
