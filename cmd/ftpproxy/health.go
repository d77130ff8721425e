package main

import (
	"fmt"
	"io"
	"net/http"
	"runtime"
	"time"

	"github.com/ftpproxy/ftpproxy/nat"
	"github.com/ftpproxy/ftpproxy/proxy"
)

// healthHandler answers load balancer checks: 200 while the proxy accepts
// sessions, 503 once it drains, so new sessions go to another instance
// while the running ones finish here. The first line says how busy the
// process is, with the passive ports in use if there is a range and the
// goroutines running (figures that do not come back down when the proxy
// is idle show a leak):
//
//	ok, 3 sessions, 2/200 passive ports in use, 41 goroutines
//
// A line follows for each service of a configuration with services, and
// one for each server of a pool, so that a person sees which is down:
//
//	service files: ok, 1 sessions, 1/100 passive ports in use
//	service archive upstream 10.0.1.6:21: down for 12s, retry in 8s, 2 failures in a row: dial tcp 10.0.1.6:21: connect: connection refused
//
// A server of a pool that is down does not turn the answer to 503: the
// other services, and the pool's other servers, still work.
func healthHandler(views func() []healthView) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		vs := views()
		state := "ok"
		sessions := 0
		inUse, size := 0, 0
		seen := make(map[*nat.PortPool]bool)
		for _, v := range vs {
			if !v.removed && !v.srv.Accepting() {
				state = "draining"
			}
			sessions += v.srv.Sessions()
			if v.ports != nil && !seen[v.ports] {
				seen[v.ports] = true
				inUse += v.ports.InUse()
				size += v.ports.Size()
			}
		}
		if state != "ok" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintf(w, "%s, %d sessions", state, sessions)
		if len(seen) > 0 {
			fmt.Fprintf(w, ", %d/%d passive ports in use", inUse, size)
		}
		fmt.Fprintf(w, ", %d goroutines\n", runtime.NumGoroutine())
		now := time.Now()
		for _, v := range vs {
			writeServiceHealth(w, v, now)
		}
	})
}

// writeServiceHealth writes the lines of one service: its own, if it has
// a name, and one per server of its pool.
func writeServiceHealth(w io.Writer, v healthView, now time.Time) {
	prefix := ""
	if v.name != "" {
		prefix = "service " + v.name + " "
		state := "ok"
		switch {
		case v.removed:
			state = "removed, draining"
		case !v.srv.Accepting():
			state = "draining"
		}
		fmt.Fprintf(w, "service %s: %s, %d sessions", v.name, state, v.srv.Sessions())
		if v.ports != nil {
			fmt.Fprintf(w, ", %d/%d passive ports in use", v.ports.InUse(), v.ports.Size())
		}
		fmt.Fprintln(w)
	}
	if v.pool == nil {
		return
	}
	for _, st := range v.pool.Servers() {
		fmt.Fprintf(w, "%supstream %s: %s\n", prefix, st.Addr, poolServerHealth(st, now))
	}
}

// poolServerHealth describes one server of a pool.
func poolServerHealth(st proxy.PoolServerStatus, now time.Time) string {
	if st.Up {
		s := fmt.Sprintf("up, %d sessions, %d connect failures", st.Sessions, st.ConnectFailures)
		if st.Failures > 0 {
			s += fmt.Sprintf(", %d failures in a row: %s", st.Failures, st.LastError)
		}
		return s
	}
	retry := "retry now"
	if d := st.RetryAt.Sub(now); d > 0 {
		retry = "retry in " + d.Round(time.Second).String()
	}
	return fmt.Sprintf("down for %s, %s, %d failures in a row, %d sessions, %d connect failures: %s",
		now.Sub(st.DownSince).Round(time.Second), retry, st.Failures, st.Sessions, st.ConnectFailures, st.LastError)
}
