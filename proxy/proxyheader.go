package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
)

// PROXY protocol (HAProxy's proxy-protocol.txt): a load balancer in front of
// the proxy prepends a header that carries the real client's address.

var (
	errNoProxyHeader        = errors.New("proxy: PROXY header missing")
	errBadProxyHeader       = errors.New("proxy: PROXY header malformed")
	errUntrustedProxyHeader = errors.New("proxy: PROXY header from an untrusted peer")
)

const (
	maxV1Header = 107 // section 2.1: the longest v1 line with its CRLF
	maxV2Header = 16 + 4096
)

var sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")

// readProxyHeader reads a PROXY header, v1 or v2, from c by deadline. It
// reads exactly the header's bytes and nothing after it, so the rest stays
// in the socket: data connections keep being spliced by the kernel, and the
// control connection's first command is read as usual.
//
// The returned addresses are the client's and the address it connected to;
// both are invalid for a v2 LOCAL header (the load balancer's own health
// check), which stands for the connection itself.
func readProxyHeader(c net.Conn, deadline time.Time) (src, dst netip.AddrPort, err error) {
	c.SetReadDeadline(deadline)
	defer c.SetReadDeadline(time.Time{})
	raw, err := readHeaderBytes(c)
	if err != nil {
		return src, dst, err
	}
	h, err := proxyproto.Read(bufio.NewReaderSize(bytes.NewReader(raw), len(raw)+16))
	if err != nil {
		return src, dst, fmt.Errorf("%w: %v", errBadProxyHeader, err)
	}
	if h.Command.IsLocal() || h.TransportProtocol.IsUnspec() {
		// LOCAL (v2) and UNKNOWN (v1): the load balancer speaks for
		// itself, and the connection's own addresses stand.
		return src, dst, nil
	}
	s, d, ok := h.TCPAddrs()
	if !ok {
		return src, dst, fmt.Errorf("%w: not a TCP connection", errBadProxyHeader)
	}
	src, dst = s.AddrPort(), d.AddrPort()
	return netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()), nil
}

// readHeaderBytes reads one header: a v1 line up to its CRLF, one byte at a
// time, or a v2 header by its length field.
func readHeaderBytes(r io.Reader) ([]byte, error) {
	buf := make([]byte, 16, 128)
	if _, err := io.ReadFull(r, buf[:1]); err != nil {
		return nil, fmt.Errorf("%w: %v", errNoProxyHeader, err)
	}
	switch buf[0] {
	case 'P':
		buf = buf[:1]
		b := make([]byte, 1)
		for len(buf) < maxV1Header {
			if _, err := io.ReadFull(r, b); err != nil {
				return nil, fmt.Errorf("%w: v1 line cut short: %v", errBadProxyHeader, err)
			}
			buf = append(buf, b[0])
			if b[0] == '\n' {
				if !bytes.HasPrefix(buf, []byte("PROXY ")) || buf[len(buf)-2] != '\r' {
					return nil, fmt.Errorf("%w: %q", errBadProxyHeader, buf)
				}
				return buf, nil
			}
		}
		return nil, fmt.Errorf("%w: v1 line longer than %d bytes", errBadProxyHeader, maxV1Header)
	case sigV2[0]:
		if _, err := io.ReadFull(r, buf[1:16]); err != nil {
			return nil, fmt.Errorf("%w: v2 header cut short: %v", errBadProxyHeader, err)
		}
		if !bytes.Equal(buf[:12], sigV2) {
			return nil, fmt.Errorf("%w: bad v2 signature", errBadProxyHeader)
		}
		n := int(binary.BigEndian.Uint16(buf[14:16]))
		if 16+n > maxV2Header {
			return nil, fmt.Errorf("%w: v2 header of %d bytes", errBadProxyHeader, 16+n)
		}
		buf = append(buf, make([]byte, n)...)
		if _, err := io.ReadFull(r, buf[16:]); err != nil {
			return nil, fmt.Errorf("%w: v2 header cut short: %v", errBadProxyHeader, err)
		}
		return buf, nil
	}
	return nil, fmt.Errorf("%w: first byte %q", errNoProxyHeader, buf[0])
}

// writeProxyHeader opens the upstream connection with a header that carries
// the session's client address, for servers that read it.
func writeProxyHeader(c net.Conn, version byte, src, dst netip.AddrPort, deadline time.Time) error {
	// Both addresses must be of one family; a client of the other family
	// than the proxy's own address is mapped into IPv6.
	if src.Addr().Is4() != dst.Addr().Is4() {
		src = netip.AddrPortFrom(netip.AddrFrom16(src.Addr().As16()), src.Port())
		dst = netip.AddrPortFrom(netip.AddrFrom16(dst.Addr().As16()), dst.Port())
	}
	h := proxyproto.HeaderProxyFromAddrs(version, net.TCPAddrFromAddrPort(src), net.TCPAddrFromAddrPort(dst))
	c.SetWriteDeadline(deadline)
	defer c.SetWriteDeadline(time.Time{})
	if _, err := h.WriteTo(c); err != nil {
		return fmt.Errorf("proxy: write PROXY header: %w", err)
	}
	return nil
}

// proxyHeaderSniffer spots a PROXY header sent by a peer that is not
// trusted to send one: its lines would otherwise reach the command parser.
// A v1 header is a first line starting "PROXY "; a v2 signature reads as
// the lines "", "", "\x00", "QUIT".
type proxyHeaderSniffer struct {
	lines int
	v2    bool
}

// untrusted reports whether line, the next line from the client, shows a
// PROXY header.
func (p *proxyHeaderSniffer) untrusted(line []byte) bool {
	if p.lines > 2 {
		return false
	}
	p.lines++
	switch p.lines {
	case 1:
		if bytes.HasPrefix(line, []byte("PROXY ")) {
			return true
		}
		p.v2 = len(line) == 0
	case 2:
		p.v2 = p.v2 && len(line) == 0
	case 3:
		return p.v2 && string(line) == "\x00"
	}
	return false
}
