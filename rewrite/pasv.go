package rewrite

import (
	"fmt"
	"net/netip"
)

// ParsePASVReply parses the text of a 227 reply to PASV, with or without
// its "227 " code. RFC 959 section 4.1.2 only says the reply contains the
// host-port, and RFC 1123 section 4.1.2.6 tells clients to scan for it
// because servers disagree on its surroundings:
//
//	227 Entering Passive Mode (127,0,0,1,78,52).   vsftpd, IIS
//	227 Entering Passive Mode (127,0,0,1,117,48)   pure-ftpd, proftpd
//	227 =127,0,0,1,4,1
//	227 Passive 10,0,0,5,4,1
//
// So ParsePASVReply is lenient about where the numbers sit and takes the
// first run of exactly six comma-separated decimal numbers, but strict about
// their values: an octet above 255 is ErrAddress, a port byte above 255 or
// port 0 is ErrPort. A run preceded by '-' (a negative number) or followed by
// a further ",digit" is not a host-port; no such run is ErrSyntax.
func ParsePASVReply(text string) (netip.AddrPort, error) {
	s := text
	if len(s) >= 4 && s[:3] == "227" && (s[3] == ' ' || s[3] == '-') {
		s = s[4:]
	}
	for i := 0; i < len(s); {
		if s[i] < '0' || s[i] > '9' {
			i++
			continue
		}
		end := runEnd(s, i)
		if v, n, ok := scanSix(s[i:end]); ok && n == end-i {
			if i > 0 && s[i-1] == '-' {
				return netip.AddrPort{}, fmt.Errorf("%w: negative number in 227 reply %q", ErrSyntax, prefix([]byte(text), 64))
			}
			ap, err := sixToAddrPort(v)
			if err != nil {
				return netip.AddrPort{}, fmt.Errorf("%w in 227 reply %q", err, prefix([]byte(text), 64))
			}
			return ap, nil
		}
		i = end
	}
	return netip.AddrPort{}, fmt.Errorf("%w: no host-port in 227 reply %q", ErrSyntax, prefix([]byte(text), 64))
}

// FormatPASVReply returns the 227 reply announcing ap, without CRLF, in
// the form most clients expect:
// "227 Entering Passive Mode (h1,h2,h3,h4,p1,p2).". ap must hold an IPv4 or
// IPv4-mapped IPv6 address (ErrAddress) and a non-zero port (ErrPort).
func FormatPASVReply(ap netip.AddrPort) (string, error) {
	var buf [64]byte
	b := append(buf[:0], "227 Entering Passive Mode ("...)
	b, err := appendSix(b, ap)
	if err != nil {
		return "", err
	}
	b = append(b, ")."...)
	return string(b), nil
}

// runEnd returns the end of the longest run "d,d,...,d" of comma-separated
// digit strings starting at s[i], which must be a digit. Taking whole runs
// keeps "1,2,3,4,5,6,7" from being read as a host-port and keeps the scan
// linear in len(s).
func runEnd(s string, i int) int {
	j := i + digitsAt(s, i)
	for j+1 < len(s) && s[j] == ',' && s[j+1] >= '0' && s[j+1] <= '9' {
		j += 1 + digitsAt(s, j+1)
	}
	return j
}
