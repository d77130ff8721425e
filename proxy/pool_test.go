package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

// Errors as a session reports them.
var (
	errRefused = &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	errTimeout = &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
	errGreet   = errors.New("proxy: the FTP server refused the session: 421 too many users")
	// errDialTimeout is what net.Dialer returns at its Timeout: a real one,
	// as it matches context.DeadlineExceeded.
	errDialTimeout = func() error {
		_, err := (&net.Dialer{Timeout: time.Nanosecond}).Dial("tcp", "127.0.0.1:1")
		return err
	}()
)

// poolStep is one step of a pool's life: a session's Candidates (want),
// a Report (addr, err), or time passing (wait).
type poolStep struct {
	want   []string // Candidates must return this
	addr   string   // Report(addr, err)
	err    error
	wait   time.Duration
	up     map[string]bool // then the Up of these servers must be this
	reason string          // what the step shows, for the failure message
}

func cands(addrs ...string) poolStep { return poolStep{want: addrs} }
func ok(addr string) poolStep        { return poolStep{addr: addr} }
func fail(addr string, err error) poolStep {
	return poolStep{addr: addr, err: err}
}
func wait(d time.Duration) poolStep { return poolStep{wait: d} }
func upIs(m map[string]bool) poolStep {
	return poolStep{up: m}
}

func TestUpstreamPoolPolicy(t *testing.T) {
	if !errors.Is(errDialTimeout, context.DeadlineExceeded) {
		t.Fatalf("a dial with a timeout of 1ns gave %v, not a timeout", errDialTimeout)
	}
	const a, b, c = "a:21", "b:21", "c:21"
	tests := []struct {
		name  string
		addrs []string
		opts  PoolOptions
		steps []poolStep
	}{
		{"round robin over the servers that are up", []string{a, b, c}, PoolOptions{}, []poolStep{
			cands(a, b, c), cands(b, c, a), cands(c, a, b), cands(a, b, c),
		}},
		{"one failure is not enough", []string{a, b}, PoolOptions{}, []poolStep{
			fail(a, errTimeout), upIs(map[string]bool{a: true}), cands(a, b), cands(b, a),
		}},
		{"a success in between resets the count", []string{a, b}, PoolOptions{}, []poolStep{
			fail(a, errTimeout), ok(a), fail(a, errGreet), upIs(map[string]bool{a: true}),
		}},
		{"two failures in a row mark it down", []string{a, b, c}, PoolOptions{}, []poolStep{
			fail(b, errTimeout), fail(b, errGreet), upIs(map[string]bool{a: true, b: false, c: true}),
			cands(a, c), cands(c, a), cands(a, c),
		}},
		{"a refusal marks it down at once", []string{a, b}, PoolOptions{}, []poolStep{
			fail(a, errRefused), upIs(map[string]bool{a: false}), cands(b), cands(b),
		}},
		{"Failures is a knob", []string{a, b}, PoolOptions{Failures: 3}, []poolStep{
			fail(a, errTimeout), fail(a, errTimeout), upIs(map[string]bool{a: true}),
			fail(a, errTimeout), upIs(map[string]bool{a: false}),
		}},
		{"back after the wait: probed first, by one session", []string{a, b, c}, PoolOptions{}, []poolStep{
			fail(a, errRefused), wait(9 * time.Second), cands(b, c),
			wait(time.Second), cands(a, c, b), cands(b, c), // the second session does not probe too
			ok(a), upIs(map[string]bool{a: true}), cands(a, b, c),
		}},
		{"a failed probe doubles the wait", []string{a, b}, PoolOptions{}, []poolStep{
			fail(a, errRefused), wait(10 * time.Second), cands(a, b), fail(a, errRefused),
			wait(19 * time.Second), cands(b), wait(time.Second), cands(a, b), fail(a, errTimeout),
			wait(39 * time.Second), cands(b), wait(time.Second), cands(a, b),
		}},
		{"the wait stops doubling at MaxBackoff", []string{a, b}, PoolOptions{Backoff: time.Second, MaxBackoff: 3 * time.Second}, []poolStep{
			fail(a, errRefused),
			wait(time.Second), cands(a, b), fail(a, errRefused), // 2s
			wait(2 * time.Second), cands(a, b), fail(a, errRefused), // 3s, not 4s
			wait(3 * time.Second), cands(a, b), fail(a, errRefused),
			wait(3 * time.Second), cands(a, b), ok(a), cands(a, b), cands(b, a),
		}},
		{"a probe that never reports is handed out again after ProbeTimeout", []string{a, b}, PoolOptions{ProbeTimeout: 5 * time.Second}, []poolStep{
			fail(a, errRefused), wait(10 * time.Second), cands(a, b), cands(b),
			wait(5 * time.Second), cands(a, b),
		}},
		{"a probe cut short by its session is handed out again at once", []string{a, b}, PoolOptions{}, []poolStep{
			fail(a, errRefused), wait(10 * time.Second), cands(a, b), fail(a, context.Canceled), cands(a, b),
			upIs(map[string]bool{a: false}),
		}},
		{"a dial timeout is a failure, though it is also a context deadline", []string{a, b}, PoolOptions{}, []poolStep{
			fail(a, errDialTimeout), fail(a, errDialTimeout), upIs(map[string]bool{a: false}),
		}},
		{"a try cut short by its session is not a failure", []string{a, b}, PoolOptions{}, []poolStep{
			fail(a, errTimeout), fail(a, context.Canceled), fail(a, fmt.Errorf("greeting: %w", context.Canceled)),
			upIs(map[string]bool{a: true}), fail(a, errTimeout), upIs(map[string]bool{a: false}),
		}},
		{"all down: all of them, the soonest due first", []string{a, b, c}, PoolOptions{}, []poolStep{
			fail(b, errRefused), wait(3 * time.Second), fail(c, errRefused), wait(3 * time.Second), fail(a, errRefused),
			cands(b, c, a), cands(b, c, a),
			// A last-resort success brings the server back.
			ok(c), upIs(map[string]bool{c: true}), cands(c),
		}},
		{"a last-resort failure does not extend the wait", []string{a}, PoolOptions{}, []poolStep{
			fail(a, errRefused), wait(5 * time.Second), cands(a), fail(a, errRefused),
			wait(5 * time.Second), cands(a), ok(a), upIs(map[string]bool{a: true}),
		}},
		{"a server the pool does not hold is ignored", []string{a}, PoolOptions{}, []poolStep{
			fail("old:21", errRefused), cands(a),
		}},
		{"a duplicate address counts once", []string{a, a, b}, PoolOptions{}, []poolStep{
			cands(a, b), cands(b, a),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{t: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)}
			tt.opts.Now = clock.now
			p := NewUpstreamPool(tt.addrs, tt.opts)
			for i, st := range tt.steps {
				switch {
				case st.wait > 0:
					clock.advance(st.wait)
				case st.want != nil:
					if got := p.Candidates(); !slices.Equal(got, st.want) {
						t.Fatalf("step %d: Candidates() = %v, want %v", i, got, st.want)
					}
				case st.up != nil:
					for _, s := range p.Servers() {
						if want, ok := st.up[s.Addr]; ok && s.Up != want {
							t.Fatalf("step %d: %s up = %v, want %v (%+v)", i, s.Addr, s.Up, want, s)
						}
					}
				default:
					p.Report(st.addr, st.err)
				}
			}
		})
	}
}

