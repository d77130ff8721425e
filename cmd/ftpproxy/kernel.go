package main

import (
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/ftpproxy/ftpproxy/kernelpath"
)

// openKernelPath opens the kernel data path if --data-path kernel asks for
// it. Without what it needs (CAP_NET_ADMIN, conntrack with accounting,
// forwarding) the proxy says why, once, and relays every transfer itself:
// a fallback, never a failure. A process that takes over from another in
// an upgrade keeps the table, whose redirects still wait for their
// connections.
func openKernelPath(o *options, inherited bool, log zerolog.Logger) *kernelpath.Path {
	if o.dataPath != "kernel" {
		return nil
	}
	p, err := kernelpath.Open(kernelpath.Config{Table: o.kernelTable, Guard: o.kernelGuard, Keep: inherited, Log: log})
	if err != nil {
		log.Warn().Err(err).Msg("kernel data path unavailable: every transfer is relayed by the proxy, as with --data-path splice")
		return nil
	}
	log.Info().Str("table", "inet "+o.kernelTable).Bool("forward_guard", o.kernelGuard).
		Bool("ipv4", p.Forwards(ipv4)).Bool("ipv6", p.Forwards(ipv6)).
		Msg("kernel data path on: plain passive transfers are carried by the kernel")
	return p
}

var (
	ipv4 = netip.IPv4Unspecified()
	ipv6 = netip.IPv6Unspecified()
)

// registerKernelPath adds ftpproxy_kernel_path_up to reg: 1 when the
// kernel data path asked for is on, 0 when the proxy fell back to relaying
// every transfer (the log line at start says why). Absent with
// --data-path splice.
func registerKernelPath(reg prometheus.Registerer, on bool) {
	up := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "ftpproxy",
		Name:      "kernel_path_up",
		Help:      "With --data-path kernel: 1 if the kernel carries plain passive transfers, 0 if the proxy fell back to relaying them all (see the log at start).",
	})
	if on {
		up.Set(1)
	}
	reg.MustRegister(up)
}
