package rewrite

import (
	"fmt"
	"net/netip"
	"strings"
)

// ParsePORT parses the argument of a PORT command, "h1,h2,h3,h4,p1,p2"
// (RFC 959 section 4.1.2). It is strict, because the argument comes from
// the client the proxy protects the server from: exactly six decimal
// numbers separated by single commas, no signs and no spaces between them;
// only spaces around the whole argument are allowed. An octet above 255 is
// ErrAddress, a port byte above 255 or port 0 is ErrPort, anything else
// malformed is ErrSyntax. Errors give the offset of the fault in arg but
// never quote arg, which comes from a client.
//
// Whether the address is acceptable (the client's own, not a third party's,
// RFC 2577 section 3) is for the caller to decide.
func ParsePORT(arg string) (netip.AddrPort, error) {
	lead := len(arg) - len(strings.TrimLeft(arg, " "))
	s := strings.TrimRight(arg[lead:], " ")
	v, n, ok := scanSix(s)
	if !ok || n != len(s) {
		return netip.AddrPort{}, portSyntax(arg, lead+n)
	}
	return sixToAddrPort(v)
}

// portSyntax reports a PORT argument that is not h1,h2,h3,h4,p1,p2: at is
// the offset in arg of the first wrong byte, or the end of the numbers if
// one is missing there.
func portSyntax(arg string, at int) error {
	if at >= len(strings.TrimRight(arg, " ")) {
		return fmt.Errorf("%w: PORT argument ends at offset %d, want h1,h2,h3,h4,p1,p2", ErrSyntax, at)
	}
	return fmt.Errorf("%w: PORT argument has byte %#02x at offset %d, want h1,h2,h3,h4,p1,p2", ErrSyntax, arg[at], at)
}

// FormatPORT returns the argument of a PORT command for ap,
// "h1,h2,h3,h4,p1,p2", without the verb. ap must hold an IPv4 or
// IPv4-mapped IPv6 address (ErrAddress) and a non-zero port (ErrPort).
func FormatPORT(ap netip.AddrPort) (string, error) {
	var buf [24]byte
	b, err := appendSix(buf[:0], ap)
	if err != nil {
		return "", err
	}
	return string(b), nil
}
