package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ftpproxy/ftpproxy/proxy"
)

func TestHealthHandler(t *testing.T) {
	srv := proxy.New(proxy.Config{Upstream: "127.0.0.1:1"})
	h := healthHandler(srv)
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get(); code != http.StatusOK || !strings.HasPrefix(body, "ok") {
		t.Fatalf("while accepting: %d %q", code, body)
	}
	if err := srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code, body := get(); code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "draining") {
		t.Fatalf("while draining: %d %q", code, body)
	}
}
