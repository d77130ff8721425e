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
// 1..65535 is ErrPort, anything else malformed is ErrSyntax. Errors say
// which field is wrong but never quote arg, which comes from a client.
func ParseEPRT(arg string) (netip.AddrPort, error) {
	s := strings.Trim(arg, " ")
	if len(s) < 2 {
		return netip.AddrPort{}, fmt.Errorf("%w: EPRT argument too short, want <d>family<d>address<d>port<d>", ErrSyntax)
	}
	if s[0] < 33 || s[0] > 126 {
		return netip.AddrPort{}, fmt.Errorf("%w: EPRT delimiter %#02x is not a byte from 33 to 126", ErrSyntax, s[0])
	}
	if s[len(s)-1] != s[0] {
		return netip.AddrPort{}, fmt.Errorf("%w: EPRT argument does not end with its delimiter", ErrSyntax)
	}
	d := s[0]
	inner := s[1 : len(s)-1]
	if n := strings.Count(inner, string(d)) + 1; n != 3 {
		return netip.AddrPort{}, fmt.Errorf("%w: EPRT argument has %d fields, want 3", ErrSyntax, n)
	}
	family, rest, _ := strings.Cut(inner, string(d))
	host, portText, _ := strings.Cut(rest, string(d))
	switch family {
	case familyIPv4, familyIPv6:
	default:
		if _, ok := decimal(family); ok {
			return netip.AddrPort{}, fmt.Errorf("%w: EPRT network protocol is neither 1 nor 2", ErrFamily)
		}
		return netip.AddrPort{}, fmt.Errorf("%w: EPRT network protocol is not a number", ErrSyntax)
	}
	// netip's errors quote their input, so they are not passed on.
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w: EPRT address is not an IP address literal", ErrAddress)
	}
	if addr.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("%w: EPRT address has a zone", ErrAddress)
	}
	if (family == familyIPv4) != addr.Is4() {
		return netip.AddrPort{}, fmt.Errorf("%w: EPRT address is not of network protocol %s", ErrAddress, family)
	}
	port, err := parsePort(portText)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(addr, port), nil
}

// parsePort parses a decimal TCP port as it appears in EPRT and EPSV. Its
// errors do not quote s, which may come from a client's EPRT command.
func parsePort(s string) (uint16, error) {
	n, ok := decimal(s)
	if !ok {
		return 0, fmt.Errorf("%w: port is not a decimal number", ErrSyntax)
	}
	if n == 0 || n > 65535 {
		return 0, fmt.Errorf("%w: port out of range 1-65535", ErrPort)
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
