package rewrite

import (
	"bytes"
	"fmt"
	"testing"
)

func TestStripTelnet(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain", "NOOP", "NOOP"},
		{"empty", "", ""},
		// RFC 959 section 4.1.3: ABOR preceded by Telnet IP and Synch (DM).
		{"abor with IP and DM", "\xff\xf4\xff\xf2ABOR", "ABOR"},
		{"abor with IP, IAC, DM", "\xff\xf4\xff\xff\xf2ABOR", "\xff\xf2ABOR"},
		{"escaped IAC", "RETR a\xff\xffb", "RETR a\xffb"},
		{"two escaped IACs", "\xff\xff\xff\xff", "\xff\xff"},
		{"will", "\xff\xfb\x01NOOP", "NOOP"},
		{"wont", "NO\xff\xfc\x03OP", "NOOP"},
		{"do", "NOOP\xff\xfd\x18", "NOOP"},
		{"dont truncated", "NOOP\xff\xfe", "NOOP"},
		{"subnegotiation", "\xff\xfa\x18\x00VT100\xff\xf0NOOP", "NOOP"},
		{"subnegotiation with escaped IAC", "\xff\xfa\x18\xff\xff\xf0x\xff\xf0NOOP", "NOOP"},
		{"unterminated subnegotiation", "NOOP\xff\xfa\x18abc", "NOOP"},
		{"nop, ayt, ao", "\xff\xf1N\xff\xf6O\xff\xf5OP", "NOOP"},
		{"trailing IAC", "NOOP\xff", "NOOP"},
		{"lone IAC", "\xff", ""},
		{"utf-8 untouched", "RETR f\xc3\xa9", "RETR f\xc3\xa9"},
	}
	for _, tt := range tests {
		in := []byte(tt.in)
		got := StripTelnet(in)
		if string(got) != tt.want {
			t.Errorf("%s: StripTelnet(%q) = %q, want %q", tt.name, tt.in, got, tt.want)
		}
		if len(got) > 0 && &got[0] != &in[0] {
			t.Errorf("%s: StripTelnet did not work in place", tt.name)
		}
	}
}

func TestStripTelnetAllocs(t *testing.T) {
	line := []byte("\xff\xf4\xff\xf2ABOR")
	if n := testing.AllocsPerRun(100, func() { StripTelnet(line) }); n != 0 {
		t.Errorf("StripTelnet allocates %v times", n)
	}
}

func ExampleStripTelnet() {
	// ABOR as RFC 959 section 4.1.3 has clients send it: Telnet IP, then
	// Synch (whose data byte is DM), then the command.
	line := []byte("\xff\xf4\xff\xf2ABOR")
	fmt.Printf("%q\n", StripTelnet(line))
	// Output: "ABOR"
}

// escapeIAC doubles every 0xFF byte, as a Telnet sender does with data.
func escapeIAC(b []byte) []byte {
	return bytes.ReplaceAll(b, []byte{iac}, []byte{iac, iac})
}

// FuzzStripTelnet checks that StripTelnet never grows or reallocates its
// input, leaves lines without IAC alone, and undoes IAC escaping: for any
// data, StripTelnet(escape(data)) == data.
func FuzzStripTelnet(f *testing.F) {
	for _, s := range []string{"NOOP", "\xff\xf4\xff\xf2ABOR", "\xff\xff", "\xff\xfa\x18\xff\xff\xf0x\xff\xf0NOOP", "\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in := bytes.Clone(data)
		out := StripTelnet(in)
		if len(out) > len(data) {
			t.Fatalf("output %q longer than input %q", out, data)
		}
		if len(out) > 0 && &out[0] != &in[0] {
			t.Fatalf("output does not alias input")
		}
		if bytes.IndexByte(data, iac) < 0 && !bytes.Equal(out, data) {
			t.Fatalf("line without IAC changed: %q -> %q", data, out)
		}
		if got := StripTelnet(escapeIAC(data)); !bytes.Equal(got, data) {
			t.Fatalf("StripTelnet(escape(%q)) = %q", data, got)
		}
	})
}
