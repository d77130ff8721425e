package proxy_test

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/ftpproxy/ftpproxy/proxy"
)

// startMetricsProxy is startProxy with metrics on a registry of its own.
func startMetricsProxy(t testing.TB, upstream string, o proxyOpts) (*proxyEnv, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m := proxy.NewMetrics(reg)
	config := o.config
	o.config = func(c *proxy.Config) {
		if config != nil {
			config(c)
		}
		c.Metrics = m
	}
	return startProxy(t, upstream, o), reg
}

// series gathers reg and returns every series by its name and labels, as
// the text format writes them: `name{label="value",...}`. A histogram
// gives its _count and _sum.
func series(t testing.TB, reg prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := make(map[string]float64)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
			}
			key := func(suffix string) string {
				k := mf.GetName() + suffix
				if len(labels) > 0 {
					k += "{" + strings.Join(labels, ",") + "}"
				}
				return k
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[key("")] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key("")] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key("_count")] = float64(m.GetHistogram().GetSampleCount())
				out[key("_sum")] = m.GetHistogram().GetSampleSum()
			}
		}
	}
	return out
}

// wantSeries checks the value of each series named in want.
func wantSeries(t testing.TB, reg prometheus.Gatherer, want map[string]float64) {
	t.Helper()
	got := series(t, reg)
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v, ok := got[k]
		switch {
		case !ok:
			t.Errorf("%s: no such series", k)
		case v != want[k]:
			t.Errorf("%s = %v, want %v", k, v, want[k])
		}
	}
}

// sumSeries adds up every series of the family name.
func sumSeries(t testing.TB, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	var sum float64
	for k, v := range series(t, reg) {
		if k == name || strings.HasPrefix(k, name+"{") {
			sum += v
		}
	}
	return sum
}

// waitSeries polls until the series key has the value want: the proxy
// counts a session's end after its client has seen the last reply.
func waitSeries(t testing.TB, reg prometheus.Gatherer, key string, want float64) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		got, ok := series(t, reg)[key]
		if ok && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v (present %v), want %v", key, got, ok, want)
		}
		<-tick.C
	}
}

func TestMetricsLogins(t *testing.T) {
	checkFDs(t)
	fs := newFakeServer(t, passwordServer)
	e, reg := startMetricsProxy(t, fs.addr(), proxyOpts{})

	good := dialLogin(t, e.addr)
	good.Cmd("USER bob", 331)
	good.Cmd("PASS good", 230)
	good.Cmd("QUIT", 221)

	bad := dialLogin(t, e.addr)
	bad.Cmd("USER bob", 331)
	bad.Cmd("PASS wrong", 530)
	bad.Cmd("QUIT", 221)

	waitSeries(t, reg, `ftpproxy_sessions_total{result="quit"}`, 2)
	waitSeries(t, reg, `ftpproxy_sessions_active`, 0)
	wantSeries(t, reg, map[string]float64{
		`ftpproxy_logins_total{result="success"}`:          1,
		`ftpproxy_logins_total{result="failure"}`:          1,
		`ftpproxy_upstream_connect_duration_seconds_count`: 2,
		`ftpproxy_bans_active`:                             0,
	})
	if n := sumSeries(t, reg, "ftpproxy_sessions_total"); n != 2 {
		t.Errorf("sessions counted %v times, want 2", n)
	}
	if n := sumSeries(t, reg, "ftpproxy_upstream_connect_errors_total"); n != 0 {
		t.Errorf("upstream connect errors %v, want 0", n)
	}
}

func TestMetricsBan(t *testing.T) {
	checkFDs(t)
	fs := newFakeServer(t, passwordServer)
	e, reg := startMetricsProxy(t, fs.addr(), proxyOpts{config: func(c *proxy.Config) { c.MaxLoginFailures = 2 }})

	c := dialLogin(t, e.addr)
	c.Cmd("USER bob", 331)
	c.Cmd("PASS wrong", 530)
	c.Cmd("USER bob", 331)
	c.Cmd("PASS wrong", 530)
	c.Expect(421)
	c.ExpectEOF()
	again := dialProxy(t, e.addr)
	again.Expect(421)
	again.ExpectEOF()

	waitSeries(t, reg, `ftpproxy_sessions_total{result="refused"}`, 1)
	waitSeries(t, reg, `ftpproxy_sessions_total{result="banned"}`, 1)
	wantSeries(t, reg, map[string]float64{
		`ftpproxy_logins_total{result="failure"}`:          2,
		`ftpproxy_sessions_refused_total{reason="banned"}`: 1,
		`ftpproxy_bans_active`:                             1,
	})
}

