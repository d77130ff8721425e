package rewrite

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParseEPSVReply(t *testing.T) {
	tests := []struct {
		text    string
		want    uint16
		wantErr error
	}{
		// RFC 2428 section 3.
		{"229 Entering Extended Passive Mode (|||6446|)", 6446, nil},
		{"229 Entering Extended Passive Mode (!!!6446!)", 6446, nil},
		{"229 Entering Extended Passive Mode (|||6446|).", 6446, nil},
		{"229 EPSV ok (|||1|)", 1, nil},
		{"229 (~~~65535~)", 65535, nil},
		{"(|||06446|)", 6446, nil},
		{"229 Extended (mode) (|||6446|)", 6446, nil},

		{"229 Entering Extended Passive Mode (||6446|)", 0, ErrSyntax},
		{"229 Entering Extended Passive Mode (|||6446)", 0, ErrSyntax},
		{"229 Entering Extended Passive Mode (|!|6446|)", 0, ErrSyntax},
		{"229 Entering Extended Passive Mode (|||6446!)", 0, ErrSyntax},
		{"229 Entering Extended Passive Mode (|||-1|)", 0, ErrSyntax},
		{"229 Entering Extended Passive Mode (|||64 46|)", 0, ErrSyntax},
		{"229 Entering Extended Passive Mode (|||||)", 0, ErrSyntax},
		{"229 Entering Extended Passive Mode (   6446 )", 0, ErrSyntax},
		{"229 Entering Extended Passive Mode (|1|::1|6446|)", 0, ErrSyntax},
		{"229 Entering Extended Passive Mode |||6446|", 0, ErrSyntax},
		{"229 Entering Extended Passive Mode (|||6446|", 0, ErrSyntax},
		{"", 0, ErrSyntax},
		{"229 Entering Extended Passive Mode (|||0|)", 0, ErrPort},
		{"229 Entering Extended Passive Mode (|||70000|)", 0, ErrPort},
		{"229 Entering Extended Passive Mode (|||65536|)", 0, ErrPort},
	}
	for _, tt := range tests {
		got, err := ParseEPSVReply(tt.text)
		if checkErr(t, fmt.Sprintf("ParseEPSVReply(%q)", tt.text), err, tt.wantErr) && got != tt.want {
			t.Errorf("ParseEPSVReply(%q) = %d, want %d", tt.text, got, tt.want)
		}
	}
}

// TestParseEPSVReplyErrorQuotesReply checks that a port out of range in a
// 229 reply is reported with the reply, which comes from the server; the
// shared port check itself quotes nothing, as EPRT ports come from clients.
func TestParseEPSVReplyErrorQuotesReply(t *testing.T) {
	const text = "229 Entering Extended Passive Mode (|||70000|)"
	_, err := ParseEPSVReply(text)
	want := `port out of range 1-65535 in 229 reply "` + text + `"`
	if !errors.Is(err, ErrPort) || !strings.HasSuffix(err.Error(), want) {
		t.Fatalf("ParseEPSVReply(%q) error = %v, want ErrPort ending in %s", text, err, want)
	}
}

func ExampleFormatEPSVReply() {
	fmt.Println(FormatEPSVReply(6446))
	// Output: 229 Entering Extended Passive Mode (|||6446|)
}

// FuzzParseEPSVReply checks that an accepted reply formats and parses back
// to the same port, and that errors wrap a sentinel.
func FuzzParseEPSVReply(f *testing.F) {
	for _, s := range []string{"229 Entering Extended Passive Mode (|||6446|)", "(!!!6446!)", "(||6446|)", "(|||0|)", "(|||70000|)", "((|||1|)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		port, err := ParseEPSVReply(text)
		if err != nil {
			if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrPort) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		if port == 0 {
			t.Fatalf("ParseEPSVReply(%q) = 0", text)
		}
		s := FormatEPSVReply(port)
		port2, err := ParseEPSVReply(s)
		if err != nil || port2 != port {
			t.Fatalf("ParseEPSVReply(%q) = %d, %v; want %d", s, port2, err, port)
		}
	})
}
