// Command ftpproxy relays FTP sessions to an upstream server (or a pool of
// equivalent ones) and rewrites the data-connection addresses in PASV,
// EPSV, PORT and EPRT, so transfers work in passive and active mode
// through NAT and firewalls. A configuration file may run several such
// services in one process (services.go).
//
//	ftpproxy --listen :2121 --upstream ftp.internal:21 --passive-ports 21000-21099
//	ftpproxy --config /etc/ftpproxy/ftpproxy.yaml
//	ftpproxy check-config --config /etc/ftpproxy/ftpproxy.yaml
//	ftpproxy version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		fmt.Println("ftpproxy", versionString())
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "check-config" {
		os.Exit(checkConfig(os.Args[2:], os.Stdout, os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "passwd" {
		os.Exit(passwdMain(os.Args[2:], os.Stdin, os.Stdout, os.Stderr))
	}
	if len(os.Args) > 1 && os.Args[1] == "probe" {
		os.Exit(probeMain(os.Args[2:], os.Stdout, os.Stderr, os.Getenv))
	}
	opts, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ftpproxy:", err)
		os.Exit(2)
	}
	if err := run(opts); err != nil {
		fmt.Fprintln(os.Stderr, "ftpproxy:", err)
		os.Exit(1)
	}
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

func run(o *options) error {
	log := newLogger(logOutput, o.logFormat, o.logLevel)
	var reg *prometheus.Registry
	var reloads *reloadMetrics
	if o.health != "" {
		reg = newRegistry()
		reloads = newReloadMetrics(reg)
	}
	upg, err := newUpgrader(o.pidFile)
	if err != nil {
		return fmt.Errorf("upgrade support: %w", err)
	}
	defer upg.stop()

	var wg sync.WaitGroup
	svcs := newFleet(upg, &wg, reg)
	svcs.kernel = openKernelPath(o, upg.inherited(), log)
	if reg != nil && o.dataPath == "kernel" {
		registerKernelPath(reg, svcs.kernel != nil)
	}
	if err := svcs.start(o, log); err != nil {
		return err
	}
	var healthLn net.Listener
	if o.health != "" {
		hln, err := upg.listen(o.health)
		if err != nil {
			svcs.close()
			return fmt.Errorf("--health %s: %w", o.health, err)
		}
		hs := &http.Server{Handler: httpHandler(svcs.healthViews, reg, log), ReadHeaderTimeout: 5 * time.Second}
		go hs.Serve(hln)
		// The health endpoint answers 503 through the drain, and goes
		// when the process does; after an upgrade it goes at once (below),
		// and the new process answers on the same socket.
		defer hs.Close()
		healthLn = hln
		log.Info().Str("health", hln.Addr().String()).Str("metrics", "/metrics").Msg("health endpoint listening")
	}
	rl := &reloader{args: os.Args[1:], cur: o, svcs: svcs, log: log, counts: reloads}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			rl.reload()
		}
	}()

	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)
	go func() {
		for range usr2 {
			upg.upgrade(log)
		}
	}()
	upg.ready(log)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	upgraded := false
	select {
	case sig := <-sigs:
		log.Info().Str("signal", sig.String()).Dur("drain_timeout", o.drainTimeout).Int("sessions", svcs.sessions()).Msg("draining: no new sessions")
		// The upgrader holds a copy of every listening socket for a
		// successor; with none coming, they must close with ours, or the
		// kernel would go on queueing connections nobody accepts.
		upg.stop()
	case <-upg.exit():
		upgraded = true
		log.Info().Dur("drain_timeout", o.drainTimeout).Int("sessions", svcs.sessions()).Msg("upgraded: the new process accepts; draining this one")
		if healthLn != nil {
			healthLn.Close()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.drainTimeout)
	defer cancel()
	go func() {
		// A second signal stops at once.
		<-sigs
		log.Info().Msg("second signal: closing every session now")
		cancel()
	}()
	if err := svcs.shutdown(ctx); err != nil {
		log.Warn().Err(err).Msg("drain cut short: remaining sessions were closed")
	}
	wg.Wait()
	if svcs.kernel != nil {
		// The table goes with the proxy, unless the process that took
		// over uses it.
		if err := svcs.kernel.Close(upgraded); err != nil {
			log.Warn().Err(err).Msg("kernel data path: table not removed")
		}
	}
	log.Info().Msg("ftpproxy stopped")
	return nil
}

// zerolog's time format is a package variable, read as every line is
// written: set once, before any logger exists, never by a reload.
func init() { zerolog.TimeFieldFormat = time.RFC3339Nano }

// logOutput is where the process logs.
var logOutput io.Writer = os.Stderr

// newLogger builds the process logger; sessions derive their own from it.
func newLogger(w io.Writer, format string, level zerolog.Level) zerolog.Logger {
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}
