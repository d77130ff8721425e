package probe

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// secret is the password every probe in these tests logs in with; it must
// not appear in any output.
const secret = "s3cret-Pa55word"

// Step timeouts: quick is for cases where the probe must wait for
// something that never comes; every other step on loopback takes
// milliseconds, and gets generous room under the race detector.
const (
	quick   = 750 * time.Millisecond
	roomy   = 5 * time.Second
	bounded = 20 * time.Second
)

// closedPort returns a loopback port nobody listens on now.
func closedPort(t *testing.T) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := addrPortOf(ln.Addr()).Port()
	ln.Close()
	return port
}

// want is the expected result of one check: its status and words its
// finding and fix must hold.
type want struct {
	st    Status
	words []string
}

func TestRun(t *testing.T) {
	tlsCfg, pool := testCert(t, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	oldCfg, oldPool := testCert(t, time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))

	allOK := map[string]want{
		CheckTCP: {OK, nil}, CheckGreeting: {OK, []string{"220 fake FTP ready"}}, CheckFEAT: {OK, []string{"EPSV"}},
		CheckTLS: {OK, []string{"not offered"}}, CheckLogin: {OK, []string{"logged in as anonymous"}},
		CheckPASV: {OK, []string{"control address"}}, CheckEPSV: {OK, nil},
		CheckLIST: {OK, []string{"LIST over PASV", "226"}}, CheckActive: {OK, []string{"PORT", "connected"}},
	}
	with := func(over map[string]want, drop ...string) map[string]want {
		m := map[string]want{}
		for k, v := range allOK {
			if !slices.Contains(drop, k) {
				m[k] = v
			}
		}
		for k, v := range over {
			m[k] = v
		}
		return m
	}
	greetingOnly := func(g want) map[string]want {
		return map[string]want{CheckTCP: {OK, nil}, CheckGreeting: g}
	}

	tests := []struct {
		name string
		opts fakeOpts
		cfg  func(t *testing.T, f *fakeFTP, c *Config)
		want map[string]want
		exit int
	}{
		{name: "a working server", want: allOK, exit: 0},
		{
			name: "a host name with an A record and no AAAA",
			cfg: func(t *testing.T, f *fakeFTP, c *Config) {
				c.Host = "ftp.test"
				c.Resolver = testResolver{"ftp.test": {netip.MustParseAddr("127.0.0.1")}}
			},
			want: with(map[string]want{
				CheckDNS4: {OK, []string{"ftp.test has A 127.0.0.1"}},
				CheckDNS6: {OK, []string{"no AAAA record", "IPv4"}},
			}),
		},
		{
			name: "a resolver that gives IPv4 addresses IPv6-mapped",
			cfg: func(t *testing.T, f *fakeFTP, c *Config) {
				c.Host = "ftp.test"
				c.Resolver = mappedResolver{"ftp.test": {netip.MustParseAddr("127.0.0.1")}}
			},
			want: with(map[string]want{
				CheckDNS4: {OK, []string{"ftp.test has A 127.0.0.1"}},
				CheckDNS6: {OK, []string{"no AAAA record", "IPv4"}},
				CheckTCP:  {OK, []string{"ftp.test (127.0.0.1) port"}},
			}),
		},
		{
			name: "a name that does not resolve",
			cfg: func(t *testing.T, f *fakeFTP, c *Config) {
				c.Host = "nowhere.test"
				c.Resolver = testResolver{}
			},
			want: map[string]want{CheckDNS4: {Fail, []string{"no A record"}}, CheckDNS6: {Fail, []string{"no AAAA record"}}},
			exit: 2,
		},
		{
			name: "port refused, alternates for reference",
			cfg: func(t *testing.T, f *fakeFTP, c *Config) {
				c.Port = closedPort(t)
				c.Ports = []uint16{f.addr.Port()}
			},
			want: map[string]want{
				CheckTCP: {Fail, []string{"refused", "nothing listens", "is open on 127.0.0.1"}},
			},
			exit: 2,
		},
		{
			name: "port filtered, an alternate open",
			cfg: func(t *testing.T, f *fakeFTP, c *Config) {
				blocked := closedPort(t)
				other := closedPort(t)
				c.Port = blocked
				c.Ports = []uint16{21, f.addr.Port(), other, blocked}
				c.Dial = testNet{drop: func(ap netip.AddrPort) bool { return ap.Port() == blocked || ap.Port() == 21 }}.Dial
			},
			want: map[string]want{
				CheckTCP: {Fail, []string{"timed out", "filtered", "firewall or your ISP", "only port", "ftpproxy", "--through", "is open on 127.0.0.1"}},
			},
			exit: 2,
		},
		{
			name: "port filtered, two alternates open, two refused",
			cfg: func(t *testing.T, f *fakeFTP, c *Config) {
				blocked := closedPort(t)
				f2 := startFake(t, fakeOpts{})
				c.Port = blocked
				c.Ports = []uint16{f.addr.Port(), f2.addr.Port(), closedPort(t), closedPort(t)}
				c.Dial = testNet{drop: func(ap netip.AddrPort) bool { return ap.Port() == blocked }}.Dial
			},
			want: map[string]want{
				CheckTCP: {Fail, []string{"(ports ", " answered, so the host is reachable", "; ports ", " are open on 127.0.0.1"}},
			},
			exit: 2,
		},
		{
			name: "host unreachable",
			cfg: func(t *testing.T, f *fakeFTP, c *Config) {
				c.Dial = testNet{unreach: func(netip.AddrPort) bool { return true }}.Dial
			},
			want: map[string]want{CheckTCP: {Fail, []string{"unreachable", "no route to host"}}},
			exit: 2,
		},
		{
			name: "a 421 greeting",
			opts: fakeOpts{greeting421: true},
			want: greetingOnly(want{Fail, []string{"refuses the session", "421 Too many connections", "connection limit"}}),
			exit: 2,
		},
		{
			name: "120 before 220",
			opts: fakeOpts{busy: true},
			want: with(map[string]want{CheckGreeting: {OK, []string{"120 (busy)", "220 fake FTP ready"}}}),
		},
		{
			name: "an SSH server",
			opts: fakeOpts{banner: "SSH-2.0-OpenSSH_9.6p1 Debian-3\r\n"},
			want: greetingOnly(want{Fail, []string{"an SSH server answers", "SSH-2.0-OpenSSH", "SFTP"}}),
			exit: 2,
		},
		{
			name: "a mail server",
			opts: fakeOpts{banner: "220 mail.example.com ESMTP Postfix\r\n"},
			want: greetingOnly(want{Fail, []string{"a mail server answers", "ESMTP Postfix", "SMTP, not FTP"}}),
			exit: 2,
		},
		{
			name: "closed without a greeting",
			opts: fakeOpts{hangUp: true},
			want: greetingOnly(want{Fail, []string{"closed the connection without a greeting", "tcp_wrappers"}}),
			exit: 2,
		},
		{
			name: "a silent port",
			opts: fakeOpts{silent: true},
			cfg:  func(t *testing.T, f *fakeFTP, c *Config) { c.Timeout = quick },
			want: greetingOnly(want{Fail, []string{"no greeting within", "no TLS handshake either", "implicit-FTPS port (usually 990)"}}),
			exit: 2,
		},
		{
			name: "an implicit-FTPS port",
			opts: fakeOpts{implicitTLS: tlsCfg},
			cfg:  func(t *testing.T, f *fakeFTP, c *Config) { c.Timeout = quick },
			want: greetingOnly(want{Fail, []string{"answers a TLS handshake", "CN=ftp.test", "implicit-FTPS port", "ftps://"}}),
			exit: 2,
		},
		{
			name: "AUTH TLS with a certificate from an unknown CA",
			opts: fakeOpts{authTLS: tlsCfg},
			want: with(map[string]want{CheckTLS: {Warn, []string{"AUTH TLS works", "CN=ftp.test", "self-signed", "does not verify against the system roots", "--ca FILE"}}}),
			exit: 1,
		},
		{
			name: "AUTH TLS with the CA given",
			opts: fakeOpts{authTLS: tlsCfg},
			cfg:  func(t *testing.T, f *fakeFTP, c *Config) { c.RootCAs, c.RootCAsName = pool, "ca.pem" },
			want: with(map[string]want{CheckTLS: {OK, []string{"AUTH TLS works", "TLS 1.3", "127.0.0.1", "verifies against ca.pem"}}}),
		},
		{
			name: "AUTH TLS with an expired certificate",
			opts: fakeOpts{authTLS: oldCfg},
			cfg:  func(t *testing.T, f *fakeFTP, c *Config) { c.RootCAs = oldPool },
			want: with(map[string]want{CheckTLS: {Fail, []string{"expired on"}}}),
			exit: 2,
		},
		{
			name: "no FTPS with a real password",
			cfg:  func(t *testing.T, f *fakeFTP, c *Config) { c.User = "alice" },
			want: with(map[string]want{
				CheckTLS:   {Warn, []string{"not offered", "in clear", "ssl_enable"}},
				CheckLogin: {OK, []string{"logged in as alice"}},
			}),
			exit: 1,
		},
		{
			name: "login refused",
			opts: fakeOpts{loginRefused: true},
			want: map[string]want{
				CheckTCP: {OK, nil}, CheckGreeting: {OK, nil}, CheckFEAT: {OK, nil}, CheckTLS: {OK, nil},
				CheckLogin: {Fail, []string{"refused", "530 Login incorrect", "****", "does not allow anonymous"}},
			},
			exit: 2,
		},
		{
			name: "PASV names a private address that does not answer",
			opts: fakeOpts{pasvIP: "10.0.0.5"},
			want: with(map[string]want{
				CheckPASV: {Warn, []string{"10.0.0.5", "(private)", "timed out", "behind NAT", "pasv_address=127.0.0.1", "MasqueradeAddress 127.0.0.1", "pure-ftpd -P 127.0.0.1"}},
				CheckLIST: {OK, []string{"LIST over PASV to the control address", "226"}},
			}),
			exit: 1,
		},
		{
			name: "PASV names a public address other than the server's",
			opts: fakeOpts{pasvIP: "192.0.2.1"},
			want: with(map[string]want{
				CheckPASV: {Warn, []string{"192.0.2.1", "public address other than the control address", "pasv_address"}},
				CheckLIST: {OK, []string{"to the control address"}},
			}),
			exit: 1,
		},
		{
			name: "the passive range is filtered",
			cfg: func(t *testing.T, f *fakeFTP, c *Config) {
				c.Dial = testNet{drop: func(ap netip.AddrPort) bool { return ap != f.addr }}.Dial
			},
			want: with(map[string]want{
				CheckPASV: {Fail, []string{"control connection works but the data connection", "but not the passive range: port", "pasv_min_port"}},
				CheckEPSV: {Fail, []string{"timed out", "passive range"}},
			}, CheckLIST),
			exit: 2,
		},
		{
			name: "nobody listens on the passive port",
			opts: fakeOpts{pasvDead: true},
			want: with(map[string]want{
				CheckPASV: {Fail, []string{"nothing listens on the passive port", "refused"}},
				CheckEPSV: {Fail, []string{"nothing listens on the passive port"}},
			}, CheckLIST),
			exit: 2,
		},
		{
			name: "EPSV refused",
			opts: fakeOpts{epsvRefused: true},
			want: with(map[string]want{CheckEPSV: {Warn, []string{"EPSV is refused", "500 Unknown command", "fall back to PASV"}}}),
			exit: 1,
		},
		{
			name: "the server never connects in active mode",
			opts: fakeOpts{activeSilent: true},
			cfg:  func(t *testing.T, f *fakeFTP, c *Config) { c.Timeout = quick },
			want: with(map[string]want{CheckActive: {Warn, []string{"did not connect to the probe's listener 127.0.0.1:", "passive mode"}}}),
			exit: 1,
		},
		{
			name: "a server that sends 226 once the client closes the data connection",
			opts: fakeOpts{lingerData: true},
			want: allOK,
		},
		{
			name: "the deadline passes",
			opts: fakeOpts{silent: true},
			cfg: func(t *testing.T, f *fakeFTP, c *Config) {
				c.Timeout, c.Deadline = roomy, 300*time.Millisecond
			},
			want: map[string]want{
				CheckTCP: {OK, nil}, CheckGreeting: {Fail, []string{"no greeting"}},
				CheckDeadline: {Fail, []string{"300ms deadline", "--deadline"}},
			},
			exit: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := startFake(t, tc.opts)
			cfg := Config{
				Host: "127.0.0.1", Port: f.addr.Port(), Password: secret,
				Timeout: roomy, Deadline: bounded, Dial: testNet{}.Dial,
			}
			if tc.cfg != nil {
				tc.cfg(t, f, &cfg)
			}
			rep := Run(context.Background(), cfg)
			text, js := outputs(t, rep)
			checkReport(t, rep, tc.want, tc.exit, text)
			if strings.Contains(text, secret) || strings.Contains(js, secret) {
				t.Errorf("the password appears in the output:\n%s", text)
			}
			if slices.Contains(f.passwords(), secret) && !strings.Contains(text, "-> PASS ****") {
				t.Errorf("the transcript does not show PASS masked:\n%s", text)
			}
		})
	}
}

