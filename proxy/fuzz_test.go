package proxy

import (
	"bufio"
	"bytes"
	"testing"

	proxyproto "github.com/pires/go-proxyproto"
)

// FuzzReadHeaderBytes: the PROXY header reader takes a prefix of its input,
// never more than a header can be, and what it accepts does not crash the
// parser behind it. Reading exactly the header is what keeps the bytes after
// it in the socket for the FTP session or the data relay.
func FuzzReadHeaderBytes(f *testing.F) {
	f.Add([]byte("PROXY TCP4 192.0.2.10 198.51.100.1 40000 21\r\nUSER x\r\n"))                                                // v1 and a command after it
	f.Add([]byte("PROXY TCP6 2001:db8::10 2001:db8::1 40000 21\r\n"))                                                         // v1 IPv6
	f.Add([]byte("PROXY UNKNOWN\r\n"))                                                                                        // v1 unknown
	f.Add(append(append([]byte{}, sigV2...), 0x21, 0x11, 0x00, 0x0c, 192, 0, 2, 10, 198, 51, 100, 1, 0x9c, 0x40, 0, 21, 'x')) // v2 TCP4
	f.Add(append(append([]byte{}, sigV2...), 0x20, 0x00, 0x00, 0x00))                                                         // v2 LOCAL
	f.Add(append(append([]byte{}, sigV2...), 0x21, 0x11, 0xff, 0xff))                                                         // v2 claiming 64 KiB
	f.Add([]byte("PROXY TCP4 192.0.2.10"))                                                                                    // cut short
	f.Add([]byte("USER anonymous\r\n"))                                                                                       // no header at all
	f.Fuzz(func(t *testing.T, in []byte) {
		raw, err := readHeaderBytes(bytes.NewReader(in))
		if err != nil {
			return
		}
		if !bytes.HasPrefix(in, raw) || len(raw) > maxV2Header {
			t.Fatalf("read %d bytes that are not a header-sized prefix of the input", len(raw))
		}
		proxyproto.Read(bufio.NewReaderSize(bytes.NewReader(raw), len(raw)+16))
	})
}
