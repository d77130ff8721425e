package rewrite

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseEPSVReply parses the text of a 229 reply to EPSV, with or without
// its code, and returns the port. RFC 2428 section 3 gives the form
//
//	229 Entering Extended Passive Mode (|||6446|)
//
// where the text before the parenthesis is free, the three fields before the
// port are delimiters with nothing between them (the client reuses the
// control connection's address), and the delimiter may be any byte from 33
// to 126, the same for all four. The first "(...)" group of that shape is
// used; none is ErrSyntax, a port outside 1..65535 is ErrPort.
func ParseEPSVReply(text string) (uint16, error) {
	s := text
	for {
		open := strings.IndexByte(s, '(')
		if open < 0 {
			return 0, fmt.Errorf("%w: no (<d><d><d>port<d>) in 229 reply %q", ErrSyntax, prefix([]byte(text), 64))
		}
		s = s[open+1:]
		end := strings.IndexByte(s, ')')
		if end < 0 {
			continue // no group can follow either; the next round ends it
		}
		if digits, ok := epsvGroup(s[:end]); ok {
			port, err := parsePort(digits)
			if err != nil {
				return 0, fmt.Errorf("%w in 229 reply %q", err, prefix([]byte(text), 64))
			}
			return port, nil
		}
	}
}

// epsvGroup reports whether g, the text between parentheses, is
// <d><d><d>port<d>, and returns the port text.
func epsvGroup(g string) (port string, ok bool) {
	if len(g) < 5 {
		return "", false
	}
	d := g[0]
	if d < 33 || d > 126 || g[1] != d || g[2] != d || g[len(g)-1] != d {
		return "", false
	}
	port = g[3 : len(g)-1]
	if digitsAt(port, 0) != len(port) {
		return "", false
	}
	return port, true
}

// FormatEPSVReply returns the 229 reply announcing port, without CRLF:
// "229 Entering Extended Passive Mode (|||port|)" (RFC 2428 section 3).
func FormatEPSVReply(port uint16) string {
	var buf [64]byte
	b := append(buf[:0], "229 Entering Extended Passive Mode (|||"...)
	b = strconv.AppendUint(b, uint64(port), 10)
	b = append(b, "|)"...)
	return string(b)
}
