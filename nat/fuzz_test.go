package nat

import (
	"fmt"
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
