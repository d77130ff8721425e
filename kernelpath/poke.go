package kernelpath

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// pokeMark marks the proxy's own probe segments (SO_MARK), which the
// table's raw output chain leaves untracked: as a new connection they
// would clash with the flow's own conntrack entry and be dropped.
const pokeMark = markBase | idMask

// A killed flow's peers are reset by the dead set at their next packet;
// a peer that sends nothing (a client waiting on its read, a server
// stalled) would keep its end open until its own timeout. poke makes each
// send one now: a bare ACK with a sequence number outside the window,
// sent as the other end would, is answered with a duplicate ACK (RFC 793,
// RFC 5961), which the dead set answers with a reset that carries the
// exact sequence number the peer expects.
func poke(orig, reply conntrack.Tuple) error {
	// The client, as the proxy's address it connected to.
	err1 := sendProbe(netip.AddrPortFrom(orig.IP.DestinationAddress, orig.Proto.DestinationPort),
		netip.AddrPortFrom(orig.IP.SourceAddress, orig.Proto.SourcePort))
	// The upstream, as the proxy's upstream-side address (the SNAT).
	err2 := sendProbe(netip.AddrPortFrom(reply.IP.DestinationAddress, reply.Proto.DestinationPort),
		netip.AddrPortFrom(reply.IP.SourceAddress, reply.Proto.SourcePort))
	if err1 != nil {
		return err1
	}
	return err2
}

// sendProbe sends one bare ACK segment from src to dst through a raw
// socket bound to src.
func sendProbe(src, dst netip.AddrPort) error {
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	family := unix.AF_INET
	if src.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return fmt.Errorf("kernelpath: raw socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(pokeMark)); err != nil {
		return fmt.Errorf("kernelpath: probe mark: %w", err)
	}
	var from, to unix.Sockaddr
	if family == unix.AF_INET {
		from, to = &unix.SockaddrInet4{Addr: src.Addr().As4()}, &unix.SockaddrInet4{Addr: dst.Addr().As4()}
	} else {
		from, to = &unix.SockaddrInet6{Addr: src.Addr().As16()}, &unix.SockaddrInet6{Addr: dst.Addr().As16()}
	}
	if err := unix.Bind(fd, from); err != nil {
		return fmt.Errorf("kernelpath: probe from %v: %w", src.Addr(), err)
	}
	if err := unix.Sendto(fd, probeSegment(src, dst), 0, to); err != nil {
		return fmt.Errorf("kernelpath: probe to %v: %w", dst, err)
	}
	return nil
}

// probeSegment is a 20-byte TCP header, ACK set, random sequence and
// acknowledgement numbers, with its checksum over the pseudo-header.
func probeSegment(src, dst netip.AddrPort) []byte {
	seg := make([]byte, 20)
	binary.BigEndian.PutUint16(seg[0:], src.Port())
	binary.BigEndian.PutUint16(seg[2:], dst.Port())
	rand.Read(seg[4:12]) // sequence and acknowledgement numbers
	seg[12] = 5 << 4     // data offset: 5 words
	seg[13] = 0x10       // ACK
	binary.BigEndian.PutUint16(seg[14:], 1024)
	binary.BigEndian.PutUint16(seg[16:], tcpChecksum(src.Addr(), dst.Addr(), seg))
	return seg
}

// tcpChecksum is the Internet checksum of seg with the pseudo-header of
// its family (RFC 793, RFC 8200 section 8.1).
func tcpChecksum(src, dst netip.Addr, seg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src.AsSlice())
	add(dst.AsSlice())
	sum += unix.IPPROTO_TCP + uint32(len(seg))
	add(seg)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
