//go:build interop

package faults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

// Ports of the services cases: one proxy process with three services (in
// front of vsftpd, of proftpd, and of a pool of two more vsftpd), its
// health address, and the pool's servers.
const (
	svcVsListen   = proxyIP + ":2161"
	svcProListen  = proxyIP + ":2162"
	svcPoolListen = proxyIP + ":2163"
	svcHealth     = proxyIP + ":2164"
	svcVsPassive  = "25640-25659"
	svcProPassive = "25660-25679"
	svcPoolPasv   = "25680-25699"
	poolPortA     = 2175
	poolPortB     = 2176
)

// The pool's servers offer passive ports of their own.
var poolServerPasv = map[int][2]int{poolPortA: {25700, 25749}, poolPortB: {25750, 25799}}

// TestServices runs the services cases on their own:
// run.sh -test.run '^TestServices$'.
func TestServices(t *testing.T) {
	e := newEnv(t, "ftpproxy-services-", false, true)
	e.services()
	e.report()
}

// servicesRun is the state of the services cases.
type servicesRun struct {
	e       *env
	px      *proxyProc
	pool    [2]*peers.Server // A, B
	who     [2]peers.File    // who.bin: different on A and on B
	poolBig peers.File       // 16 MiB on both
}

// startPoolServer starts the pool server i (0: A, 1: B) and stocks it.
func (r *servicesRun) startPoolServer(ctx context.Context, i int) error {
	port := []int{poolPortA, poolPortB}[i]
	pasv := poolServerPasv[port]
	srv, err := peers.StartServer(ctx, peers.Vsftpd, *flagPeers, r.e.work, serverIP, port, peers.PassivePorts(pasv[0], pasv[1]))
	if err != nil {
		return err
	}
	r.pool[i] = srv
	for _, f := range []peers.File{r.e.one, r.who[i], r.poolBig} {
		if err := stockFile(srv, f); err != nil {
			return err
		}
	}
	return nil
}

// config is the proxy's file: three services, and the process's own
// settings at the top level.
func (r *servicesRun) config() string {
	return fmt.Sprintf(`# ftpproxy of the services cases (interop/faults)
log-format: json
log-level: debug
dial-timeout: 5s
data-accept-timeout: 10s
services:
  vs:
    listen: %q
    upstream: %q
    passive-ports: %s
  pro:
    listen: %q
    upstream: %q
    passive-ports: %s
  pool:
    listen: %q
    upstream: [%q, %q]
    passive-ports: %s
`, svcVsListen, r.e.vs.Addr(), svcVsPassive, svcProListen, r.e.pro.Addr(), svcProPassive,
		svcPoolListen, r.pool[0].Addr(), r.pool[1].Addr(), svcPoolPasv)
}

// services runs the two services cases against one proxy process.
func (e *env) services() {
	const (
		twoName  = "services/two-services/vsftpd+proftpd"
		poolName = "services/pool-server-killed/vsftpd+vsftpd"
	)
	if e.filter != nil && !e.filter.MatchString(twoName) && !e.filter.MatchString(poolName) {
		return
	}
	ctx := context.Background()
	r := &servicesRun{e: e}
	err := func() error {
		dir := filepath.Join(e.work, "services")
		for i, name := range []string{"who-a", "who-b"} {
			if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
				return err
			}
			f, err := peers.WriteRandom(filepath.Join(dir, name, "who.bin"), 4096, uint64(200+i))
			if err != nil {
				return err
			}
			r.who[i] = f
		}
		var err error
		if r.poolBig, err = peers.WriteRandom(filepath.Join(dir, "pool.bin"), 16<<20, 210); err != nil {
			return err
		}
		for i := range r.pool {
			if err := r.startPoolServer(ctx, i); err != nil {
				return err
			}
		}
		cfgPath := filepath.Join(e.work, "ftpproxy-services.yaml")
		if err := os.WriteFile(cfgPath, []byte(r.config()), 0o644); err != nil {
			return err
		}
		r.px, err = startConfigProxy(ctx, "services", e.work, cfgPath, svcVsListen, svcHealth)
		return err
	}()
	defer func() {
		for _, s := range r.pool {
			if s != nil {
				s.Stop()
			}
		}
	}()
	if err != nil {
		e.setupFailed("services", err)
		return
	}
	defer r.px.kill()
	o := caseOpts{px: r.px, srv: func() *peers.Server { return e.vs }}
	e.runCase(twoName, o, r.twoServices)
	o.limit = 120 * time.Second
	e.runCase(poolName, o, r.poolKilled)
}