func TestUpstreamPoolStatusAndLog(t *testing.T) {
	clock := &fakeClock{t: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)}
	var logs bytes.Buffer
	p := NewUpstreamPool([]string{"a:21", "b:21"}, PoolOptions{Now: clock.now, Logger: zerolog.New(&logs)})
	p.Report("a:21", nil)
	p.Report("a:21", nil)
	p.Report("b:21", errRefused)
	down := clock.t
	clock.advance(10 * time.Second)
	got := p.Servers()
	want := []PoolServerStatus{
		{Addr: "a:21", Up: true, Sessions: 2},
		{Addr: "b:21", Failures: 1, DownSince: down, RetryAt: down.Add(10 * time.Second),
			LastError: errRefused.Error(), ConnectFailures: 1},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Servers() =\n %+v\nwant\n %+v", got, want)
	}
	p.Candidates()
	p.Report("b:21", nil)
	if s := p.Servers()[1]; !s.Up || s.Failures != 0 || s.LastError != "" || !s.RetryAt.IsZero() || s.Sessions != 1 {
		t.Errorf("after a successful probe: %+v", s)
	}
	for _, w := range []string{
		`"level":"warn","error":"dial tcp: connect: connection refused","server":"b:21","failures":1,"retry_in":10000,"message":"upstream marked down"`,
		`"level":"info","server":"b:21","down_for":10000,"message":"upstream marked up"`,
	} {
		if !strings.Contains(logs.String(), w) {
			t.Errorf("log has no %s:\n%s", w, logs.String())
		}
	}
}

