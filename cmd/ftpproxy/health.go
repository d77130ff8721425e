package main

import (
	"fmt"
	"net/http"

	"github.com/ftpproxy/ftpproxy/proxy"
)

// healthHandler answers load balancer checks: 200 while the proxy accepts
// sessions, 503 once it drains, so new sessions go to another instance
// while the running ones finish here.
func healthHandler(srv *proxy.Server) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if !srv.Accepting() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "draining, %d sessions\n", srv.Sessions())
			return
		}
		fmt.Fprintf(w, "ok, %d sessions\n", srv.Sessions())
	})
}