// twoServices: byte-exact transfers both ways through each service, in
// each data mode, each reaching its own server; the log and /metrics
// count them per service.
func (r *servicesRun) twoServices(ctx context.Context, note func(string, ...any)) error {
	e := r.e
	before, err := r.px.metrics()
	if err != nil {
		return err
	}
	for _, c := range []struct {
		svc, listen, greeting string
		srv                   *peers.Server
		modes                 []string
	}{
		{"vs", svcVsListen, "vsFTPd", e.vs, []string{"pasv", "port"}},
		{"pro", svcProListen, "ProFTPD", e.pro, []string{"epsv", "eprt"}},
	} {
		f, g, err := dialFTP(c.listen, clientIP, 15*time.Second)
		if err != nil {
			return fmt.Errorf("service %s: %w", c.svc, err)
		}
		if !strings.Contains(g.text, c.greeting) {
			f.close()
			return fmt.Errorf("service %s greets with %q, want %s's", c.svc, g.text, c.greeting)
		}
		note("service %s: %s", c.svc, g)
		if err := f.login(peers.User, peers.Password); err != nil {
			f.close()
			return fmt.Errorf("service %s: %w", c.svc, err)
		}
		for _, mode := range c.modes {
			x := f.retr(e.one.Name, xferOpts{mode: mode})
			if v := judgeRetr(x, e.one); record(note, x, v) != nil || v != vOK {
				f.close()
				return fmt.Errorf("service %s: %s", c.svc, x)
			}
			name := e.uploadName("svc-" + c.svc)
			x = f.stor(name, e.one.Path, xferOpts{mode: mode})
			if v := judgeStor(x, c.srv.Path(name), e.one); record(note, x, v) != nil || v != vOK {
				f.close()
				return fmt.Errorf("service %s: %s -> %s (server copy %d bytes)", c.svc, x, v, fileSize(c.srv.Path(name)))
			}
		}
		f.quit()
	}

	// Each service's transfers are in its own series and log lines.
	after, err := waitMetric(r.px, `ftpproxy_transfer_bytes_total{direction="up",service="pro"}`, before, 2<<20)
	if err != nil {
		return err
	}
	var errs []error
	for _, svc := range []string{"vs", "pro"} {
		for _, dir := range []string{"down", "up"} {
			k := fmt.Sprintf(`ftpproxy_transfer_bytes_total{direction=%q,service=%q}`, dir, svc)
			d := after[k] - before[k]
			note("/metrics: %s grew by %.0f", k, d)
			if d != 2<<20 {
				errs = append(errs, fmt.Errorf("/metrics: %s grew by %.0f, want %d", k, d, 2<<20))
			}
		}
	}
	n, err := r.transfers(map[string]bool{"vs": true, "pro": true}, e.one.Size)
	if err != nil {
		return err
	}
	note("log: transfer lines of %d bytes: %v", e.one.Size, n)
	if n["vs"] < 4 || n["pro"] < 4 {
		errs = append(errs, fmt.Errorf("log: transfer lines of %d bytes per service %v, want 4 each", e.one.Size, n))
	}
	body, err := r.px.healthBody()
	if err != nil {
		return err
	}
	for _, want := range []string{"\nservice vs: ok, ", "\nservice pro: ok, ", "\nservice pool: ok, "} {
		if !strings.Contains(body, want) {
			errs = append(errs, fmt.Errorf("health has no %q: %q", want, body))
		}
	}
	return errors.Join(errs...)
}

