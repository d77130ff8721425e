package rewrite

import "testing"

func TestHideFeature(t *testing.T) {
	tests := []struct {
		line string
		want bool
	}{
		{" AUTH TLS", true},
		{" AUTH TLS;TLS-C;SSL;TLS-P;", true},
		{" auth tls", true},
		{"  AUTH", true},
		{"AUTH SSL", true},
		{" PBSZ", true},
		{" PROT", true},
		{" prot C;P", true},
		{" CCC", true},
		// The proxy refuses transfer modes other than S.
		{" MODE Z", true},
		{" mode z", true},
		{" MODE Z;", true},
		{" MODE", true},
		{" MODE B", true},
		{" MODEZ", false},
		{" REST STREAM", false},
		{" EPSV", false},
		{" MLST type*;size*;modify*;", false},
		{" UTF8", false},
		{" AUTHX", false},
		{" PROTO", false},
		{"211-Features:", false},
		{"211 End", false},
		{"", false},
		{"   ", false},
	}
	for _, tt := range tests {
		if got := HideFeature(tt.line); got != tt.want {
			t.Errorf("HideFeature(%q) = %v, want %v", tt.line, got, tt.want)
		}
	}
}