// Many sessions at once: the race detector checks the locking, and every
// session gets every server that is up.
func TestUpstreamPoolConcurrent(t *testing.T) {
	addrs := []string{"a:21", "b:21", "c:21", "d:21"}
	p := NewUpstreamPool(addrs)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			for j := range 500 {
				c := p.Candidates()
				if len(c) == 0 {
					t.Error("no candidates")
					return
				}
				var err error
				if (i+j)%7 == 0 {
					err = errTimeout
				}
				p.Report(c[0], err)
				p.Servers()
			}
		})
	}
	wg.Wait()
	var total uint64
	for _, s := range p.Servers() {
		total += s.Sessions + s.ConnectFailures
	}
	if total != 16*500 {
		t.Errorf("tries counted: %d, want %d", total, 16*500)
	}
}

// The pool's series: up, sessions and connect failures per server, for the
// pool of a Server that accepts; promlint finds nothing to say.
func TestUpstreamPoolMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg)
	pool := NewUpstreamPool([]string{"127.0.0.1:2101", "127.0.0.1:2102"})
	srv := New(Config{Pool: pool, Metrics: m})
	pool.Report("127.0.0.1:2101", nil)
	pool.Report("127.0.0.1:2102", errRefused)
	want := `
# HELP ftpproxy_upstream_server_connect_failures_total Tries of a server of the upstream pool that failed: refused, timed out, or greeted with anything but 2xx.
# TYPE ftpproxy_upstream_server_connect_failures_total counter
ftpproxy_upstream_server_connect_failures_total{server="127.0.0.1:2101"} 0
ftpproxy_upstream_server_connect_failures_total{server="127.0.0.1:2102"} 1
# HELP ftpproxy_upstream_server_sessions_total Tries of a server of the upstream pool that connected and were greeted with 2xx.
# TYPE ftpproxy_upstream_server_sessions_total counter
ftpproxy_upstream_server_sessions_total{server="127.0.0.1:2101"} 1
ftpproxy_upstream_server_sessions_total{server="127.0.0.1:2102"} 0
# HELP ftpproxy_upstream_up Whether a server of the upstream pool takes new sessions (1), or is left out after failed tries (0); absent without a pool.
# TYPE ftpproxy_upstream_up gauge
ftpproxy_upstream_up{server="127.0.0.1:2101"} 1
ftpproxy_upstream_up{server="127.0.0.1:2102"} 0
`
	names := []string{"ftpproxy_upstream_up", "ftpproxy_upstream_server_sessions_total", "ftpproxy_upstream_server_connect_failures_total"}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	if problems, err := testutil.GatherAndLint(reg, names...); err != nil || len(problems) > 0 {
		t.Errorf("promlint: %v %v", problems, err)
	}
	// A Server that no longer accepts (a service removed by a reload)
	// has handed its pool on: its series go.
	srv.Close()
	if n, err := testutil.GatherAndCount(reg, names...); err != nil || n != 0 {
		t.Errorf("series after Close: %d, %v", n, err)
	}
}

// A reload that edits the list keeps what the pool knows of the servers
// still listed: a server that is down stays down, with its wait.
func TestUpstreamPoolSetServers(t *testing.T) {
	clock := &fakeClock{t: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)}
	p := NewUpstreamPool([]string{"a:21", "b:21", "c:21"}, PoolOptions{Now: clock.now})
	p.Report("a:21", nil)
	p.Report("b:21", errRefused)
	down := clock.t
	p.SetServers([]string{"d:21", "b:21", "a:21", "d:21"})
	if got, want := p.Addrs(), []string{"d:21", "b:21", "a:21"}; !slices.Equal(got, want) {
		t.Fatalf("Addrs() = %v, want %v", got, want)
	}
	got := p.Servers()
	want := []PoolServerStatus{
		{Addr: "d:21", Up: true},
		{Addr: "b:21", Failures: 1, DownSince: down, RetryAt: down.Add(10 * time.Second),
			LastError: errRefused.Error(), ConnectFailures: 1},
		{Addr: "a:21", Up: true, Sessions: 1},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Servers() =\n %+v\nwant\n %+v", got, want)
	}
	// b is still left out until its wait is over; c is forgotten, and a
	// session that started before the edit and reports it changes nothing.
	p.Report("c:21", errRefused)
	for range 3 {
		if c := p.Candidates(); slices.Contains(c, "b:21") || slices.Contains(c, "c:21") {
			t.Fatalf("Candidates() = %v: b is down and c is gone", c)
		}
	}
	clock.advance(10 * time.Second)
	if c := p.Candidates(); len(c) == 0 || c[0] != "b:21" {
		t.Fatalf("Candidates() = %v after b's wait: b is probed first", c)
	}
}
