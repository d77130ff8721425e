package nat

import (
	"errors"
	"net/netip"
	"testing"
)

func TestParseCIDRs(t *testing.T) {
	p := netip.MustParsePrefix
	tests := []struct {
		in   string
		want []netip.Prefix
	}{
		{"10.0.0.0/8", []netip.Prefix{p("10.0.0.0/8")}},
		{"10.1.2.3/8, 127.0.0.1", []netip.Prefix{p("10.0.0.0/8"), p("127.0.0.1/32")}},
		{"2001:db8::/32,::1", []netip.Prefix{p("2001:db8::/32"), p("::1/128")}},
		{"::ffff:10.0.0.1/104, ::ffff:10.0.0.1", []netip.Prefix{p("10.0.0.0/8"), p("10.0.0.1/32")}},
		{"::ffff:0:0/80", []netip.Prefix{p("0.0.0.0/0")}}, // covers every mapped address
	}
	for _, tt := range tests {
		got, err := ParseCIDRs(tt.in)
		if err != nil {
			t.Fatalf("ParseCIDRs(%q): %v", tt.in, err)
		}
		if len(got) != len(tt.want) {
			t.Fatalf("ParseCIDRs(%q) = %v, want %v", tt.in, got, tt.want)
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("ParseCIDRs(%q)[%d] = %v, want %v", tt.in, i, got[i], tt.want[i])
			}
		}
	}
	// Names are never looked up ("localhost:1" once became 127.0.0.1/32),
	// ports are not dropped, and a hex netmask is not taken for /32.
	for _, bad := range []string{"", ",", "10.0.0.0/33", "example.com", "10.0.0.0/8,nope",
		"localhost", "localhost:1", "10.0.0.1:80", "[::1]:21", "fe80::1%eth0", "fe80::1%eth0/64",
		"10.0.0.1/00ffffff", "10.0.0.0/255.0.0.0", "4294967295", "010.0.0.1"} {
		if _, err := ParseCIDRs(bad); !errors.Is(err, ErrCIDR) {
			t.Errorf("ParseCIDRs(%q) err = %v, want ErrCIDR", bad, err)
		}
	}
}

func TestContains(t *testing.T) {
	nets, _ := ParseCIDRs("10.0.0.0/8,::1")
	a := netip.MustParseAddr
	for addr, want := range map[string]bool{"10.9.9.9": true, "::ffff:10.0.0.1": true, "11.0.0.1": false, "::1": true, "::2": false} {
		if got := Contains(nets, a(addr)); got != want {
			t.Errorf("Contains(%s) = %v", addr, got)
		}
	}
}
