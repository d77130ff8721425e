package nat

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// FuzzParsePortRange: an accepted range is well-formed and its canonical
// form parses back to the same range.
func FuzzParsePortRange(f *testing.F) {
	f.Add("21000-21099") // the usual form
	f.Add("2100")        // a single port
	f.Add(" 10 - 20 ")   // spaces around the numbers
	f.Add("0-10")        // port 0 is not a port
	f.Add("65535-65536") // past the top
	f.Add("-5")          // a sign, not a range
	f.Fuzz(func(t *testing.T, s string) {
		lo, hi, err := ParsePortRange(s)
		if err != nil {
			return
		}
		if lo == 0 || hi < lo {
			t.Fatalf("ParsePortRange(%q) = %d-%d", s, lo, hi)
		}
		lo2, hi2, err := ParsePortRange(fmt.Sprintf("%d-%d", lo, hi))
		if err != nil || lo2 != lo || hi2 != hi {
			t.Fatalf("round trip of %d-%d: %d-%d, %v", lo, hi, lo2, hi2, err)
		}
	})
}

// FuzzParseCIDRs: accepted networks are masked, and their canonical list
// parses back to the same networks.
func FuzzParseCIDRs(f *testing.F) {
	f.Add("10.0.0.0/8")            // one network
	f.Add("10.1.2.3/8, 127.0.0.1") // host bits set, a bare address
	f.Add("2001:db8::/32,::1")     // IPv6
	f.Add("::ffff:10.0.0.1/104")   // IPv4-mapped
	f.Add("10.0.0.0/33")           // mask too long
	f.Add(",,")                    // nothing in the list
	f.Add("fe80::1%eth0/64")       // a zone
	f.Fuzz(func(t *testing.T, s string) {
		nets, err := ParseCIDRs(s)
		if err != nil {
			return
		}
		parts := make([]string, len(nets))
		for i, n := range nets {
			if n != n.Masked() {
				t.Fatalf("ParseCIDRs(%q): %v is not masked", s, n)
			}
			parts[i] = n.String()
		}
		again, err := ParseCIDRs(strings.Join(parts, ","))
		if err != nil || len(again) != len(nets) {
			t.Fatalf("round trip of %v: %v, %v", nets, again, err)
		}
		for i := range nets {
			if again[i] != nets[i] {
				t.Fatalf("round trip of %v: %v", nets, again)
			}
		}
	})
}

// FuzzParseAdvertiser: whatever the --advertise values, an accepted
// Advertiser announces only addresses a client can connect to, and its
// rules' networks are masked. Names go to a fake resolver; templates run
// against this machine's interfaces.
func FuzzParseAdvertiser(f *testing.F) {
	f.Add("203.0.113.7", "")                             // a fallback address
	f.Add("10.0.0.0/8=10.1.1.1", "203.0.113.7")          // split horizon
	f.Add("ftp.example.com", "")                         // a name, both families
	f.Add(`{{ "0.0.0.0" }}`, "")                         // a template giving the unspecified address
	f.Add(`{{ "fe80::1%lo" }}`, "")                      // a template giving a zone
	f.Add(`{{ GetAllInterfaces | attr "address" }}`, "") // several addresses
	f.Add("10.9.9.9/8=10.1.1.1", "=")                    // host bits set; an empty rule
	res := fakeResolver{
		"ftp.example.com": {netip.MustParseAddr("2001:db8::7"), netip.MustParseAddr("203.0.113.7")},
		"zero.example":    {netip.MustParseAddr("0.0.0.0")},
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		var values []string
		for _, v := range []string{a, b} {
			if v != "" {
				values = append(values, v)
			}
		}
		adv, err := ParseAdvertiser(context.Background(), values, res)
		if err != nil {
			if !errors.Is(err, ErrAdvertise) {
				t.Fatalf("ParseAdvertiser(%q): %v is not ErrAdvertise", values, err)
			}
			return
		}
		check := func(ip netip.Addr) {
			if !ip.IsValid() || ip.IsUnspecified() || ip.Zone() != "" || ip.Is4In6() {
				t.Fatalf("ParseAdvertiser(%q) announces %v", values, ip)
			}
		}
		if adv.Static.IsValid() {
			check(adv.Static)
		}
		for _, r := range adv.Rules {
			check(r.Addr)
			if r.Clients != r.Clients.Masked() {
				t.Fatalf("ParseAdvertiser(%q): rule %v is not masked", values, r.Clients)
			}
		}
	})
}

// FuzzParseDestPolicy: a policy parsed from any --allow-dest and
// --forward-ports values decides on any destination without failing, and
// never allows port 0 or an address in a special range its entries do
// not name.
func FuzzParseDestPolicy(f *testing.F) {
	f.Add("10.0.0.0/8,ftp.example.net:2121", "21,990", "ftp.example.net", "10.1.2.3", uint16(21))
	f.Add("[2001:db8::/32]:2121", "2100-2199", "2001:db8::1", "2001:db8::1", uint16(2121))
	f.Add("0.0.0.0/0", "21", "localhost", "127.0.0.1", uint16(21))
	f.Add("::ffff:0:0/96", "", "169.254.169.254", "169.254.169.254", uint16(21))
	f.Add("127.0.0.0/8:21", "21", "127.0.0.1", "::ffff:127.0.0.1", uint16(21))
	f.Fuzz(func(t *testing.T, allow, ports, host, addr string, port uint16) {
		p, err := ParseDestPolicy([]string{allow}, ports)
		if err != nil {
			if !errors.Is(err, ErrDestination) {
				t.Fatalf("ParseDestPolicy(%q, %q): %v is not ErrDestination", allow, ports, err)
			}
			return
		}
		a, err := netip.ParseAddr(addr)
		if err != nil {
			return
		}
		err = p.Check(host, netip.AddrPortFrom(a, port), nil)
		if err == nil && port == 0 {
			t.Fatalf("policy %q/%q allows port 0 at %v", allow, ports, a)
		}
		if err != nil {
			var r *DestRefusal
			if !errors.As(err, &r) || r.Reason == "" {
				t.Fatalf("Check gave %v, not a *DestRefusal with a reason", err)
			}
		}
	})
}
