package nat

import (
	"net/netip"
	"strings"
	"testing"
)

func TestDestPolicyCheck(t *testing.T) {
	own := []NamedPrefix{{Name: "the proxy's own address", Prefix: netip.MustParsePrefix("198.51.100.1/32")}}
	for _, tt := range []struct {
		allow  []string
		ports  string
		host   string
		ap     string
		reason string // "" when allowed
	}{
		{nil, "", "192.0.2.1", "192.0.2.1:21", "no destination is allowed"},
		{[]string{"192.0.2.0/24"}, "", "192.0.2.1", "192.0.2.1:21", ""},
		{[]string{"192.0.2.0/24"}, "", "192.0.2.1", "192.0.2.1:990", ""},
		{[]string{"192.0.2.0/24"}, "", "192.0.2.1", "192.0.2.1:22", "port 22 is not allowed"},
		{[]string{"192.0.2.0/24"}, "21,2100-2199", "192.0.2.1", "192.0.2.1:2150", ""},
		{[]string{"192.0.2.0/24"}, "", "192.0.2.1", "203.0.113.1:21", "203.0.113.1:21 is not in --allow-dest"},
		{[]string{"ftp.example.com"}, "", "FTP.Example.com.", "203.0.113.1:21", ""},
		{[]string{"ftp.example.com"}, "", "other.example.com", "203.0.113.1:21", "not in --allow-dest"},
		{[]string{"ftp.example.com:2121"}, "", "ftp.example.com", "203.0.113.1:2121", ""},
		{[]string{"ftp.example.com:2121"}, "", "ftp.example.com", "203.0.113.1:21", "port 21 is not allowed"},
		{[]string{"[2001:db8::1]:2121"}, "", "2001:db8::1", "[2001:db8::1]:2121", ""},
		{[]string{"2001:db8::/32"}, "", "2001:db8::5", "[2001:db8::5]:21", ""},
		{[]string{"[2001:db8::/32]:2121"}, "", "2001:db8::5", "[2001:db8::5]:2121", ""},
		{[]string{"192.0.2.0/24:2121"}, "", "192.0.2.9", "192.0.2.9:21", "port 21 is not allowed"},
		// Special ranges: only a network entry inside them allows them.
		{[]string{"0.0.0.0/0"}, "", "127.0.0.1", "127.0.0.1:21", "loopback address 127.0.0.1"},
		{[]string{"0.0.0.0/0", "::/0"}, "", "::1", "[::1]:21", "loopback address ::1"},
		{[]string{"0.0.0.0/0"}, "", "x", "[::ffff:127.0.0.1]:21", "loopback address 127.0.0.1"},
		{[]string{"127.0.0.0/8"}, "", "127.0.0.1", "127.0.0.1:21", ""},
		{[]string{"127.0.0.1"}, "", "127.0.0.1", "127.0.0.1:21", ""},
		{[]string{"127.0.0.0/8"}, "", "127.0.0.1", "127.0.0.1:2121", "port 2121 is not allowed"},
		{[]string{"127.0.0.0/8:2121", "0.0.0.0/0"}, "", "127.0.0.1", "127.0.0.1:21", "port 21 is not allowed"},
		{[]string{"localhost"}, "", "localhost", "127.0.0.1:21", "loopback address"},
		{[]string{"0.0.0.0/0"}, "", "169.254.169.254", "169.254.169.254:21", "link-local address 169.254.169.254"},
		{[]string{"::/0"}, "", "fe80::1", "[fe80::1]:21", "link-local address"},
		{[]string{"0.0.0.0/0"}, "", "0.0.0.0", "0.0.0.0:21", "unspecified address"},
		{[]string{"0.0.0.0/0"}, "", "224.0.0.1", "224.0.0.1:21", "multicast address"},
		{[]string{"0.0.0.0/0"}, "", "255.255.255.255", "255.255.255.255:21", "broadcast address"},
		{[]string{"0.0.0.0/0"}, "", "198.51.100.1", "198.51.100.1:21", "the proxy's own address 198.51.100.1"},
		{[]string{"198.51.100.0/24"}, "", "198.51.100.1", "198.51.100.1:21", "the proxy's own address"},
		{[]string{"198.51.100.1/32"}, "", "198.51.100.1", "198.51.100.1:21", ""},
		{[]string{"0.0.0.0/0"}, "", "198.51.100.2", "198.51.100.2:21", ""},
	} {
		p, err := ParseDestPolicy(tt.allow, func() string {
			if tt.ports == "" {
				return DefaultForwardPorts
			}
			return tt.ports
		}())
		if err != nil {
			t.Fatalf("%v: %v", tt.allow, err)
		}
		err = p.Check(tt.host, netip.MustParseAddrPort(tt.ap), own)
		switch {
		case tt.reason == "" && err != nil:
			t.Errorf("%v %s %s: refused (%v), want allowed", tt.allow, tt.host, tt.ap, err)
		case tt.reason != "" && (err == nil || !strings.Contains(err.Error(), tt.reason)):
			t.Errorf("%v %s %s: %v, want a refusal with %q", tt.allow, tt.host, tt.ap, err, tt.reason)
		case err != nil:
			// Protected: an address in a special or protected range.
			a := netip.MustParseAddrPort(tt.ap).Addr().Unmap()
			want := a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified() || a.IsMulticast() ||
				a == netip.MustParseAddr("255.255.255.255") || own[0].Prefix.Contains(a)
			if got := err.(*DestRefusal).Protected; got != want {
				t.Errorf("%v %s %s: Protected %v, want %v", tt.allow, tt.host, tt.ap, got, want)
			}
		}
	}
}

