package main

import (
	"fmt"
	"net/http"
	"runtime"

	"github.com/ftpproxy/ftpproxy/nat"
	"github.com/ftpproxy/ftpproxy/proxy"
)

// healthHandler answers load balancer checks: 200 while the proxy accepts
// sessions, 503 once it drains, so new sessions go to another instance
// while the running ones finish here. The body says how busy it is, with
// the passive ports in use if there is a range and the goroutines running
// (figures that do not come back down when the proxy is idle show a leak).
func healthHandler(srv *proxy.Server, pool *nat.PortPool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		state := "ok"
		if !srv.Accepting() {
			state = "draining"
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintf(w, "%s, %d sessions", state, srv.Sessions())
		if pool != nil {
			fmt.Fprintf(w, ", %d/%d passive ports in use", pool.InUse(), pool.Size())
		}
		fmt.Fprintf(w, ", %d goroutines\n", runtime.NumGoroutine())
	})
}
