package proxy

import (
	"errors"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// tcpInfo reads the kernel's TCP_INFO for c.
func tcpInfo(c *net.TCPConn) (*unix.TCPInfo, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var info *unix.TCPInfo
	var ierr error
	if err := raw.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil {
		return nil, err
	}
	return info, ierr
}

// tcpProgress returns a count that grows whenever c moves data: the bytes
// it has received plus the bytes its peer has acknowledged, from the
// kernel's TCP_INFO. The data relay splices in the kernel and sees no byte
// itself, so this is how it tells a slow transfer from a stalled one.
func tcpProgress(c *net.TCPConn) (uint64, bool) {
	info, err := tcpInfo(c)
	if err != nil {
		return 0, false
	}
	return info.Bytes_received + info.Bytes_acked, true
}

// tcpAcked returns the bytes the peer of c has acknowledged.
func tcpAcked(c *net.TCPConn) (uint64, bool) {
	info, err := tcpInfo(c)
	if err != nil {
		return 0, false
	}
	return info.Bytes_acked, true
}

var errNotAcknowledged = errors.New("proxy: the peer reset the connection before acknowledging every byte")

// tcpClose is TCP_CLOSE from the kernel's include/net/tcp_states.h: the
// state a reset connection ends in.
const tcpClose = 7

// waitAcked waits until the peer of c has acknowledged the n bytes written
// to c: until then they sit in the proxy's socket buffer, and a peer that
// resets now loses them. It returns an error if the connection is reset
// or closed first.
func waitAcked(c *net.TCPConn, n int64) error {
	pause := 50 * time.Microsecond
	for {
		info, err := tcpInfo(c)
		if err != nil {
			return err
		}
		if info.Bytes_acked >= uint64(n) {
			return nil
		}
		if info.State == tcpClose {
			return errNotAcknowledged
		}
		time.Sleep(pause)
		pause = min(2*pause, 10*time.Millisecond)
	}
}
