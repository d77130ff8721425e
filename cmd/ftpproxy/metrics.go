package main

import (
	"fmt"
	"net/http"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// newRegistry returns the registry /metrics serves, with the build
// information and the Go runtime's and the process's own collectors; each
// service registers its proxy.Metrics on it (fleet.metricsFor).
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "ftpproxy",
		Name:      "build_info",
		Help:      "Always 1; the labels say which ftpproxy runs and the Go release it was built with.",
	}, []string{"version", "goversion"})
	build.WithLabelValues(versionString(), runtime.Version()).Set(1)
	reg.MustRegister(
		build,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// httpHandler serves the --health address: the metrics of reg in the
// Prometheus text format on /metrics, the health check of the services
// views returns on every other path (load balancers ask for /).
func httpHandler(views func() []healthView, reg prometheus.Gatherer, log zerolog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      promLogger{log},
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.Handle("/", healthHandler(views))
	return mux
}

// promLogger logs the errors of a scrape (a collector that failed; the
// rest of the scrape is still served).
type promLogger struct{ log zerolog.Logger }

func (l promLogger) Println(v ...any) {
	l.log.Error().Str("error", fmt.Sprint(v...)).Msg("metrics scrape failed")
}
