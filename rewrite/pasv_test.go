package rewrite

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestParsePASVReply(t *testing.T) {
	tests := []struct {
		text    string
		want    string
		wantErr error
	}{
		// vsftpd
		{"227 Entering Passive Mode (127,0,0,1,78,52).", "127.0.0.1:20020", nil},
		// pure-ftpd, proftpd
		{"227 Entering Passive Mode (127,0,0,1,117,48)", "127.0.0.1:30000", nil},
		// Windows IIS
		{"227 Entering Passive Mode (10,0,0,5,195,149).", "10.0.0.5:50069", nil},
		// RFC 1123 section 4.1.2.6 style: no parentheses at all.
		{"227 =127,0,0,1,4,1", "127.0.0.1:1025", nil},
		{"227 Passive 10,0,0,5,4,1", "10.0.0.5:1025", nil},
		{"Entering Passive Mode (10,0,0,5,4,1)", "10.0.0.5:1025", nil},
		{"227-Entering Passive Mode (10,0,0,5,4,1)", "10.0.0.5:1025", nil},
		{"227 Entering Passive Mode (0,0,0,0,4,1)", "0.0.0.0:1025", nil},
		// Numbers that are not a six-number run are skipped.
		{"227 Mode 2, then (10,0,0,5,4,1)", "10.0.0.5:1025", nil},
		{"227 ok 1,2,3,4,5,6,7 (10,0,0,5,4,1)", "10.0.0.5:1025", nil},

		{"227 Entering Passive Mode (256,0,0,1,4,1).", "", ErrAddress},
		{"227 Entering Passive Mode (10,0,0,1000,4,1).", "", ErrAddress},
		{"227 Entering Passive Mode (10,0,0,5,99999999999999999999,1).", "", ErrPort},
		{"227 Entering Passive Mode (10,0,0,5,4,256).", "", ErrPort},
		{"227 Entering Passive Mode (10,0,0,5,0,0).", "", ErrPort},
		{"227 Entering Passive Mode (-10,0,0,5,4,1).", "", ErrSyntax},
		{"227 Entering Passive Mode (10,0,0,5,4).", "", ErrSyntax},
		{"227 Entering Passive Mode (10,0,0,5,4,1,2).", "", ErrSyntax},
		{"227 Entering Passive Mode (10,0,0,5,,4,1).", "", ErrSyntax},
		{"227 Entering Passive Mode (10, 0, 0, 5, 4, 1).", "", ErrSyntax},
		{"227 Entering Passive Mode", "", ErrSyntax},
		{"", "", ErrSyntax},
	}
	for _, tt := range tests {
		got, err := ParsePASVReply(tt.text)
		if !checkErr(t, fmt.Sprintf("ParsePASVReply(%q)", tt.text), err, tt.wantErr) || err != nil {
			continue
		}
		if got.String() != tt.want {
			t.Errorf("ParsePASVReply(%q) = %v, want %v", tt.text, got, tt.want)
		}
	}
}

// TestParsePASVReplyErrorQuotesReply checks that a bad value in a 227
// reply is reported with the reply, which comes from the server and is
// what an operator needs to see; the shared host-port check itself quotes
// nothing, as PORT arguments come from clients.
func TestParsePASVReplyErrorQuotesReply(t *testing.T) {
	const text = "227 Entering Passive Mode (10,0,0,1000,4,1)."
	_, err := ParsePASVReply(text)
	want := `octet h4 above 255 in 227 reply "` + text + `"`
	if !errors.Is(err, ErrAddress) || !strings.HasSuffix(err.Error(), want) {
		t.Fatalf("ParsePASVReply(%q) error = %v, want ErrAddress ending in %s", text, err, want)
	}
}

func TestFormatPASVReply(t *testing.T) {
	tests := []struct {
		ap      netip.AddrPort
		want    string
		wantErr error
	}{
		{netip.MustParseAddrPort("127.0.0.1:20020"), "227 Entering Passive Mode (127,0,0,1,78,52).", nil},
		{netip.MustParseAddrPort("[::ffff:203.0.113.7]:21000"), "227 Entering Passive Mode (203,0,113,7,82,8).", nil},
		{netip.MustParseAddrPort("[2001:db8::1]:21000"), "", ErrAddress},
		{netip.AddrPort{}, "", ErrAddress},
		{netip.MustParseAddrPort("127.0.0.1:0"), "", ErrPort},
	}
	for _, tt := range tests {
		got, err := FormatPASVReply(tt.ap)
		if checkErr(t, fmt.Sprintf("FormatPASVReply(%v)", tt.ap), err, tt.wantErr) && got != tt.want {
			t.Errorf("FormatPASVReply(%v) = %q, want %q", tt.ap, got, tt.want)
		}
	}
}

func ExampleFormatPASVReply() {
	reply, err := FormatPASVReply(netip.MustParseAddrPort("203.0.113.7:21000"))
	if err != nil {
		panic(err)
	}
	fmt.Println(reply)
	// Output: 227 Entering Passive Mode (203,0,113,7,82,8).
}

func ExampleParsePASVReply() {
	ap, err := ParsePASVReply("227 Entering Passive Mode (10,0,0,5,195,149).")
	if err != nil {
		panic(err)
	}
	fmt.Println(ap)
	// Output: 10.0.0.5:50069
}

// FuzzParsePASVReply checks that an accepted reply formats and parses back
// to the same address and port, and that errors wrap a sentinel.
func FuzzParsePASVReply(f *testing.F) {
	for _, s := range []string{
		"227 Entering Passive Mode (127,0,0,1,78,52).",
		"227 =127,0,0,1,4,1",
		"227 Entering Passive Mode (-10,0,0,5,4,1).",
		"227 1,2,3,4,5,6,7",
		"227 Entering Passive Mode (10,0,0,5,0,0).",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		ap, err := ParsePASVReply(text)
		if err != nil {
			if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrAddress) && !errors.Is(err, ErrPort) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		s, err := FormatPASVReply(ap)
		if err != nil {
			t.Fatalf("FormatPASVReply(%v): %v", ap, err)
		}
		ap2, err := ParsePASVReply(s)
		if err != nil || ap2 != ap {
			t.Fatalf("ParsePASVReply(%q) = %v, %v; want %v", s, ap2, err, ap)
		}
	})
}
