package proxy

import (
	"net"

	"golang.org/x/sys/unix"
)

// tcpProgress returns a count that grows whenever c moves data: the bytes
// it has received plus the bytes its peer has acknowledged, from the
// kernel's TCP_INFO. The data relay splices in the kernel and sees no byte
// itself, so this is how it tells a slow transfer from a stalled one.
func tcpProgress(c *net.TCPConn) (uint64, bool) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var ierr error
	if err := raw.Control(func(fd uintptr) {
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); err != nil || ierr != nil {
		return 0, false
	}
	return info.Bytes_received + info.Bytes_acked, true
}