// poolKilled: sessions through the pool spread over A and B; A is
// killed in the middle of a download through it; every session after that
// goes to B, byte-exact, and the health endpoint and /metrics say A is
// down. A started again is taken back once its wait is over.
func (r *servicesRun) poolKilled(ctx context.Context, note func(string, ...any)) error {
	e := r.e
	a, b := r.pool[0].Addr(), r.pool[1].Addr()
	before, err := r.px.metrics()
	if err != nil {
		return err
	}
	// session runs one session through the pool: which server (by its
	// who.bin), then 1 MiB byte-exact.
	session := func(f *ftpClient) (int, error) {
		x := f.retr("who.bin", xferOpts{mode: "epsv"})
		which := -1
		for i, w := range r.who {
			if x.code/100 == 2 && x.sum == w.Sum && x.n == w.Size {
				which = i
			}
		}
		if which < 0 {
			return -1, fmt.Errorf("who.bin: %s, from neither server", x)
		}
		x = f.retr(e.one.Name, xferOpts{mode: "pasv"})
		if v := judgeRetr(x, e.one); v != vOK {
			return which, fmt.Errorf("%s -> %s", x, v)
		}
		return which, nil
	}
	sessions := func(n int) ([2]int, error) {
		var got [2]int
		for i := range n {
			f, err := loggedInAt(svcPoolListen, clientIP)
			if err != nil {
				return got, fmt.Errorf("session %d: %w", i, err)
			}
			which, err := session(f)
			f.quit()
			if err != nil {
				return got, fmt.Errorf("session %d: %w", i, err)
			}
			got[which]++
		}
		return got, nil
	}

	spread, err := sessions(6)
	if err != nil {
		return err
	}
	note("before the kill: %d sessions on A (%s), %d on B (%s)", spread[0], a, spread[1], b)
	if spread[0] != 3 || spread[1] != 3 {
		return fmt.Errorf("6 sessions spread %v over A and B, want 3 and 3", spread)
	}

	// A download through A; A is killed once 4 MiB have arrived.
	var onA *ftpClient
	for i := 0; onA == nil && i < 4; i++ {
		f, err := loggedInAt(svcPoolListen, clientIP)
		if err != nil {
			return err
		}
		if x := f.retr("who.bin", xferOpts{mode: "epsv"}); x.sum == r.who[0].Sum {
			onA = f
		} else {
			f.quit()
		}
	}
	if onA == nil {
		return fmt.Errorf("no session reached A in 4 tries")
	}
	x := onA.retr(r.poolBig.Name, xferOpts{mode: "epsv", rate: 16 << 20, hookAt: 4 << 20, hook: func() { killServer(r.pool[0]) }})
	onA.close()
	v := judgeRetr(x, r.poolBig)
	if err := record(note, x, v); err != nil {
		return err
	}
	if v != vFailed {
		return fmt.Errorf("the download through the killed server: %s -> %s, want a clear failure", x, v)
	}
	r.pool[0].Stop()
	killedAt := time.Now()

	spread, err = sessions(6)
	if err != nil {
		return fmt.Errorf("after the kill: %w", err)
	}
	note("after the kill: %d sessions on A, %d on B", spread[0], spread[1])
	if spread[1] != 6 {
		return fmt.Errorf("after the kill, 6 sessions spread %v, want all on B", spread)
	}
	var errs []error
	body, err := r.px.healthBody()
	if err != nil {
		return err
	}
	note("health: %s", strings.ReplaceAll(strings.TrimSpace(body), "\n", " | "))
	for _, re := range []string{
		`(?m)^service pool upstream ` + regexp.QuoteMeta(a) + `: down for \d+s, retry in \d+s, \d+ failures in a row, \d+ sessions, [1-9]\d* connect failures: .*connection refused$`,
		`(?m)^service pool upstream ` + regexp.QuoteMeta(b) + `: up, \d+ sessions, 0 connect failures$`,
	} {
		if !regexp.MustCompile(re).MatchString(body) {
			errs = append(errs, fmt.Errorf("health does not match %s: %q", re, body))
		}
	}
	m, err := r.px.metrics()
	if err != nil {
		return err
	}
	upA := fmt.Sprintf(`ftpproxy_upstream_up{server=%q,service="pool"}`, a)
	upB := fmt.Sprintf(`ftpproxy_upstream_up{server=%q,service="pool"}`, b)
	failA := fmt.Sprintf(`ftpproxy_upstream_server_connect_failures_total{server=%q,service="pool"}`, a)
	sessB := fmt.Sprintf(`ftpproxy_upstream_server_sessions_total{server=%q,service="pool"}`, b)
	down := `ftpproxy_transfer_bytes_total{direction="down",service="pool"}`
	note("/metrics: %s %v, %s %v, %s %v, %s grew by %v, %s grew by %.0f", upA, m[upA], upB, m[upB], failA, m[failA],
		sessB, m[sessB]-before[sessB], down, m[down]-before[down])
	switch {
	case m[upA] != 0 || m[upB] != 1:
		errs = append(errs, fmt.Errorf("/metrics: %s = %v, %s = %v; want 0 and 1", upA, m[upA], upB, m[upB]))
	case m[failA] < 1:
		errs = append(errs, fmt.Errorf("/metrics: %s = %v, want 1 or more", failA, m[failA]))
	case m[sessB]-before[sessB] < 9:
		errs = append(errs, fmt.Errorf("/metrics: %s grew by %v, want 9 or more", sessB, m[sessB]-before[sessB]))
	}
	// The data went through the proxy: 12 MiB of the sessions, the
	// who.bin files, and the part of the download before the kill.
	if got, want := m[down]-before[down], float64(12*e.one.Size+4<<20); got < want {
		errs = append(errs, fmt.Errorf("/metrics: %s grew by %.0f, want %.0f or more", down, got, want))
	}
	n, err := r.transfers(map[string]bool{"pool": true}, e.one.Size)
	if err != nil {
		return err
	}
	if n["pool"] < 12 {
		errs = append(errs, fmt.Errorf("log: %d transfer lines of %d bytes for service pool, want 12 or more", n["pool"], e.one.Size))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}

	// A comes back: after its wait (10s from the refusal) the next
	// session tries it first and it is up again.
	if err := r.startPoolServer(ctx, 0); err != nil {
		return fmt.Errorf("restarting A: %w", err)
	}
	deadline := killedAt.Add(25 * time.Second)
	for {
		f, err := loggedInAt(svcPoolListen, clientIP)
		if err != nil {
			return fmt.Errorf("while A comes back: %w", err)
		}
		which, err := session(f)
		f.quit()
		if err != nil {
			return fmt.Errorf("while A comes back: %w", err)
		}
		if which == 0 {
			note("A taken back %.1fs after the kill", time.Since(killedAt).Seconds())
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("A not taken back within 25s of the kill")
		}
		time.Sleep(500 * time.Millisecond)
	}
	body, err = r.px.healthBody()
	if err != nil {
		return err
	}
	if want := "\nservice pool upstream " + a + ": up, "; !strings.Contains(body, want) {
		return fmt.Errorf("health after A came back has no %q: %q", want, body)
	}
	return nil
}

