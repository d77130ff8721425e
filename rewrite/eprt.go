package rewrite

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// EPRT network protocol numbers (RFC 2428 section 2, from the IANA
// address family numbers).
const (
	familyIPv4 = "1"
	familyIPv6 = "2"
)

// ParseEPRT parses the argument of an EPRT command (RFC 2428 section 2):
//
//	|1|132.235.1.2|6275|
//	|2|1080::8:800:200C:417A|5282|
//
// The delimiter is the first byte of the argument and may be any byte from
// 33 to 126; all four delimiters must be the same byte. Spaces around the
// whole argument are allowed. Family 1 must carry an IPv4 address and
// family 2 an IPv6 one (an IPv4-mapped IPv6 address is accepted and stays
// IPv6); zones are refused, as they mean nothing to the peer. Addresses are
// literals only: no name is ever resolved.
//
// A family other than 1 or 2 is ErrFamily (the server answers 522), an
// address that does not fit its family is ErrAddress, a port outside
// 1..65535 is ErrPort, anything else malformed is ErrSyntax.
func ParseEPRT(arg string) (netip.AddrPort, error) {
	s := strings.Trim(arg, " ")
	if len(s) < 2 || s[0] < 33 || s[0] > 126 || s[len(s)-1] != s[0] {
		return netip.AddrPort{}, eprtSyntax(arg)
	}
	d := s[0]
	family, rest, ok1 := strings.Cut(s[1:len(s)-1], string(d))
	host, portText, ok2 := strings.Cut(rest, string(d))
	if !ok1 || !ok2 || strings.IndexByte(portText, d) >= 0 {
		return netip.AddrPort{}, eprtSyntax(arg)
	}
	switch family {
	case familyIPv4, familyIPv6:
	default:
		if _, ok := decimal(family); ok {
			return netip.AddrPort{}, fmt.Errorf("%w: EPRT family %q", ErrFamily, family)
		}
		return netip.AddrPort{}, eprtSyntax(arg)
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: EPRT address %q", ErrAddress, prefix([]byte(host), 64))
	}
	if addr.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("%w: EPRT address %q has a zone", ErrAddress, prefix([]byte(host), 64))
	}
	if (family == familyIPv4) != addr.Is4() {
		return netip.AddrPort{}, fmt.Errorf("%w: EPRT address %s is not of family %s", ErrAddress, addr, family)
	}
	port, err := parsePort(portText)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(addr, port), nil
}

func eprtSyntax(arg string) error {
	return fmt.Errorf("%w: EPRT argument %q", ErrSyntax, prefix([]byte(arg), 64))
}

// parsePort parses a decimal TCP port as it appears in EPRT and EPSV.
func parsePort(s string) (uint16, error) {
	n, ok := decimal(s)
	if !ok {
		return 0, fmt.Errorf("%w: port %q", ErrSyntax, prefix([]byte(s), 16))
	}
	if n == 0 || n > 65535 {
		return 0, fmt.Errorf("%w: port %q out of range 1-65535", ErrPort, prefix([]byte(s), 16))
	}
	return uint16(n), nil
}

// FormatEPRT returns the argument of an EPRT command for ap:
// "|1|a.b.c.d|port|" or "|2|addr|port|". An IPv4-mapped IPv6 address is
// sent unmapped as family 1, which every server handles, and a zone is
// dropped. ap must be valid.
func FormatEPRT(ap netip.AddrPort) string {
	a := ap.Addr().Unmap().WithZone("")
	var buf [64]byte
	b := append(buf[:0], '|')
	if a.Is4() {
		b = append(b, familyIPv4...)
	} else {
		b = append(b, familyIPv6...)
	}
	b = append(b, '|')
	b = a.AppendTo(b)
	b = append(b, '|')
	b = strconv.AppendUint(b, uint64(ap.Port()), 10)
	b = append(b, '|')
	return string(b)
}
