package proxy

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// v2Header formats a v2 header from src to dst, with TLVs if given.
func v2Header(t testing.TB, src, dst string, tlvs ...proxyproto.TLV) []byte {
	t.Helper()
	h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(src)), net.TCPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
	if len(tlvs) > 0 {
		if err := h.SetTLVs(tlvs); err != nil {
			t.Fatal(err)
		}
	}
	b, err := h.Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReadProxyHeader(t *testing.T) {
	local := append(append([]byte{}, sigV2...), 0x20, 0x00, 0x00, 0x00) // v2 LOCAL, no addresses
	v2 := v2Header(t, "192.0.2.10:40000", "198.51.100.1:21")
	v2TLV := v2Header(t, "192.0.2.10:40000", "198.51.100.1:21",
		proxyproto.TLV{Type: proxyproto.PP2_TYPE_AUTHORITY, Value: []byte("ftp.example.com")},
		proxyproto.TLV{Type: proxyproto.PP2_TYPE_UNIQUE_ID, Value: []byte("abc")})
	oversized := append(append([]byte{}, v2[:14]...), 0xff, 0xff)
	tests := []struct {
		name     string
		in       []byte
		src, dst string // "" for the connection's own addresses
		err      error
	}{
		{"v1 tcp4", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 40000 21\r\n"), "192.0.2.10:40000", "198.51.100.1:21", nil},
		{"v1 tcp6", []byte("PROXY TCP6 2001:db8::10 2001:db8::1 40000 21\r\n"), "[2001:db8::10]:40000", "[2001:db8::1]:21", nil},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), "", "", nil},
		{"v2", v2, "192.0.2.10:40000", "198.51.100.1:21", nil},
		{"v2 with TLVs", v2TLV, "192.0.2.10:40000", "198.51.100.1:21", nil},
		{"v2 local", local, "", "", nil},
		{"no header", []byte("USER anonymous\r\n"), "", "", errNoProxyHeader},
		{"nothing at all", nil, "", "", errNoProxyHeader},
		{"v1 cut short", []byte("PROXY TCP4 192.0.2.10"), "", "", errBadProxyHeader},
		{"v1 without CR", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 40000 21\n"), "", "", errBadProxyHeader},
		{"v1 too long", append([]byte("PROXY TCP4 "), bytes.Repeat([]byte("1"), 200)...), "", "", errBadProxyHeader},
		{"v1 bad address", []byte("PROXY TCP4 192.0.2.300 198.51.100.1 40000 21\r\n"), "", "", errBadProxyHeader},
		{"v2 cut short", v2[:20], "", "", errBadProxyHeader},
		{"v2 bad signature", append([]byte("\r\n\r\nXXXXXXXX"), v2[12:]...), "", "", errBadProxyHeader},
		{"v2 oversized", oversized, "", "", errBadProxyHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			after := []byte("USER x\r\n")
			go func() {
				a.Write(tt.in)
				if tt.err == nil {
					a.Write(after)
				}
				a.Close()
			}()
			src, dst, err := readProxyHeader(b, time.Now().Add(2*time.Second))
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.src == "" {
				if src.IsValid() || dst.IsValid() {
					t.Fatalf("got %v %v, want the connection's own addresses", src, dst)
				}
			} else if src != netip.MustParseAddrPort(tt.src) || dst != netip.MustParseAddrPort(tt.dst) {
				t.Fatalf("got %v -> %v, want %s -> %s", src, dst, tt.src, tt.dst)
			}
			// Exactly the header was read: what follows is still there.
			rest := make([]byte, len(after))
			b.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := b.Read(rest); err != nil || !bytes.Equal(rest, after) {
				t.Fatalf("after the header: %q, %v; want %q", rest, err, after)
			}
		})
	}
}

func TestProxyHeaderSniffer(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  bool
	}{
		{"v1", []string{"PROXY TCP4 1.2.3.4 5.6.7.8 1 2"}, true},
		{"v2 signature", []string{"", "", "\x00", "QUIT"}, true},
		{"commands", []string{"USER a", "PASS b", "PROXY later is a command"}, false},
		{"blank lines", []string{"", "", "NOOP"}, false},
	}
	for _, tt := range tests {
		var s proxyHeaderSniffer
		got := false
		for _, l := range tt.lines {
			got = got || s.untrusted([]byte(l))
		}
		if got != tt.want {
			t.Errorf("%s: untrusted = %v, want %v", tt.name, got, tt.want)
		}
	}
}
