package rewrite

import "strings"

// hiddenFeatures are the FEAT features of TLS (RFC 4217 section 6 lists
// AUTH, PBSZ and PROT; CCC is RFC 4217 section 13). The proxy does not offer
// TLS yet, so announcing them on the server's behalf would lead clients
// into an AUTH TLS the proxy cannot carry through.
var hiddenFeatures = [...]string{"AUTH", "PBSZ", "PROT", "CCC"}

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
