package nat

import (
	"context"
	"errors"
	"net/netip"
	"testing"
)

// fakeResolver answers from a map, so no test touches DNS.
type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if ips, ok := f[host]; ok {
		return ips, nil
	}
	return nil, errors.New("no such host")
}

func TestParseAdvertiser(t *testing.T) {
	a := netip.MustParseAddr
	res := fakeResolver{
		"ftp.example.com": {a("2001:db8::7"), a("203.0.113.7")},
		"v6only.example":  {a("2001:db8::8")},
		"zero.example":    {a("0.0.0.0")},
	}
	tests := []struct {
		name   string
		values []string
		want   Advertiser
		err    bool
	}{
		{"none", nil, Advertiser{}, false},
		{"static", []string{"203.0.113.7"}, Advertiser{Static: a("203.0.113.7")}, false},
		{"host name prefers IPv4", []string{"ftp.example.com"}, Advertiser{Static: a("203.0.113.7")}, false},
		{"host name with only IPv6", []string{"v6only.example"}, Advertiser{Static: a("2001:db8::8")}, false},
		{"loopback template", []string{`{{ GetAllInterfaces | include "name" "^lo$" | include "type" "IPv4" | attr "address" }}`}, Advertiser{Static: a("127.0.0.1")}, false},
		{"split horizon", []string{"10.0.0.0/8=10.1.1.1", "203.0.113.7"},
			Advertiser{Rules: []Rule{{netip.MustParsePrefix("10.0.0.0/8"), a("10.1.1.1")}}, Static: a("203.0.113.7")}, false},
		{"rule prefix is masked", []string{"10.9.9.9/8=10.1.1.1"},
			Advertiser{Rules: []Rule{{netip.MustParsePrefix("10.0.0.0/8"), a("10.1.1.1")}}}, false},
		{"two fallbacks", []string{"203.0.113.7", "203.0.113.8"}, Advertiser{}, true},
		{"bad cidr", []string{"10.0.0.0/33=10.1.1.1"}, Advertiser{}, true},
		{"unknown host", []string{"nowhere.example"}, Advertiser{}, true},
		{"unspecified", []string{"0.0.0.0"}, Advertiser{}, true},
		{"empty", []string{""}, Advertiser{}, true},
		{"bad template", []string{"{{ NoSuchFunc }}"}, Advertiser{}, true},
		{"template giving the unspecified address", []string{`{{ "0.0.0.0" }}`}, Advertiser{}, true},
		{"template giving a zone", []string{`{{ "fe80::1%lo" }}`}, Advertiser{}, true},
		{"name resolving to the unspecified address", []string{"zero.example"}, Advertiser{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAdvertiser(context.Background(), tt.values, res)
			if tt.err {
				if !errors.Is(err, ErrAdvertise) {
					t.Fatalf("err = %v, want ErrAdvertise", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Static != tt.want.Static || len(got.Rules) != len(tt.want.Rules) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			for i := range got.Rules {
				if got.Rules[i] != tt.want.Rules[i] {
					t.Fatalf("rule %d = %+v, want %+v", i, got.Rules[i], tt.want.Rules[i])
				}
			}
		})
	}
}

func TestAdvertiseRules(t *testing.T) {
	a := netip.MustParseAddr
	adv := Advertiser{
		Rules: []Rule{
			{netip.MustParsePrefix("10.0.0.0/8"), a("10.1.1.1")},
			{netip.MustParsePrefix("10.2.0.0/16"), a("10.2.2.2")}, // shadowed: first match wins
			{netip.MustParsePrefix("2001:db8:1::/48"), a("2001:db8:1::1")},
		},
		Static: a("203.0.113.7"),
	}
	tests := []struct{ client, local, want string }{
		{"10.2.3.4", "192.0.2.1", "10.1.1.1"},
		{"::ffff:10.9.9.9", "192.0.2.1", "10.1.1.1"},
		{"198.51.100.9", "192.0.2.1", "203.0.113.7"},
		{"2001:db8:1::9", "2001:db8::2", "2001:db8:1::1"},
		{"2001:db8:2::9", "2001:db8::2", "2001:db8::2"}, // no v6 fallback: the local address
	}
	for _, tt := range tests {
		if got := adv.Advertise(a(tt.client), a(tt.local)); got != a(tt.want) {
			t.Errorf("Advertise(%s, %s) = %v, want %s", tt.client, tt.local, got, tt.want)
		}
	}
}
