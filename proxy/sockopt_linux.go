package proxy

import (
	"net"
	"syscall"

	"github.com/rs/zerolog"
)

// setOOBInline keeps TCP urgent data in the byte stream. Clients that abort
// a transfer send part of ABOR as urgent data (Python's ftplib sends the
// whole "ABOR\r\n" with MSG_OOB, so its last byte is urgent; RFC 959
// clients send the Telnet Synch's DM byte that way). Without SO_OOBINLINE
// the kernel takes that byte out of the stream and the command never ends.
func setOOBInline(c net.Conn, log zerolog.Logger) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_OOBINLINE, 1)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		log.Warn().Err(err).Msg("cannot set SO_OOBINLINE: ABOR sent as urgent data may be lost")
	}
}