// outputs renders rep as text with its transcript and as JSON, and checks
// that the JSON reads back to the same report.
func outputs(t *testing.T, rep *Report) (string, string) {
	t.Helper()
	var text, js bytes.Buffer
	if err := rep.WriteText(&text, true); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("JSON does not read back: %v\n%s", err, js.String())
	}
	if back.ExitCode != rep.ExitCode || back.Status != rep.Status || !slices.Equal(back.Results, rep.Results) {
		t.Errorf("JSON round trip changed the report:\n%s", js.String())
	}
	return text.String(), js.String()
}

// checkReport compares rep with the expected checks, statuses and exit
// code.
func checkReport(t *testing.T, rep *Report, want map[string]want, exit int, text string) {
	t.Helper()
	got := map[string]bool{}
	for _, r := range rep.Results {
		if strings.HasPrefix(r.Check, CheckTCP+"/") {
			continue
		}
		got[r.Check] = true
		w, ok := want[r.Check]
		if !ok {
			t.Errorf("unexpected check: %s", r.Line())
			continue
		}
		if r.Status != w.st {
			t.Errorf("%s: status %s, want %s: %s", r.Check, r.Status, w.st, r.Line())
		}
		line := r.Finding + " " + r.Fix
		for _, word := range w.words {
			if !strings.Contains(line, word) {
				t.Errorf("%s: %q lacks %q", r.Check, line, word)
			}
		}
	}
	for check := range want {
		if !got[check] {
			t.Errorf("check %s did not run", check)
		}
	}
	if rep.ExitCode != exit {
		t.Errorf("exit code %d, want %d", rep.ExitCode, exit)
	}
	if t.Failed() {
		t.Logf("report:\n%s", text)
	}
}

