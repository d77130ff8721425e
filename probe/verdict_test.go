package probe

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// The verdicts below cover what loopback tests cannot stage: addresses of
// other kinds, a probe behind NAT, lookups that time out.

func TestAddrKind(t *testing.T) {
	for in, want := range map[string]string{
		"203.0.113.7": "public", "192.0.2.1": "public", "2001:db8::1": "public",
		"10.0.0.5": "private", "172.16.3.4": "private", "192.168.1.10": "private", "100.64.1.1": "private", "fd00::1": "private",
		"127.0.0.1": "loopback", "::1": "loopback",
		"169.254.169.254": "link-local", "fe80::1": "link-local",
		"0.0.0.0": "unspecified",
	} {
		if got := addrKind(netip.MustParseAddr(in)); got != want {
			t.Errorf("addrKind(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestPASVVerdict(t *testing.T) {
	ctl := netip.MustParseAddrPort("203.0.113.7:21")
	ap := netip.MustParseAddrPort
	timeout := &net.OpError{Op: "dial", Err: errors.New("i/o timeout")}
	ok227 := reply{code: 227, lines: []string{"227 Entering Passive Mode"}}
	for _, tc := range []struct {
		name  string
		o     pasvObs
		v6    bool
		st    Status
		words []string
	}{
		{
			name: "the control address, open",
			o:    pasvObs{r: ok227, adv: ap("203.0.113.7:40000"), advOut: open},
			st:   OK, words: []string{"control address, port 40000"},
		},
		{
			name: "the control address, filtered",
			o:    pasvObs{r: ok227, adv: ap("203.0.113.7:40000"), advOut: timedOut, advErr: timeout},
			st:   Fail, words: []string{"firewall opens 21 but not the passive range: port 40000", "pasv_min_port"},
		},
		{
			name: "a private address that opens from here",
			o:    pasvObs{r: ok227, adv: ap("192.168.1.10:40000"), advOut: open},
			st:   Warn, words: []string{"(private)", "outside that network", "pasv_address=203.0.113.7"},
		},
		{
			name: "loopback, the control address works",
			o: pasvObs{r: ok227, adv: ap("127.0.0.1:40000"), advOut: refused, ctlTried: true,
				ctlAP: ap("203.0.113.7:40001"), ctlOut: open},
			st: Warn, words: []string{"(loopback)", "refused the connection", "203.0.113.7:40001", "MasqueradeAddress 203.0.113.7"},
		},
		{
			name: "another public address that works",
			o:    pasvObs{r: ok227, adv: ap("198.51.100.9:40000"), advOut: open},
			st:   OK, words: []string{"a public address other than the control address"},
		},
		{
			name: "a private address and a filtered range",
			o: pasvObs{r: ok227, adv: ap("10.0.0.5:40000"), advOut: timedOut, advErr: timeout, ctlTried: true,
				ctlAP: ap("203.0.113.7:40001"), ctlOut: timedOut},
			st: Fail, words: []string{"timed out too", "firewall opens 21", "pasv_address", "passive port range"},
		},
		{
			name: "a private address that times out, the deadline before the control address",
			o:    pasvObs{r: ok227, adv: ap("10.0.0.5:40000"), advOut: timedOut, advErr: timeout},
			st:   Fail, words: []string{"it timed out", "could not be tried"},
		},
		{
			name: "refused on IPv4",
			o:    pasvObs{r: reply{code: 502, lines: []string{"502 No."}}},
			st:   Fail, words: []string{"PASV is refused", "502 No."},
		},
		{
			name: "refused on IPv6",
			o:    pasvObs{r: reply{code: 502, lines: []string{"502 No."}}},
			v6:   true,
			st:   OK, words: []string{"IPv6", "EPSV is the passive mode"},
		},
	} {
		st, finding, fix := pasvVerdict(ctl, tc.o, tc.v6)
		checkVerdict(t, tc.name, st, finding+" "+fix, tc.st, tc.words)
	}
}

func TestActiveVerdict(t *testing.T) {
	lap := netip.MustParseAddrPort("192.168.1.10:40000")
	for _, tc := range []struct {
		name          string
		local, remote string
		how           activeFailure
		r             reply
		st            Status
		words         []string
		not           []string
	}{
		{
			name: "behind NAT, never connects", local: "192.168.1.10", remote: "203.0.113.7", how: neverConnect,
			st:    Warn,
			words: []string{"did not connect", "192.168.1.10 is private", "cannot learn its public address without outside help", "unlikely to work from behind NAT", "use passive mode"},
		},
		{
			name: "behind carrier-grade NAT, 425", local: "100.64.3.4", remote: "203.0.113.7", how: serverGaveUp,
			r:  reply{code: 425, lines: []string{"425 Failed to establish connection."}},
			st: Warn, words: []string{"could not connect", "425 Failed", "behind NAT"},
		},
		{
			name: "same network, never connects", local: "192.168.1.10", remote: "192.168.1.20", how: neverConnect,
			st: Warn, words: []string{"did not connect", "port 20"}, not: []string{"NAT"},
		},
		{
			name: "PORT refused", local: "203.0.113.9", remote: "203.0.113.7", how: portRefused,
			r:  reply{code: 500, lines: []string{"500 Illegal PORT command."}},
			st: Warn, words: []string{"refuses PORT", "500 Illegal PORT"}, not: []string{"NAT"},
		},
		{
			name: "behind NAT, PORT refused", local: "10.40.0.2", remote: "198.51.100.10", how: portRefused,
			r:  reply{code: 500, lines: []string{"500 Illegal PORT command."}},
			st: Warn, words: []string{"refuses PORT", "500 Illegal PORT", "10.40.0.2 is private", "not the address the server sees", "unlikely to work from behind NAT", "use passive mode"},
		},
	} {
		st, finding, fix := activeVerdict(netip.MustParseAddr(tc.local), netip.MustParseAddr(tc.remote), lap, tc.how, "PORT", tc.r, time.Second)
		checkVerdict(t, tc.name, st, finding+" "+fix, tc.st, tc.words)
		for _, w := range tc.not {
			if strings.Contains(finding+fix, w) {
				t.Errorf("%s: %q holds %q", tc.name, finding+fix, w)
			}
		}
	}
}

func TestDNSVerdict(t *testing.T) {
	a := []netip.Addr{netip.MustParseAddr("203.0.113.7")}
	timeout := &net.DNSError{Err: "i/o timeout", Name: "ftp.test", IsTimeout: true}
	notFound := &net.DNSError{Err: "no such host", Name: "ftp.test", IsNotFound: true}
	for _, tc := range []struct {
		name  string
		rr    string
		l     lookup
		other bool
		st    Status
		words []string
	}{
		{"found", "A", lookup{addrs: a}, false, OK, []string{"has A 203.0.113.7"}},
		{"none, the other family has", "AAAA", lookup{err: notFound}, true, OK, []string{"no AAAA record", "over IPv4"}},
		{"none at all", "A", lookup{err: notFound}, false, Fail, []string{"no A record"}},
		{"timed out, the other family has", "AAAA", lookup{err: timeout}, true, Warn, []string{"timed out", "resolv.conf"}},
		{"timed out, nothing else", "A", lookup{err: timeout}, false, Fail, []string{"timed out"}},
	} {
		st, finding, fix := dnsVerdict("ftp.test", tc.rr, tc.l, tc.other)
		checkVerdict(t, tc.name, st, finding+" "+fix, tc.st, tc.words)
	}
}

func TestNotFTP(t *testing.T) {
	for in, want := range map[string]string{
		"SSH-2.0-OpenSSH_9.6\r\n":         "an SSH server",
		"+OK Dovecot ready.\r\n":          "a POP3 mail server",
		"* OK IMAP4rev1 ready\r\n":        "an IMAP mail server",
		"\x16\x03\x03\x00\x2a\x02":        "implicit-FTPS",
		"\x00\x01binary junk":             `sent "\x00\x01binary junk"`,
		strings.Repeat("x", 100) + "\r\n": `...`,
	} {
		st, finding, _ := notFTP([]byte(in), 21)
		if st != Fail || !strings.Contains(finding, want) {
			t.Errorf("notFTP(%q) = %s %q, want FAIL with %q", in, st, finding, want)
		}
	}
	st, finding, _ := greetingVerdict(reply{code: 220, lines: []string{"220 mail.example.com ESMTP Postfix"}}, 0, false, 21)
	if st != Fail || !strings.Contains(finding, "mail server") {
		t.Errorf("an SMTP greeting: %s %q", st, finding)
	}
}

func checkVerdict(t *testing.T, name string, st Status, text string, want Status, words []string) {
	t.Helper()
	if st != want {
		t.Errorf("%s: %s, want %s: %s", name, st, want, text)
	}
	for _, w := range words {
		if !strings.Contains(text, w) {
			t.Errorf("%s: %q lacks %q", name, text, w)
		}
	}
}
