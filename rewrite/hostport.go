package rewrite

import (
	"fmt"
	"net/netip"
	"strconv"
)

// The six-number host-port form "h1,h2,h3,h4,p1,p2" shared by PORT and the
// 227 reply to PASV (RFC 959 section 4.1.2): four address octets, then the
// port's high and low byte, each a decimal number 0-255.

// saturate is larger than any value accepted anywhere in this package;
// decimal stops growing there so huge inputs cannot overflow.
const saturate = 1 << 20

// decimal parses s, a non-empty run of ASCII digits, as a number; values
// above saturate are reported as saturate. ok is false if s is empty or
// holds anything but digits, including a sign.
func decimal(s string) (n int, ok bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n < saturate {
			n = n*10 + int(c-'0')
		}
	}
	return min(n, saturate), true
}

// digitsAt returns the length of the run of ASCII digits starting at s[i].
func digitsAt(s string, i int) int {
	j := i
	for j < len(s) && s[j] >= '0' && s[j] <= '9' {
		j++
	}
	return j - i
}

// scanSix reads six comma-separated decimal numbers at the start of s and
// returns them with the number of bytes they take. ok is false if s does
// not start that way; n is then the offset where a digit or comma was
// missing, for error messages that must not quote s.
func scanSix(s string) (v [6]int, n int, ok bool) {
	for k := range v {
		if k > 0 {
			if n >= len(s) || s[n] != ',' {
				return v, n, false
			}
			n++
		}
		d := digitsAt(s, n)
		if d == 0 {
			return v, n, false
		}
		v[k], _ = decimal(s[n : n+d])
		n += d
	}
	return v, n, true
}

// sixToAddrPort checks the values of a host-port and converts them. Its
// errors name the field but not its value, which may come from a client's
// PORT command.
func sixToAddrPort(v [6]int) (netip.AddrPort, error) {
	for k, x := range v[:4] {
		if x > 255 {
			return netip.AddrPort{}, fmt.Errorf("%w: octet h%d above 255", ErrAddress, k+1)
		}
	}
	for k, x := range v[4:] {
		if x > 255 {
			return netip.AddrPort{}, fmt.Errorf("%w: byte p%d above 255", ErrPort, k+1)
		}
	}
	port := v[4]<<8 | v[5]
	if port == 0 {
		return netip.AddrPort{}, fmt.Errorf("%w: port 0", ErrPort)
	}
	addr := netip.AddrFrom4([4]byte{byte(v[0]), byte(v[1]), byte(v[2]), byte(v[3])})
	return netip.AddrPortFrom(addr, uint16(port)), nil
}

// appendSix appends ap as "h1,h2,h3,h4,p1,p2". The address must be IPv4 or
// IPv4-mapped IPv6 (which is unmapped): the six-number form has no room for
// anything else, which is why RFC 2428 added EPRT and EPSV. Port 0 is
// refused because no peer can connect to it.
func appendSix(dst []byte, ap netip.AddrPort) ([]byte, error) {
	a := ap.Addr().Unmap()
	if !a.Is4() {
		return dst, fmt.Errorf("%w: %v is not an IPv4 address", ErrAddress, ap.Addr())
	}
	if ap.Port() == 0 {
		return dst, fmt.Errorf("%w: port 0", ErrPort)
	}
	for _, o := range a.As4() {
		dst = strconv.AppendUint(dst, uint64(o), 10)
		dst = append(dst, ',')
	}
	dst = strconv.AppendUint(dst, uint64(ap.Port()>>8), 10)
	dst = append(dst, ',')
	dst = strconv.AppendUint(dst, uint64(ap.Port()&0xFF), 10)
	return dst, nil
}
