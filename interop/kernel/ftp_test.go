//go:build interop

package kernel

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

// ftpConn is a minimal FTP control connection for what the client
// programs cannot do: hold a passive port while someone else connects to
// it, read slowly, reset a data connection, run 200 sessions at once. Its
// sockets are opened in the namespace of the goroutine that dials.
type ftpConn struct {
	c      net.Conn
	r      *bufio.Reader
	source string
}

// dialFTP connects from source to addr, reads the greeting and logs in as
// the test user, in binary mode.
func dialFTP(addr, source string) (*ftpConn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	f := &ftpConn{c: c, r: bufio.NewReader(c), source: source}
	if code, text, err := f.reply(); err != nil || code != 220 {
		c.Close()
		return nil, fmt.Errorf("greeting from %s: %d %q %v", addr, code, text, err)
	}
	for _, step := range []struct {
		line string
		want int
	}{{"USER " + peers.User, 331}, {"PASS " + peers.Password, 230}, {"TYPE I", 200}} {
		if code, text, err := f.cmd(step.line); err != nil || code != step.want {
			c.Close()
			return nil, fmt.Errorf("%s: %d %q %v", strings.Fields(step.line)[0], code, text, err)
		}
	}
	return f, nil
}

// replyWithin reads one reply, multi-line ones whole, within limit.
func (f *ftpConn) replyWithin(limit time.Duration) (int, string, error) {
	f.c.SetReadDeadline(time.Now().Add(limit))
	var lines []string
	first := ""
	for {
		line, err := f.r.ReadString('\n')
		if err != nil {
			return 0, strings.Join(append(lines, line), "\n"), err
		}
		line = strings.TrimRight(line, "\r\n")
		lines = append(lines, line)
		if first == "" {
			if len(line) < 4 {
				return 0, line, fmt.Errorf("short reply line %q", line)
			}
			first = line[:3]
			if line[3] != '-' {
				break
			}
			continue
		}
		if strings.HasPrefix(line, first+" ") {
			break
		}
	}
	code, err := strconv.Atoi(first)
	return code, strings.Join(lines, "\n"), err
}

// reply reads one reply within 20 s.
func (f *ftpConn) reply() (int, string, error) { return f.replyWithin(20 * time.Second) }

// cmd sends one command and reads its reply.
func (f *ftpConn) cmd(line string) (int, string, error) {
	if err := f.send(line); err != nil {
		return 0, "", err
	}
	return f.reply()
}

// send sends one command without reading a reply.
func (f *ftpConn) send(line string) error {
	f.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := io.WriteString(f.c, line+"\r\n")
	return err
}

func (f *ftpConn) close() { f.c.Close() }

var pasvRe = regexp.MustCompile(`\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)`)

// pasv sends PASV and returns the address of the 227.
func (f *ftpConn) pasv() (netip.AddrPort, error) {
	code, text, err := f.cmd("PASV")
	if err != nil || code != 227 {
		return netip.AddrPort{}, fmt.Errorf("PASV: %d %q %v", code, text, err)
	}
	m := pasvRe.FindStringSubmatch(text)
	if m == nil {
		return netip.AddrPort{}, fmt.Errorf("no address in %q", text)
	}
	var b [6]byte
	for i := range b {
		v, err := strconv.Atoi(m[i+1])
		if err != nil || v > 255 {
			return netip.AddrPort{}, fmt.Errorf("bad number in %q", text)
		}
		b[i] = byte(v)
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[:4])), uint16(b[4])<<8|uint16(b[5])), nil
}

// dialData opens a data connection from source to addr.
func dialData(source string, addr netip.AddrPort) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	c, err := d.Dial("tcp", addr.String())
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

// retr runs RETR name over an open data connection and checks what
// arrives against want, and the 226.
func (f *ftpConn) retr(dc *net.TCPConn, name string, want peers.File) error {
	return f.retrTimed(dc, name, want, nil)
}

// phases is how long a RETR took from the command to its 150, to the end
// of the data, and to the 226.
type phases struct{ mark, data, done time.Duration }

// retrTimed is retr that records its phases in ph, if not nil.
func (f *ftpConn) retrTimed(dc *net.TCPConn, name string, want peers.File, ph *phases) error {
	defer dc.Close()
	start := time.Now()
	if code, text, err := f.cmd("RETR " + name); err != nil || code/100 != 1 {
		return fmt.Errorf("RETR %s: %d %q %v", name, code, text, err)
	}
	mark := time.Since(start)
	sk := newSink()
	err := sk.read(dc, -1, 60*time.Second)
	dc.Close() // as clients do at the end of the data, before reading 226
	data := time.Since(start)
	if err != nil {
		return fmt.Errorf("RETR %s: after %d bytes: %w", name, sk.n, err)
	}
	if code, text, err := f.reply(); err != nil || code != 226 {
		return fmt.Errorf("after RETR %s (%d bytes arrived): %d %q %v", name, sk.n, code, text, err)
	}
	if ph != nil {
		*ph = phases{mark, data, time.Since(start)}
	}
	return sameSum(name, sk.n, sk.sum(), want)
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
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	c, err := d.Dial("tcp", addr.String())
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