// transfers counts the proxy's "transfer" log lines of size bytes down, by
// service, for the services in svcs.
func (r *servicesRun) transfers(svcs map[string]bool, size int64) (map[string]int, error) {
	lines, err := readLog(r.px.logPath)
	if err != nil {
		return nil, err
	}
	n := map[string]int{}
	for _, l := range lines {
		down, _ := l["down"].(float64)
		up, _ := l["up"].(float64)
		if svc := l.str("service"); svcs[svc] && l.str("message") == "transfer" && (int64(down) == size || int64(up) == size) {
			n[svc]++
		}
	}
	return n, nil
}

// healthBody fetches the whole health answer.
func (p *proxyProc) healthBody() (string, error) {
	resp, err := healthClient.Get("http://" + p.health + "/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// seriesLine is one sample of the Prometheus text format.
var seriesLine = regexp.MustCompile(`(?m)^(ftpproxy_[a-z_]+(?:\{[^}]*\})?) (\S+)$`)

// metrics fetches /metrics and returns every ftpproxy_ series by its name
// and labels as the text format writes them.
func (p *proxyProc) metrics() (map[string]float64, error) {
	resp, err := healthClient.Get("http://" + p.health + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, m := range seriesLine.FindAllStringSubmatch(string(b), -1) {
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics: %q", m[0])
		}
		out[m[1]] = v
	}
	return out, nil
}

// waitMetric polls /metrics until key has grown by at least by over
// before (the proxy counts a transfer as it ends, after the client has its
// reply), and returns that scrape.
func waitMetric(p *proxyProc, key string, before map[string]float64, by float64) (map[string]float64, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, err := p.metrics()
		if err == nil && m[key]-before[key] >= by {
			return m, nil
		}
		if time.Now().After(deadline) {
			return m, fmt.Errorf("/metrics: %s grew by %v within 5s, want %v (%v)", key, m[key]-before[key], by, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// loggedInAt opens a logged-in session through the proxy's listen address.
func loggedInAt(listen, src string) (*ftpClient, error) {
	f, _, err := dialFTP(listen, src, 20*time.Second)
	if err != nil {
		return nil, err
	}
	if err := f.login(peers.User, peers.Password); err != nil {
		f.close()
		return nil, err
	}
	return f, nil
}