func TestAlternatePorts(t *testing.T) {
	f := startFake(t, fakeOpts{})
	closed, filtered := closedPort(t), closedPort(t)
	rep := Run(context.Background(), Config{
		Host: "127.0.0.1", Port: f.addr.Port(), Ports: []uint16{closed, filtered, f.addr.Port()},
		Timeout: roomy, Deadline: bounded,
		Dial: testNet{drop: func(ap netip.AddrPort) bool { return ap.Port() == filtered }}.Dial,
	})
	for port, words := range map[uint16]string{
		closed:   "refused (nothing listens, but the host answers) (for reference only)",
		filtered: "timed out (filtered) (for reference only)",
	} {
		r, ok := rep.Result(fmt.Sprintf("tcp/%d", port))
		if !ok || r.Status != OK || !strings.Contains(r.Finding, words) {
			t.Errorf("tcp/%d: %+v, want OK with %q", port, r, words)
		}
	}
	if _, ok := rep.Result(fmt.Sprintf("tcp/%d", f.addr.Port())); ok {
		t.Errorf("the probed port is also reported as an alternate")
	}
	if rep.ExitCode != 0 {
		t.Errorf("exit %d, want 0: alternates are for reference", rep.ExitCode)
	}
}

func TestResultLine(t *testing.T) {
	for _, tc := range []struct {
		r    Result
		want string
	}{
		{Result{Check: "tcp", Status: OK, Finding: "ftp.test port 21 is open"}, "OK tcp: ftp.test port 21 is open."},
		{Result{Check: "pasv", Status: Warn, Finding: "227 names 10.0.0.5", Fix: "set pasv_address"}, "WARN pasv: 227 names 10.0.0.5. set pasv_address."},
		{Result{Check: "greeting", Status: Fail, Finding: `the server refuses: "421 Bye."`, Fix: "try later."}, `FAIL greeting: the server refuses: "421 Bye.". try later.`},
	} {
		if got := tc.r.Line(); got != tc.want {
			t.Errorf("Line() = %q, want %q", got, tc.want)
		}
	}
}

