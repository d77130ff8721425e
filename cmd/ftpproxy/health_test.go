package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/ftpproxy/ftpproxy/nat"
	"github.com/ftpproxy/ftpproxy/proxy"
)

func TestHealthHandler(t *testing.T) {
	pool, _ := nat.NewPortPool(21000, 21003)
	srv := proxy.New(proxy.Config{Upstream: "127.0.0.1:1", PassivePorts: pool})
	h := healthHandler(func() []healthView { return []healthView{{srv: srv, ports: pool}} })
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		return rec.Code, rec.Body.String()
	}
	pool.Acquire()
	if code, body := get(); code != http.StatusOK || !strings.HasPrefix(body, "ok, 0 sessions, 1/4 passive ports in use, ") || !strings.HasSuffix(body, " goroutines\n") {
		t.Fatalf("while accepting: %d %q", code, body)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, body := get(); code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "draining") {
		t.Fatalf("while draining: %d %q", code, body)
	}
}

// One service with a pool: the first line as without, then a line per
// server of the pool.
func TestHealthHandlerPool(t *testing.T) {
	pool := proxy.NewUpstreamPool([]string{"127.0.0.1:1", "127.0.0.1:2"})
	srv := proxy.New(proxy.Config{Pool: pool})
	pool.Report("127.0.0.1:1", nil)
	pool.Report("127.0.0.1:2", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED})
	h := healthHandler(func() []healthView { return []healthView{{srv: srv, pool: pool}} })
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	body := rec.Body.String()
	lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
	if rec.Code != http.StatusOK || len(lines) != 3 || !strings.HasPrefix(lines[0], "ok, 0 sessions, ") ||
		lines[1] != "upstream 127.0.0.1:1: up, 1 sessions, 0 connect failures" ||
		!regexp.MustCompile(`^upstream 127\.0\.0\.1:2: down for 0s, retry in 10s, 1 failures in a row, 0 sessions, 1 connect failures: dial tcp: connection refused$`).MatchString(lines[2]) {
		t.Fatalf("health: %d %q", rec.Code, body)
	}
}