func TestMetricsPassiveTransfers(t *testing.T) {
	checkFDs(t)
	down := randomBytes(t, 300<<10)
	up := randomBytes(t, 200<<10+17)
	m := &miniFTP{files: map[string][]byte{"down.bin": down}, stored: make(chan storedFile, 1)}
	fs := newFakeServer(t, m.serve)
	e, reg := startMetricsProxy(t, fs.addr(), proxyOpts{})

	c := dialLogin(t, e.addr)
	c.Cmd("USER anonymous", 331)
	c.Cmd("PASS guest", 230)
	c.Cmd("TYPE I", 200)
	ap := checkPASVReply(t, e, c.Cmd("PASV", 227))
	wantSeries(t, reg, map[string]float64{
		`ftpproxy_passive_ports_in_use`: 1,
		`ftpproxy_passive_ports_free`:   15,
		`ftpproxy_sessions_active`:      1,
	})
	retrPassive(t, c, ap, "down.bin", down)

	dc := c.DialData(checkPASVReply(t, e, c.Cmd("PASV", 227)))
	c.Send("STOR up.bin")
	c.Expect(150)
	upload(t, dc, up)
	c.Expect(226)
	checkSame(t, "STOR", withTimeout(t, m.stored, "the stored file").data, up)

	// The 226 goes out once the transfer is counted.
	wantSeries(t, reg, map[string]float64{
		`ftpproxy_transfers_total{direction="down",mode="passive",result="ok"}`: 1,
		`ftpproxy_transfers_total{direction="up",mode="passive",result="ok"}`:   1,
		`ftpproxy_transfer_bytes_total{direction="down"}`:                       float64(len(down)),
		`ftpproxy_transfer_bytes_total{direction="up"}`:                         float64(len(up)),
		`ftpproxy_transfer_duration_seconds_count{direction="down"}`:            1,
		`ftpproxy_transfer_duration_seconds_count{direction="up"}`:              1,
		`ftpproxy_passive_ports_in_use`:                                         0,
		`ftpproxy_passive_ports_free`:                                           16,
	})
	if n := sumSeries(t, reg, "ftpproxy_transfers_total"); n != 2 {
		t.Errorf("transfers counted %v times, want 2", n)
	}
	if n := sumSeries(t, reg, "ftpproxy_data_connection_failures_total"); n != 0 {
		t.Errorf("data connection failures %v, want 0", n)
	}
	c.Cmd("QUIT", 221)
	waitSeries(t, reg, `ftpproxy_sessions_total{result="quit"}`, 1)
}

func TestMetricsAccessListRefusal(t *testing.T) {
	checkFDs(t)
	fs := newFakeServer(t, passwordServer)
	e, reg := startMetricsProxy(t, fs.addr(), proxyOpts{config: func(c *proxy.Config) {
		c.Deny = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	}})
	c := dialProxy(t, e.addr)
	c.Expect(421)
	c.ExpectEOF()

	waitSeries(t, reg, `ftpproxy_sessions_total{result="refused"}`, 1)
	wantSeries(t, reg, map[string]float64{
		`ftpproxy_sessions_refused_total{reason="access_list"}`:         1,
		`ftpproxy_sessions_refused_total{reason="max_sessions"}`:        0,
		`ftpproxy_sessions_refused_total{reason="max_sessions_per_ip"}`: 0,
		`ftpproxy_sessions_refused_total{reason="banned"}`:              0,
		`ftpproxy_upstream_connect_duration_seconds_count`:              0,
	})
}

