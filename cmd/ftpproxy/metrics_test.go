package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/rs/zerolog"

	"github.com/ftpproxy/ftpproxy/nat"
	"github.com/ftpproxy/ftpproxy/proxy"
)

// TestMetricsEndpoint runs one session through a proxy whose metrics are
// on the --health handler, then scrapes /metrics as Prometheus does and
// finds every family the README lists, the session counted, the build
// information, and the Go and process collectors; the health check still
// answers on /.
func TestMetricsEndpoint(t *testing.T) {
	upstream := quitServer(t)
	pool, err := nat.NewPortPool(21000, 21003)
	if err != nil {
		t.Fatal(err)
	}
	reg := newRegistry()
	m := proxy.NewMetrics(reg)
	srv := proxy.New(proxy.Config{Upstream: upstream, PassivePorts: pool, Metrics: m})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, proxy.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	views := func() []healthView { return []healthView{{srv: srv, ports: pool}} }
	hs := httptest.NewServer(httpHandler(views, reg, zerolog.Nop()))
	t.Cleanup(hs.Close)

	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	expectLine(t, br, "220 ")
	io.WriteString(c, "QUIT\r\n")
	expectLine(t, br, "221 ")

	// The session is counted as it closes, after the client has its 221.
	var families map[string]*dto.MetricFamily
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		families = scrape(t, hs.URL+"/metrics")
		if counterValue(families["ftpproxy_sessions_total"], "result", "quit") == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the session's end was not counted in ftpproxy_sessions_total")
		}
		<-tick.C
	}

	for _, name := range []string{
		"ftpproxy_build_info",
		"ftpproxy_sessions_active",
		"ftpproxy_sessions_total",
		"ftpproxy_sessions_refused_total",
		"ftpproxy_logins_total",
		"ftpproxy_transfers_total",
		"ftpproxy_transfer_bytes_total",
		"ftpproxy_transfer_duration_seconds",
		"ftpproxy_upstream_connect_duration_seconds",
		"ftpproxy_upstream_connect_errors_total",
		"ftpproxy_data_connection_failures_total",
		"ftpproxy_passive_ports_in_use",
		"ftpproxy_passive_ports_free",
		"ftpproxy_bans_active",
		"ftpproxy_tls_handshakes_total",
		"ftpproxy_tls_data_resumed_total",
		"go_goroutines",
		"process_open_fds",
	} {
		if families[name] == nil {
			if name == "process_open_fds" && runtime.GOOS != "linux" {
				continue
			}
			t.Errorf("/metrics has no family %s", name)
		}
	}
	if h := families["ftpproxy_upstream_connect_duration_seconds"]; h != nil && h.GetMetric()[0].GetHistogram().GetSampleCount() != 1 {
		t.Errorf("upstream connects observed: %d, want 1", h.GetMetric()[0].GetHistogram().GetSampleCount())
	}
	if f := families["ftpproxy_passive_ports_free"]; f != nil && f.GetMetric()[0].GetGauge().GetValue() != 4 {
		t.Errorf("passive ports free: %v, want 4", f.GetMetric()[0].GetGauge().GetValue())
	}
	if b := families["ftpproxy_build_info"]; b != nil {
		labels := make(map[string]string)
		for _, lp := range b.GetMetric()[0].GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		if labels["version"] != versionString() || labels["goversion"] != runtime.Version() || b.GetMetric()[0].GetGauge().GetValue() != 1 {
			t.Errorf("ftpproxy_build_info %v = %v", labels, b.GetMetric()[0].GetGauge().GetValue())
		}
	}

	// The checks of promtool check metrics: names, units, help texts.
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}

	resp, err := http.Get(hs.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(body), "ok, ") {
		t.Errorf("health on /: %d %q", resp.StatusCode, body)
	}
}

// scrape fetches url as Prometheus does and parses the text format.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return families
}

// counterValue returns the value of the series of mf whose label has
// value, or -1.
func counterValue(mf *dto.MetricFamily, label, value string) float64 {
	for _, m := range mf.GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label && lp.GetValue() == value {
				return m.GetCounter().GetValue()
			}
		}
	}
	return -1
}

// quitServer is an upstream that greets and answers QUIT, once per
// connection, until the test ends.
func quitServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "220 ready\r\n")
			if line, err := bufio.NewReader(c).ReadString('\n'); err == nil && strings.HasPrefix(line, "QUIT") {
				io.WriteString(c, "221 bye\r\n")
			}
			c.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
	})
	return ln.Addr().String()
}

func expectLine(t *testing.T, br *bufio.Reader, prefix string) {
	t.Helper()
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, prefix) {
		t.Fatalf("got %q, %v; want a line starting %q", line, err, prefix)
	}
}

// TestKernelPathUpMetric: the gauge says whether the kernel path asked
// for is on.
func TestKernelPathUpMetric(t *testing.T) {
	for _, on := range []bool{true, false} {
		reg := newRegistry()
		registerKernelPath(reg, on)
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, mf := range mfs {
			if mf.GetName() == "ftpproxy_kernel_path_up" {
				found = true
				if v := mf.GetMetric()[0].GetGauge().GetValue(); (v == 1) != on {
					t.Errorf("on=%v: gauge %v", on, v)
				}
			}
		}
		if !found {
			t.Errorf("on=%v: no ftpproxy_kernel_path_up", on)
		}
	}
}
