//go:build interop

package kernel

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

// ftpConn is a raw FTP session for what the client programs cannot do:
// hold a passive port while someone else connects to it, read slowly,
// reset a data connection, run 200 sessions at once. Its sockets are
// opened in the namespace of the goroutine that dials.
type ftpConn struct{ *peers.Ctrl }

// dialFTP connects from source to addr, reads the greeting and logs in as
// the test user, in binary mode; replies are awaited 20 s.
func dialFTP(addr, source string) (*ftpConn, error) {
	c, err := peers.DialLogin(addr, source, 20*time.Second)
	if err != nil {
		return nil, err
	}
	return &ftpConn{c}, nil
}

// dialData opens a data connection from source to addr.
func dialData(source string, addr netip.AddrPort) (*net.TCPConn, error) {
	c, err := peers.DialFrom(source, addr.String())
	if err != nil {
		return nil, fmt.Errorf("data connection to %s: %w", addr, err)
	}
	return c.(*net.TCPConn), nil
}

// sink hashes what it reads from a data connection.
type sink struct {
	n int64
	h interface {
		io.Writer
		Sum([]byte) []byte
	}
}

func newSink() *sink { return &sink{h: sha256.New()} }

func (s *sink) sum() string { return hex.EncodeToString(s.h.Sum(nil)) }

// read reads up to n bytes (all, with n < 0) from c within limit.
func (s *sink) read(c net.Conn, n int64, limit time.Duration) error {
	c.SetReadDeadline(time.Now().Add(limit))
	var src io.Reader = c
	if n >= 0 {
		src = io.LimitReader(c, n)
	}
	m, err := io.Copy(s.h, src)
	s.n += m
	return err
}

// phases is how long a RETR took from the command to its 150, to the end
// of the data, and to the 226.
type phases struct{ mark, data, done time.Duration }

// retr connects from source to ap, the port of a PASV, runs RETR want.Name
// over it and checks what arrives against want, and the 226. It records
// the phases in ph, if not nil.
func (f *ftpConn) retr(source string, ap netip.AddrPort, want peers.File, ph *phases) error {
	dc, err := dialData(source, ap)
	if err != nil {
		return err
	}
	defer dc.Close()
	name := want.Name
	start := time.Now()
	if code, text, err := f.Cmd("RETR " + name); err != nil || code/100 != 1 {
		return fmt.Errorf("RETR %s: %d %q %v", name, code, text, err)
	}
	mark := time.Since(start)
	sk := newSink()
	err = sk.read(dc, -1, 60*time.Second)
	dc.Close() // as clients do at the end of the data, before reading 226
	data := time.Since(start)
	if err != nil {
		return fmt.Errorf("RETR %s: after %d bytes: %w", name, sk.n, err)
	}
	if code, text, err := f.Reply(); err != nil || code != 226 {
		return fmt.Errorf("after RETR %s (%d bytes arrived): %d %q %v", name, sk.n, code, text, err)
	}
	if ph != nil {
		*ph = phases{mark, data, time.Since(start)}
	}
	return sameSum(name, sk.n, sk.sum(), want)
}

// download is a RETR under way, for the cases that disturb one.
type download struct {
	ap netip.AddrPort // the port the PASV announced
	dc *net.TCPConn   // the data connection to it
	sk *sink          // what has arrived so far
}

// startRetr sends PASV, connects from source to the announced port, sends
// RETR name and reads the first bytes of the file (first, a multiple of
// 1 MiB). On an error it closes the data connection; otherwise that is
// the caller's.
func (f *ftpConn) startRetr(source, name string, first int64) (download, error) {
	ap, err := f.PASV()
	if err != nil {
		return download{}, err
	}
	dc, err := dialData(source, ap)
	if err != nil {
		return download{}, err
	}
	if code, text, err := f.Cmd("RETR " + name); err != nil || code/100 != 1 {
		dc.Close()
		return download{}, fmt.Errorf("RETR: %d %q %v", code, text, err)
	}
	sk := newSink()
	if err := sk.read(dc, first, 10*time.Second); err != nil {
		dc.Close()
		what := "first MiB"
		if first != 1<<20 {
			what = fmt.Sprintf("first %d MiB", first>>20)
		}
		return download{}, fmt.Errorf("%s: %w", what, err)
	}
	return download{ap, dc, sk}, nil
}

// sameSum compares a transfer's length and sha256 with a file's.
func sameSum(what string, n int64, sum string, want peers.File) error {
	if n != want.Size || sum != want.Sum {
		return fmt.Errorf("%s: %d bytes sha256 %.16s, want %d bytes %.16s", what, n, sum, want.Size, want.Sum)
	}
	return nil
}

var (
	errConnRefused = syscall.ECONNREFUSED
	errConnReset   = syscall.ECONNRESET
)

// refused checks that a connection to addr from source is turned away
// with nothing sent: refused at once, or accepted and then closed or reset
// without a byte. It says which.
func refused(source string, addr netip.AddrPort) (string, error) {
	c, err := peers.DialFrom(source, addr.String())
	if err != nil {
		if errors.Is(err, errConnRefused) {
			return "connection refused", nil
		}
		if errors.Is(err, errConnReset) {
			// Accepted and reset at once: the reset came before connect
			// returned.
			return "accepted, then reset at once", nil
		}
		return "", fmt.Errorf("connection from %s to %s: %w (want refused, reset or closed)", source, addr, err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	switch {
	case n > 0:
		return "", fmt.Errorf("connection from %s to %s got %d bytes: %q", source, addr, n, buf[:min(n, 64)])
	case errors.Is(err, io.EOF):
		return "accepted, then closed without data", nil
	case errors.Is(err, errConnReset):
		return "accepted, then reset without data", nil
	case err != nil && os.IsTimeout(err):
		return "", fmt.Errorf("connection from %s to %s stayed open 5 s (neither refused nor closed)", source, addr)
	}
	return "", fmt.Errorf("connection from %s to %s: read: %v", source, addr, err)
}
