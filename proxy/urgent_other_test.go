//go:build !unix

package proxy_test

import "net"

// sendUrgent sends b in the normal byte stream where urgent data cannot be
// sent from Go.
func sendUrgent(c net.Conn, b []byte) error {
	_, err := c.Write(b)
	return err
}