func TestParseDestPolicyErrors(t *testing.T) {
	for _, tt := range []struct {
		allow []string
		ports string
	}{
		{[]string{"10.0.0.0/33"}, "21"},
		{[]string{"bad host"}, "21"},
		{[]string{"host:0"}, "21"},
		{[]string{"host:99999"}, "21"},
		{[]string{"[::1"}, "21"},
		{[]string{"10.0.0.0/8"}, "0"},
		{[]string{"10.0.0.0/8"}, "21,x"},
		{[]string{"-host-"}, "21"},
	} {
		if _, err := ParseDestPolicy(tt.allow, tt.ports); err == nil {
			t.Errorf("%q, %q: accepted", tt.allow, tt.ports)
		}
	}
}

func TestSplitDestination(t *testing.T) {
	for _, tt := range []struct {
		in   string
		host string
		port uint16
		bad  bool
	}{
		{in: "ftp.example.com", host: "ftp.example.com", port: 21},
		{in: "FTP.Example.COM:2121", host: "ftp.example.com", port: 2121},
		{in: "192.0.2.1", host: "192.0.2.1", port: 21},
		{in: "192.0.2.1:990", host: "192.0.2.1", port: 990},
		{in: "[2001:db8::1]:2121", host: "2001:db8::1", port: 2121},
		{in: "[2001:db8::1]", host: "2001:db8::1", port: 21},
		{in: "2001:db8::1", host: "2001:db8::1", port: 21},
		{in: "host:", bad: true},
		{in: "host:0", bad: true},
		{in: "host:65536", bad: true},
		{in: "host:+21", bad: true},
		{in: "[192.0.2.1]:21", bad: true},
		{in: "[fe80::1%eth0]:21", bad: true},
		{in: "ho st", bad: true},
		{in: "a..b", bad: true},
		{in: "", bad: true},
		{in: "x\r\nPASS", bad: true},
		{in: strings.Repeat("a", 64) + ".com", bad: true},
	} {
		host, port, err := SplitDestination(tt.in, 21)
		if tt.bad {
			if err == nil {
				t.Errorf("SplitDestination(%q) = %q, %d; want an error", tt.in, host, port)
			}
			continue
		}
		if err != nil || host != tt.host || port != tt.port {
			t.Errorf("SplitDestination(%q) = %q, %d, %v; want %q, %d", tt.in, host, port, err, tt.host, tt.port)
		}
	}
}

// FuzzSplitDestination: an accepted destination is an IP address or a DNS
// name of safe characters, with a port; nothing else reaches the
// resolver or the logs.
func FuzzSplitDestination(f *testing.F) {
	for _, s := range []string{"ftp.example.com", "h:2121", "[2001:db8::1]:21", "2001:db8::1", "192.0.2.1:990",
		"h:", "[::1", "a b", "x\r\nPASS y", "[fe80::1%eth0]:21", "::ffff:127.0.0.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		host, port, err := SplitDestination(s, 21)
		if err != nil {
			return
		}
		if port == 0 {
			t.Fatalf("%q: port 0", s)
		}
		if _, err := netip.ParseAddr(host); err == nil {
			return
		}
		if !validHostName(host) || strings.ContainsAny(host, " \r\n\t:[]%@") {
			t.Fatalf("%q: host %q accepted", s, host)
		}
	})
}