func TestParseHostPort(t *testing.T) {
	for _, tc := range []struct {
		in   string
		host string
		port uint16
		ok   bool
	}{
		{"ftp.example.com", "ftp.example.com", 21, true},
		{"ftp.example.com:2121", "ftp.example.com", 2121, true},
		{"203.0.113.7", "203.0.113.7", 21, true},
		{"2001:db8::1", "2001:db8::1", 21, true},
		{"[2001:db8::1]:990", "2001:db8::1", 990, true},
		{"ftp://ftp.example.com:2121/pub/", "ftp.example.com", 2121, true},
		{"ftp://ftp.example.com/", "ftp.example.com", 21, true},
		{"", "", 0, false},
		{"host:0", "", 0, false},
		{"host:65536", "", 0, false},
		{"host:ftp", "", 0, false},
		{":21", "", 0, false},
		{"[::1", "", 0, false},
		{"fe80::1%eth0", "fe80::1%eth0", 21, true},
		{"[fe80::1%eth0]:2121", "fe80::1%eth0", 2121, true},
		{"::%[", "", 0, false},             // a zone no [addr%zone]:port can carry
		{"[fe80::1%a b]:21", "", 0, false}, // a space in the zone
		{"fe80::1%an-interface-name-too-long", "", 0, false},
	} {
		h, p, err := ParseHostPort(tc.in, 21)
		if tc.ok != (err == nil) || h != tc.host || p != tc.port {
			t.Errorf("ParseHostPort(%q) = %q, %d, %v; want %q, %d, ok %v", tc.in, h, p, err, tc.host, tc.port, tc.ok)
		}
	}
}
