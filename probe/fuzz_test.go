package probe

import (
	"errors"
	"net"
	"strconv"
	"testing"
)

// FuzzParseHostPort: a target the command line accepts has a host and a
// port, and written back as HOST:PORT it parses to the same pair.
func FuzzParseHostPort(f *testing.F) {
	f.Add("ftp.example.net")
	f.Add("ftp.example.net:2121")
	f.Add("[2001:db8::1]:21")
	f.Add("2001:db8::1")
	f.Add("ftp://user@ftp.example.net:990/dir")
	f.Add("ftp://[::1")
	f.Add("host:0")
	f.Fuzz(func(t *testing.T, s string) {
		host, port, err := ParseHostPort(s, 21)
		if err != nil {
			if !errors.Is(err, ErrUsage) {
				t.Fatalf("ParseHostPort(%q): %v does not wrap ErrUsage", s, err)
			}
			return
		}
		if host == "" || port == 0 {
			t.Fatalf("ParseHostPort(%q) = %q, %d", s, host, port)
		}
		hp := net.JoinHostPort(host, strconv.Itoa(int(port)))
		h2, p2, err := ParseHostPort(hp, 21)
		if err != nil || h2 != host || p2 != port {
			t.Fatalf("ParseHostPort(%q) = %q, %d; again from %q: %q, %d, %v", s, host, port, hp, h2, p2, err)
		}
	})
}
