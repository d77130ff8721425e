package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ftpproxy/ftpproxy/nat"
	"github.com/ftpproxy/ftpproxy/proxy"
)

func TestHealthHandler(t *testing.T) {
	pool, _ := nat.NewPortPool(21000, 21003)
	srv := proxy.New(proxy.Config{Upstream: "127.0.0.1:1", PassivePorts: pool})
	h := healthHandler(srv, pool)
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
