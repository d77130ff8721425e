package rewrite

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// checkErr reports whether err matches want (nil meaning success), failing
// t if not.
func checkErr(t *testing.T, call string, err, want error) bool {
	t.Helper()
	if want == nil && err != nil || want != nil && !errors.Is(err, want) {
		t.Errorf("%s error = %v, want %v", call, err, want)
		return false
	}
	return true
}

func TestParsePORT(t *testing.T) {
	tests := []struct {
		arg     string
		want    string
		wantErr error
	}{
		{"127,0,0,1,4,1", "127.0.0.1:1025", nil},
		{"132,235,1,2,24,131", "132.235.1.2:6275", nil},
		{"  10,0,0,5,195,149 ", "10.0.0.5:50069", nil},
		{"0,0,0,0,0,1", "0.0.0.0:1", nil},
		{"255,255,255,255,255,255", "255.255.255.255:65535", nil},
		{"010,0,0,1,0,21", "10.0.0.1:21", nil},

		{"256,0,0,1,4,1", "", ErrAddress},
		{"1,2,3,999999999999999999999,4,1", "", ErrAddress},
		{"1,2,3,4,256,1", "", ErrPort},
		{"1,2,3,4,1,300", "", ErrPort},
		{"1,2,3,4,0,0", "", ErrPort},
		{"", "", ErrSyntax},
		{"1,2,3,4,5", "", ErrSyntax},
		{"1,2,3,4,5,6,7", "", ErrSyntax},
		{"1,2,3,4,5,", "", ErrSyntax},
		{",1,2,3,4,5,6", "", ErrSyntax},
		{"1,2,3,-4,5,6", "", ErrSyntax},
		{"1,2,3,+4,5,6", "", ErrSyntax},
		{"1, 2,3,4,5,6", "", ErrSyntax},
		{"1,,2,3,4,5,6", "", ErrSyntax},
		{"(1,2,3,4,5,6)", "", ErrSyntax},
		{"1.2.3.4,5,6", "", ErrSyntax},
		{"1,2,3,4,5,6\t", "", ErrSyntax},
		{"1,2,3,4,0x5,6", "", ErrSyntax},
	}
	for _, tt := range tests {
		got, err := ParsePORT(tt.arg)
		if !checkErr(t, fmt.Sprintf("ParsePORT(%q)", tt.arg), err, tt.wantErr) || err != nil {
			continue
		}
		if got.String() != tt.want {
			t.Errorf("ParsePORT(%q) = %v, want %v", tt.arg, got, tt.want)
		}
	}
}

// TestParsePORTErrorsQuoteNothing checks that errors about a client's PORT
// argument, which get logged, point at the fault without quoting the
// argument (digits here, which the messages use only as offsets).
func TestParsePORTErrorsQuoteNothing(t *testing.T) {
	tests := []struct {
		arg, want string
	}{
		{"", "PORT argument ends at offset 0, want h1,h2,h3,h4,p1,p2"},
		{"  987,654", "PORT argument ends at offset 9, want h1,h2,h3,h4,p1,p2"},
		{"987,654 ", "PORT argument ends at offset 7, want h1,h2,h3,h4,p1,p2"},
		{"987,654,x", "PORT argument has byte 0x78 at offset 8, want h1,h2,h3,h4,p1,p2"},
		{" 98,76,54,32,19,87,65", "PORT argument has byte 0x2c at offset 18, want h1,h2,h3,h4,p1,p2"},
		{"98,76,54,987,1,1", "octet h4 above 255"},
		{"98,76,54,32,987,1", "byte p1 above 255"},
	}
	for _, tt := range tests {
		_, err := ParsePORT(tt.arg)
		if err == nil {
			t.Errorf("ParsePORT(%q) succeeded", tt.arg)
			continue
		}
		if msg := err.Error(); !strings.HasSuffix(msg, ": "+tt.want) || strings.Contains(msg, "987") {
			t.Errorf("ParsePORT(%q) error = %q, want it to end in %q and quote nothing", tt.arg, msg, tt.want)
		}
	}
}

func TestFormatPORT(t *testing.T) {
	tests := []struct {
		ap      netip.AddrPort
		want    string
		wantErr error
	}{
		{netip.MustParseAddrPort("127.0.0.1:1025"), "127,0,0,1,4,1", nil},
		{netip.MustParseAddrPort("[::ffff:10.0.0.5]:50069"), "10,0,0,5,195,149", nil},
		{netip.MustParseAddrPort("255.255.255.255:65535"), "255,255,255,255,255,255", nil},
		{netip.MustParseAddrPort("[::1]:21"), "", ErrAddress},
		{netip.AddrPort{}, "", ErrAddress},
		{netip.MustParseAddrPort("127.0.0.1:0"), "", ErrPort},
	}
	for _, tt := range tests {
		got, err := FormatPORT(tt.ap)
		if checkErr(t, fmt.Sprintf("FormatPORT(%v)", tt.ap), err, tt.wantErr) && got != tt.want {
			t.Errorf("FormatPORT(%v) = %q, want %q", tt.ap, got, tt.want)
		}
	}
}

func ExampleFormatPORT() {
	arg, err := FormatPORT(netip.MustParseAddrPort("192.0.2.10:50000"))
	if err != nil {
		panic(err)
	}
	fmt.Println("PORT " + arg)
	// Output: PORT 192,0,2,10,195,80
}

// FuzzParsePORT checks that an accepted argument formats and parses back
// to the same address and port, and that errors wrap a sentinel.
func FuzzParsePORT(f *testing.F) {
	for _, s := range []string{"127,0,0,1,4,1", " 1,2,3,4,5,6 ", "256,0,0,1,4,1", "1,2,3,4,0,0", "1,2,3,4,5", "-1,2,3,4,5,6"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, arg string) {
		ap, err := ParsePORT(arg)
		if err != nil {
			if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrAddress) && !errors.Is(err, ErrPort) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		s, err := FormatPORT(ap)
		if err != nil {
			t.Fatalf("FormatPORT(%v): %v", ap, err)
		}
		ap2, err := ParsePORT(s)
		if err != nil || ap2 != ap {
			t.Fatalf("ParsePORT(%q) = %v, %v; want %v", s, ap2, err, ap)
		}
	})
}
