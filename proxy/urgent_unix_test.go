//go:build unix

package proxy_test

import (
	"net"
	"syscall"
)

// sendUrgent sends b as TCP urgent data (MSG_OOB), as RFC 959 clients send
// the Telnet Synch of an ABOR: the last byte of b is the urgent byte.
func sendUrgent(c net.Conn, b []byte) error {
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		serr = syscall.Sendto(int(fd), b, syscall.MSG_OOB, nil)
		return serr != syscall.EAGAIN
	})
	if err != nil {
		return err
	}
	return serr
}
