package nat

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	sockaddr "github.com/hashicorp/go-sockaddr"
)

// ErrCIDR reports a network list that cannot be used.
var ErrCIDR = errors.New("nat: bad network")

// ParseCIDRs parses a comma-separated list of networks ("10.0.0.0/8",
// "2001:db8::/32") or single addresses (a /32 or /128), as --proxy-protocol-from
// and the access lists take them.
func ParseCIDRs(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		ip, err := sockaddr.NewIPAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %q", ErrCIDR, s)
		}
		n := ip.NetIPNet()
		addr, ok := netip.AddrFromSlice(n.IP)
		if !ok {
			return nil, fmt.Errorf("%w: %q", ErrCIDR, s)
		}
		bits, _ := n.Mask.Size()
		out = append(out, netip.PrefixFrom(addr.Unmap(), bits).Masked())
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: empty list", ErrCIDR)
	}
	return out, nil
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
