package rewrite

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

func TestParseEPRT(t *testing.T) {
	tests := []struct {
		arg     string
		want    string
		wantErr error
	}{
		// RFC 2428 section 2 examples.
		{"|1|132.235.1.2|6275|", "132.235.1.2:6275", nil},
		{"|2|1080::8:800:200C:417A|5282|", "[1080::8:800:200c:417a]:5282", nil},
		{"|2|::1|6275|", "[::1]:6275", nil},
		{"!1!132.235.1.2!6275!", "132.235.1.2:6275", nil},
		{"~2~::1~65535~", "[::1]:65535", nil},
		{" |1|10.0.0.5|1| ", "10.0.0.5:1", nil},
		{"|2|::ffff:10.0.0.5|21|", "[::ffff:10.0.0.5]:21", nil},

		{"|3|132.235.1.2|6275|", "", ErrFamily},
		{"|0|132.235.1.2|6275|", "", ErrFamily},
		{"|1|::1|6275|", "", ErrAddress},
		{"|1|::ffff:10.0.0.5|6275|", "", ErrAddress},
		{"|2|132.235.1.2|6275|", "", ErrAddress},
		{"|2|fe80::1%eth0|6275|", "", ErrAddress},
		{"|1|256.0.0.1|6275|", "", ErrAddress},
		{"|1|010.0.0.1|6275|", "", ErrAddress},
		{"|1|ftp.example.com|6275|", "", ErrAddress},
		{"|1||6275|", "", ErrAddress},
		{"|1|132.235.1.2|0|", "", ErrPort},
		{"|1|132.235.1.2|65536|", "", ErrPort},
		{"|1|132.235.1.2|70000|", "", ErrPort},
		{"|1|132.235.1.2|99999999999999999999|", "", ErrPort},
		{"|1|132.235.1.2|-1|", "", ErrSyntax},
		{"|1|132.235.1.2||", "", ErrSyntax},
		{"|1|132.235.1.2|6275", "", ErrSyntax},
		{"|1|132.235.1.2|6275!", "", ErrSyntax},
		{"|1|132.235.1.2!6275|", "", ErrSyntax},
		{"|1|132.235.1.2|6275|6|", "", ErrSyntax},
		{"|x|132.235.1.2|6275|", "", ErrSyntax},
		{"||132.235.1.2|6275|", "", ErrSyntax},
		{" 1 132.235.1.2 6275 ", "", ErrSyntax},
		{"\x7f1\x7f132.235.1.2\x7f6275\x7f", "", ErrSyntax},
		{"", "", ErrSyntax},
		{"|", "", ErrSyntax},
	}
	for _, tt := range tests {
		got, err := ParseEPRT(tt.arg)
		if !checkErr(t, fmt.Sprintf("ParseEPRT(%q)", tt.arg), err, tt.wantErr) || err != nil {
			continue
		}
		if got.String() != tt.want {
			t.Errorf("ParseEPRT(%q) = %v, want %v", tt.arg, got, tt.want)
		}
		if tt.arg[1] == '2' && !got.Addr().Is6() {
			t.Errorf("ParseEPRT(%q) returned non-IPv6 %v for family 2", tt.arg, got)
		}
	}
}

// TestParseEPRTErrorsQuoteNothing checks that errors about a client's EPRT
// argument, which get logged, name the field at fault without quoting any
// of it: "qzwxjv" or its digits "987" stand where a secret could be.
func TestParseEPRTErrorsQuoteNothing(t *testing.T) {
	tests := []struct {
		arg, want string
	}{
		{"q", "EPRT argument too short, want <d>family<d>address<d>port<d>"},
		{"\x7fqzwxjv\x7f", "EPRT delimiter 0x7f is not a byte from 33 to 126"},
		{"|1|qzwxjv|1", "EPRT argument does not end with its delimiter"},
		{"|1|qzwxjv|", "EPRT argument has 2 fields, want 3"},
		{"|1|qzwxjv|1|2|", "EPRT argument has 4 fields, want 3"},
		{"|987|1.2.3.4|1|", "EPRT network protocol is neither 1 nor 2"},
		{"|qzwxjv|1.2.3.4|1|", "EPRT network protocol is not a number"},
		{"|1|qzwxjv|1|", "EPRT address is not an IP address literal"},
		{"|2|fe80::1%qzwxjv|1|", "EPRT address has a zone"},
		{"|1|::987|1|", "EPRT address is not of network protocol 1"},
		{"|1|1.2.3.4|qzwxjv|", "port is not a decimal number"},
		{"|1|1.2.3.4|98765|", "port out of range 1-65535"},
	}
	for _, tt := range tests {
		_, err := ParseEPRT(tt.arg)
		if err == nil {
			t.Errorf("ParseEPRT(%q) succeeded", tt.arg)
			continue
		}
		if msg := err.Error(); !strings.HasSuffix(msg, ": "+tt.want) || leaks(msg, "qzwxjv") || strings.Contains(msg, "987") {
			t.Errorf("ParseEPRT(%q) error = %q, want it to end in %q and quote nothing", tt.arg, msg, tt.want)
		}
	}
}

func TestFormatEPRT(t *testing.T) {
	tests := []struct {
		ap   netip.AddrPort
		want string
	}{
		{netip.MustParseAddrPort("132.235.1.2:6275"), "|1|132.235.1.2|6275|"},
		{netip.MustParseAddrPort("[1080::8:800:200C:417A]:5282"), "|2|1080::8:800:200c:417a|5282|"},
		{netip.MustParseAddrPort("[::ffff:10.0.0.5]:21"), "|1|10.0.0.5|21|"},
		{netip.MustParseAddrPort("[fe80::1%eth0]:21"), "|2|fe80::1|21|"},
	}
	for _, tt := range tests {
		if got := FormatEPRT(tt.ap); got != tt.want {
			t.Errorf("FormatEPRT(%v) = %q, want %q", tt.ap, got, tt.want)
		}
	}
}

func ExampleFormatEPRT() {
	fmt.Println("EPRT " + FormatEPRT(netip.MustParseAddrPort("132.235.1.2:6275")))
	fmt.Println("EPRT " + FormatEPRT(netip.MustParseAddrPort("[2001:db8::7]:5282")))
	// Output:
	// EPRT |1|132.235.1.2|6275|
	// EPRT |2|2001:db8::7|5282|
}

// FuzzParseEPRT checks that an accepted argument formats and parses back to
// the same endpoint (IPv4-mapped addresses come back unmapped, as
// FormatEPRT sends them as family 1), and that errors wrap a sentinel.
func FuzzParseEPRT(f *testing.F) {
	for _, s := range []string{"|1|132.235.1.2|6275|", "|2|1080::8:800:200C:417A|5282|", "!2!::ffff:1.2.3.4!1!", "|3|x|1|", "|2|fe80::1%eth0|1|", "|1|1.2.3.4|0|"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, arg string) {
		ap, err := ParseEPRT(arg)
		if err != nil {
			if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrAddress) && !errors.Is(err, ErrPort) && !errors.Is(err, ErrFamily) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		if ap.Port() == 0 || ap.Addr().Zone() != "" {
			t.Fatalf("ParseEPRT(%q) = %v", arg, ap)
		}
		s := FormatEPRT(ap)
		ap2, err := ParseEPRT(s)
		want := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if err != nil || ap2 != want {
			t.Fatalf("ParseEPRT(%q) = %v, %v; want %v", s, ap2, err, want)
		}
	})
}