func TestMetricsUpstreamUnreachable(t *testing.T) {
	checkFDs(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	e, reg := startMetricsProxy(t, dead, proxyOpts{})
	c := dialProxy(t, e.addr)
	c.Expect(421)
	c.ExpectEOF()

	waitSeries(t, reg, `ftpproxy_sessions_total{result="upstream_unreachable"}`, 1)
	wantSeries(t, reg, map[string]float64{
		`ftpproxy_upstream_connect_errors_total{reason="refused"}`: 1,
		`ftpproxy_upstream_connect_errors_total{reason="timeout"}`: 0,
	})
}

func TestMetricsForeignDataConnection(t *testing.T) {
	checkFDs(t)
	if ln, err := net.Listen("tcp", "127.0.0.2:0"); err != nil {
		t.Skipf("127.0.0.2 unavailable: %v", err)
	} else {
		ln.Close()
	}
	file := randomBytes(t, 64<<10)
	m := &miniFTP{files: map[string][]byte{"f": file}}
	fs := newFakeServer(t, m.serve)
	e, reg := startMetricsProxy(t, fs.addr(), proxyOpts{})
	c := dialLogin(t, e.addr)
	ap := checkPASVReply(t, e, c.Cmd("PASV", 227))

	d := net.Dialer{Timeout: ioTimeout, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	if foreign, err := d.Dial("tcp", ap.String()); err == nil {
		foreign.SetReadDeadline(time.Now().Add(ioTimeout))
		foreign.Read(make([]byte, 1))
		foreign.Close()
	}
	waitSeries(t, reg, `ftpproxy_data_connection_failures_total{reason="foreign_peer_refused"}`, 1)

	retrPassive(t, c, ap, "f", file)
	wantSeries(t, reg, map[string]float64{
		`ftpproxy_transfers_total{direction="down",mode="passive",result="ok"}`: 1,
		`ftpproxy_transfer_bytes_total{direction="down"}`:                       float64(len(file)),
	})
	if n := sumSeries(t, reg, "ftpproxy_data_connection_failures_total"); n != 1 {
		t.Errorf("data connection failures %v, want 1", n)
	}
	c.Cmd("QUIT", 221)
}

func TestMetricsPassivePortExhaustion(t *testing.T) {
	checkFDs(t)
	m := &miniFTP{}
	fs := newFakeServer(t, m.serve)
	e, reg := startMetricsProxy(t, fs.addr(), proxyOpts{poolSize: 1})
	a := dialLogin(t, e.addr)
	b := dialLogin(t, e.addr)

	checkPASVReply(t, e, a.Cmd("PASV", 227))
	b.Cmd("PASV", 425)
	wantSeries(t, reg, map[string]float64{
		`ftpproxy_data_connection_failures_total{reason="no_passive_port"}`: 1,
		`ftpproxy_passive_ports_in_use`:                                     1,
		`ftpproxy_passive_ports_free`:                                       0,
		`ftpproxy_sessions_active`:                                          2,
	})
	a.Cmd("ABOR", 225) // gives the port back
	wantSeries(t, reg, map[string]float64{`ftpproxy_passive_ports_free`: 1})
	a.Cmd("QUIT", 221)
	b.Cmd("QUIT", 221)
	waitSeries(t, reg, `ftpproxy_sessions_total{result="quit"}`, 2)
	if n := sumSeries(t, reg, "ftpproxy_transfers_total"); n != 0 {
		t.Errorf("transfers counted %v times, want 0: no command used a data channel", n)
	}
}

// A transfer the client aborts is counted as aborted; one the upstream
// refuses once the data channel is open is counted as failed.
func TestMetricsTransferResults(t *testing.T) {
	checkFDs(t)
	fs := newFakeServer(t, func(f *fakeConn) {
		dc := f.serveRETR("endless")
		f.waitErr(streamData(dc, bytes.Repeat([]byte("A"), 32<<10)), "the aborted stream")
		dc.Close()
		f.Send("426 Connection closed; transfer aborted.")
		l := f.AnswerPASV("127,0,0,1")
		f.Expect("RETR missing")
		f.Send("550 No such file.")
		l.ln.Close()
		f.ExpectEOF()
	})
	e, reg := startMetricsProxy(t, fs.addr(), proxyOpts{})
	c := dialLogin(t, e.addr)
	c.DialData(checkPASVReply(t, e, c.Cmd("PASV", 227)))
	c.Send("RETR endless")
	c.Expect(150)
	c.Send("ABOR")
	c.Expect(426)
	c.Expect(226)
	waitSeries(t, reg, `ftpproxy_transfers_total{direction="down",mode="passive",result="aborted"}`, 1)

	c.Cmd("PASV", 227)
	c.Cmd("RETR missing", 550)
	waitSeries(t, reg, `ftpproxy_transfers_total{direction="down",mode="passive",result="failed"}`, 1)
	c.Cmd("QUIT", 221)
	waitSeries(t, reg, `ftpproxy_sessions_total{result="quit"}`, 1)
	if n := sumSeries(t, reg, "ftpproxy_transfers_total"); n != 2 {
		t.Errorf("transfers counted %v times, want 2", n)
	}
}

func TestMetricsFTPS(t *testing.T) {
	checkFDs(t)
	pki := newTestPKI(t)
	file := randomBytes(t, 64<<10)
	m := &miniFTP{files: map[string][]byte{"f": file}}
	fs := newFakeServer(t, m.serve)
	e, reg := startMetricsProxy(t, fs.addr(), proxyOpts{config: pki.proxyTLS(proxy.ClientTLSAllow, proxy.DataReuseRequire)})
	conf := pki.clientConfig()

	c := dialLogin(t, e.addr)
	startTLS(t, c, conf)
	c.Cmd("USER anonymous", 331)
	c.Cmd("PASS guest", 230)
	c.Cmd("PBSZ 0", 200)
	c.Cmd("PROT P", 200)
	retrTLS(t, c, e, conf, "f", file)
	c.Cmd("QUIT", 221)
	waitSeries(t, reg, `ftpproxy_sessions_total{result="quit"}`, 1)
	wantSeries(t, reg, map[string]float64{
		`ftpproxy_tls_handshakes_total{result="ok",side="client"}`:              1,
		`ftpproxy_tls_handshakes_total{result="ok",side="client_data"}`:         1,
		`ftpproxy_tls_handshakes_total{result="failed",side="client_data"}`:     0,
		`ftpproxy_tls_data_resumed_total{side="client_data"}`:                   1,
		`ftpproxy_tls_handshakes_total{result="ok",side="upstream"}`:            0,
		`ftpproxy_transfers_total{direction="down",mode="passive",result="ok"}`: 1,
	})
}

// No series may carry a client address, a user name or a file name: the
// labels take values from small fixed sets, and the log has the rest.
func TestMetricsLabelsFixed(t *testing.T) {
	checkFDs(t)
	const user, file = "alice-the-user", "quarterly-report.pdf"
	data := randomBytes(t, 4<<10)
	m := &miniFTP{files: map[string][]byte{file: data}}
	fs := newFakeServer(t, m.serve)
	e, reg := startMetricsProxy(t, fs.addr(), proxyOpts{})
	before := len(series(t, reg))
	c := dialLogin(t, e.addr)
	c.Cmd("USER "+user, 331)
	c.Cmd("PASS secret", 230)
	retrPassive(t, c, checkPASVReply(t, e, c.Cmd("PASV", 227)), file, data)
	c.Cmd("QUIT", 221)
	waitSeries(t, reg, `ftpproxy_sessions_total{result="quit"}`, 1)

	// The values of result and reason differ by family; each is a word
	// from a fixed list (see the README).
	allowed := map[string][]string{
		"result":    nil,
		"reason":    nil,
		"direction": {"down", "up"},
		"mode":      {"passive", "active"},
		"side":      {"client", "upstream", "client_data", "upstream_data"},
		"path": {"kernel", "splice_tls", "splice_active", "splice_family", "splice_proxy_header",
			"splice_add_failed", "splice_not_redirected"},
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	word := regexp.MustCompile(`^[a-z][a-z_]*$`)
	forbidden := []string{"127.0.0.1", e.addr, fs.addr(), user, file, "secret"}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "ftpproxy_") {
			t.Errorf("family %s is outside the ftpproxy_ namespace", mf.GetName())
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				name, value := lp.GetName(), lp.GetValue()
				fixed, ok := allowed[name]
				if !ok {
					t.Errorf("%s has a label %q outside the fixed set", mf.GetName(), name)
				}
				if fixed != nil && !slices.Contains(fixed, value) {
					t.Errorf("%s{%s=%q}: value outside %q", mf.GetName(), name, value, fixed)
				}
				if !word.MatchString(value) {
					t.Errorf("%s{%s=%q}: not a word of a fixed list", mf.GetName(), name, value)
				}
				for _, f := range forbidden {
					if strings.Contains(value, f) {
						t.Errorf("%s{%s=%q} carries %q", mf.GetName(), name, value, f)
					}
				}
			}
		}
	}
	// Every series exists from the start: their number does not grow
	// with traffic.
	if after := len(series(t, reg)); after != before {
		t.Errorf("%d series before the session, %d after", before, after)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}
}

// The metrics go on a registry of their own, served by promhttp.
func ExampleNewMetrics() {
	reg := prometheus.NewRegistry()
	srv := proxy.New(proxy.Config{Upstream: "10.0.0.5:21", Metrics: proxy.NewMetrics(reg)})
	http.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	_ = srv // srv.Serve(ln)...
}
