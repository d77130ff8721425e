package nat

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// ErrCIDR reports a network list that cannot be used.
var ErrCIDR = errors.New("nat: bad network")

// ParseCIDRs parses a comma-separated list of networks ("10.0.0.0/8",
// "2001:db8::/32") or single addresses (a /32 or /128), as
// --proxy-protocol-from and the access lists take them. Host bits are
// cleared; an IPv4-mapped network is taken as IPv4, as --allow-dest takes
// it (unmappedBits). Anything else is refused: a host name (an access list
// is never resolved: a name would be looked up once at start, and a parser
// must not wait on DNS), an address with a port, a zone, or a netmask
// other than a prefix length.
func ParseCIDRs(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		p, err := parseNet(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: want an IP address or CIDR network", ErrCIDR, s)
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: empty list", ErrCIDR)
	}
	return out, nil
}

// parseNet parses one network or address, masked and unmapped.
func parseNet(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, err
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		if a.Zone() != "" {
			return netip.Prefix{}, errors.New("zone")
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	return netip.PrefixFrom(p.Addr().Unmap(), unmappedBits(p)).Masked(), nil
}

// Contains reports whether any of nets holds addr.
func Contains(nets []netip.Prefix, addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, n := range nets {
		if n.Contains(addr) {
			return true
		}
	}
	return false
}
