package rewrite

import "strings"

// hiddenFeatures are FEAT features the proxy cannot carry through, so
// announcing them on the server's behalf would lead clients into commands
// that fail:
//
//   - AUTH, PBSZ and PROT (RFC 4217 section 6) and CCC (RFC 4217
//     section 13), the features of TLS, which the proxy does not offer yet;
//   - MODE, announced by servers for transfer modes beyond stream mode,
//     such as "MODE Z" (deflate), while the proxy refuses every mode but S
//     (RFC 959 section 3.4). Stream mode needs no announcement (RFC 959
//     section 5.1 makes it part of the minimum implementation), so the
//     whole line goes, whatever modes it lists.
var hiddenFeatures = [...]string{"AUTH", "PBSZ", "PROT", "CCC", "MODE"}

// HideFeature reports whether a line of a 211 reply to FEAT (RFC 2389
// section 3.2) announces a feature that must be hidden from the client.
// The feature name is the first word after the leading spaces and is
// matched case-insensitively; "211-" and "211 " lines are never hidden.
func HideFeature(line string) bool {
	s := strings.TrimLeft(line, " ")
	name, _, _ := strings.Cut(s, " ")
	for _, f := range hiddenFeatures {
		if strings.EqualFold(name, f) {
			return true
		}
	}
	return false
}
