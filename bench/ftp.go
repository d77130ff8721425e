package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// ftpConn is a minimal FTP control connection: one command at a time, every
// reply read in full (multi-line replies included), passive data only.
// After authTLS the control connection is TLS and so is every data
// connection (PROT P), each resuming the control connection's session.
type ftpConn struct {
	c   net.Conn     // the control connection: tcp, or TLS over it
	tcp *net.TCPConn // the control connection's socket
	r   *bufio.Reader

	tls *tls.Config // this session's TLS client configuration, nil for plain FTP
	// Data connections over TLS, and how many of them resumed the
	// session (the server's proof that they belong to this session).
	dataTLS, dataResumed int
}

// reply is a final FTP reply: its code and its last line.
type reply struct {
	code int
	line string
}

func (r reply) String() string { return r.line }

// maxReplyLines bounds a multi-line reply so that a broken peer cannot make
// the client read forever.
const maxReplyLines = 1000

// dialFTP connects to addr and reads the 220 greeting, all within timeout.
// The deadline it sets stays on the connection; callers move it with
// setDeadline.
func dialFTP(addr string, timeout time.Duration) (*ftpConn, error) {
	nc, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	c := &ftpConn{c: nc, tcp: nc.(*net.TCPConn)}
	c.r = bufio.NewReaderSize(c.c, 1024)
	c.c.SetDeadline(time.Now().Add(timeout))
	rep, err := c.readReply()
	if err != nil {
		c.c.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}
	if rep.code != 220 {
		c.c.Close()
		return nil, fmt.Errorf("greeting: %q", rep.line)
	}
	return c, nil
}

func (c *ftpConn) setDeadline(d time.Duration) { c.c.SetDeadline(time.Now().Add(d)) }

func (c *ftpConn) close() error { return c.c.Close() }

// readLine returns one reply line without its CRLF.
func (c *ftpConn) readLine() (string, error) {
	b, err := c.r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return "", errors.New("reply line too long")
		}
		if errors.Is(err, io.EOF) {
			return "", io.ErrUnexpectedEOF
		}
		return "", err
	}
	return string(bytes.TrimRight(b, "\r\n")), nil
}

// readReply reads one complete reply, following RFC 959 multi-line replies
// ("123-first ... 123 last").
func (c *ftpConn) readReply() (reply, error) {
	line, err := c.readLine()
	if err != nil {
		return reply{}, err
	}
	code, multi, err := parseCode(line)
	if err != nil {
		return reply{}, err
	}
	if multi {
		end := line[:3] + " "
		for i := 0; ; i++ {
			if i == maxReplyLines {
				return reply{}, errors.New("multi-line reply too long")
			}
			line, err = c.readLine()
			if err != nil {
				return reply{}, err
			}
			if strings.HasPrefix(line, end) {
				break
			}
		}
	}
	return reply{code: code, line: line}, nil
}

func parseCode(line string) (code int, multi bool, err error) {
	if len(line) < 3 {
		return 0, false, fmt.Errorf("bad reply %q", line)
	}
	code, err = strconv.Atoi(line[:3])
	if err != nil || code < 100 || code > 599 {
		return 0, false, fmt.Errorf("bad reply %q", line)
	}
	return code, len(line) > 3 && line[3] == '-', nil
}

// cmd sends one command line and reads its reply.
func (c *ftpConn) cmd(line string) (reply, error) {
	if _, err := c.c.Write([]byte(line + "\r\n")); err != nil {
		return reply{}, err
	}
	return c.readReply()
}

// expect sends a command and fails unless the reply code is one of want.
func (c *ftpConn) expect(line string, want ...int) (reply, error) {
	rep, err := c.cmd(line)
	if err != nil {
		return rep, fmt.Errorf("%s: %w", verb(line), err)
	}
	for _, w := range want {
		if rep.code == w {
			return rep, nil
		}
	}
	return rep, fmt.Errorf("%s: unexpected reply %q", verb(line), rep.line)
}

func verb(line string) string {
	v, _, _ := strings.Cut(line, " ")
	return v
}

// login logs in anonymously; vsftpd with no_anon_password answers USER with
// 230 at once, other servers ask for a password.
func (c *ftpConn) login() error {
	rep, err := c.expect("USER anonymous", 230, 331)
	if err != nil {
		return err
	}
	if rep.code == 331 {
		_, err = c.expect("PASS ftpbench@", 230)
	}
	return err
}

// authTLS sends AUTH TLS and makes the control connection TLS with cfg,
// which the session's data connections then use too; PBSZ and PROT are the
// caller's. cfg should be this session's own, with a ClientSessionCache:
// a server such as vsftpd (require_ssl_reuse) accepts a data connection
// only if it resumes the control connection's session.
func (c *ftpConn) authTLS(cfg *tls.Config) error {
	if _, err := c.expect("AUTH TLS", 234); err != nil {
		return err
	}
	if c.r.Buffered() > 0 {
		return errors.New("AUTH TLS: the server sent more than its 234 before the handshake")
	}
	tc := tls.Client(c.tcp, cfg)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("control TLS handshake: %w", err)
	}
	c.c = tc
	c.r.Reset(tc)
	c.tls = cfg
	return nil
}

// tlsState is the control connection's TLS state, zero for plain FTP.
func (c *ftpConn) tlsState() tls.ConnectionState {
	if tc, ok := c.c.(*tls.Conn); ok {
		return tc.ConnectionState()
	}
	return tls.ConnectionState{}
}

// pasv asks for a passive data address with PASV and returns it.
func (c *ftpConn) pasv() (string, error) {
	rep, err := c.expect("PASV", 227)
	if err != nil {
		return "", err
	}
	return parse227(rep.line)
}

// epsv asks for a passive data port with EPSV; the data address is the
// control connection's peer with that port.
func (c *ftpConn) epsv() (string, error) {
	rep, err := c.expect("EPSV", 229)
	if err != nil {
		return "", err
	}
	port, err := parse229(rep.line)
	if err != nil {
		return "", err
	}
	host := c.tcp.RemoteAddr().(*net.TCPAddr).IP.String()
	return net.JoinHostPort(host, strconv.Itoa(port)), nil
}

// parse227 extracts h1,h2,h3,h4,p1,p2 from a 227 reply.
func parse227(line string) (string, error) {
	i := strings.IndexByte(line, '(')
	j := strings.LastIndexByte(line, ')')
	if i < 0 || j < i {
		return "", fmt.Errorf("bad 227 reply %q", line)
	}
	parts := strings.Split(line[i+1:j], ",")
	if len(parts) != 6 {
		return "", fmt.Errorf("bad 227 reply %q", line)
	}
	var n [6]int
	for k, p := range parts {
		v, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || v < 0 || v > 255 {
			return "", fmt.Errorf("bad 227 reply %q", line)
		}
		n[k] = v
	}
	return fmt.Sprintf("%d.%d.%d.%d:%d", n[0], n[1], n[2], n[3], n[4]<<8|n[5]), nil
}

// parse229 extracts the port from "229 ... (|||port|)".
func parse229(line string) (int, error) {
	i := strings.IndexByte(line, '(')
	j := strings.LastIndexByte(line, ')')
	if i < 0 || j < i+5 {
		return 0, fmt.Errorf("bad 229 reply %q", line)
	}
	inner := line[i+1 : j]
	d := inner[0]
	f := strings.Split(inner, string(d))
	if len(f) != 5 {
		return 0, fmt.Errorf("bad 229 reply %q", line)
	}
	port, err := strconv.Atoi(f[3])
	if err != nil || port < 1 || port > 65535 {
		return 0, fmt.Errorf("bad 229 reply %q", line)
	}
	return port, nil
}

// openData opens a passive data connection with PASV or EPSV. On a TLS
// session the connection returned is TLS whose handshake has not started:
// startData runs it once the server has answered the transfer command.
func (c *ftpConn) openData(useEPSV bool, timeout time.Duration) (net.Conn, error) {
	var addr string
	var err error
	if useEPSV {
		addr, err = c.epsv()
	} else {
		addr, err = c.pasv()
	}
	if err != nil {
		return nil, err
	}
	d, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, fmt.Errorf("data connection to %s: %w", addr, err)
	}
	if c.tls != nil {
		return tls.Client(d, c.tls), nil
	}
	return d, nil
}

// startData handshakes a TLS data connection, after the server's 150 as
// FTPS clients do: a server handshakes only once it has the command (and,
// through a proxy, its own data connection upstream). Plain connections
// need nothing.
func (c *ftpConn) startData(d net.Conn) error {
	tc, ok := d.(*tls.Conn)
	if !ok {
		return nil
	}
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("data TLS handshake: %w", err)
	}
	c.dataTLS++
	if tc.ConnectionState().DidResume {
		c.dataResumed++
	}
	return nil
}

// retr downloads name over a passive data connection into w and returns the
// number of bytes received. The final reply must be 226.
func (c *ftpConn) retr(name string, useEPSV bool, w io.Writer, timeout time.Duration) (int64, error) {
	d, err := c.openData(useEPSV, timeout)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	d.SetDeadline(time.Now().Add(timeout))
	if _, err := c.expect("RETR "+name, 150, 125); err != nil {
		return 0, err
	}
	if err := c.startData(d); err != nil {
		return 0, err
	}
	n, err := io.Copy(w, d)
	if err != nil {
		return n, fmt.Errorf("RETR data: %w", err)
	}
	d.Close()
	rep, err := c.readReply()
	if err != nil {
		return n, fmt.Errorf("RETR completion: %w", err)
	}
	if rep.code != 226 {
		return n, fmt.Errorf("RETR completion: %q", rep.line)
	}
	return n, nil
}

// stor uploads everything r yields as name and returns the bytes sent. The
// final reply must be 226.
func (c *ftpConn) stor(name string, useEPSV bool, r io.Reader, timeout time.Duration) (int64, error) {
	d, err := c.openData(useEPSV, timeout)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	d.SetDeadline(time.Now().Add(timeout))
	if _, err := c.expect("STOR "+name, 150, 125); err != nil {
		return 0, err
	}
	if err := c.startData(d); err != nil {
		return 0, err
	}
	n, err := io.Copy(d, r)
	if err != nil {
		return n, fmt.Errorf("STOR data: %w", err)
	}
	if tc, ok := d.(*tls.Conn); ok {
		if err := endTLSUpload(tc); err != nil {
			return n, fmt.Errorf("STOR data close: %w", err)
		}
	}
	if err := d.Close(); err != nil {
		return n, fmt.Errorf("STOR data close: %w", err)
	}
	rep, err := c.readReply()
	if err != nil {
		return n, fmt.Errorf("STOR completion: %w", err)
	}
	if rep.code != 226 {
		return n, fmt.Errorf("STOR completion: %q", rep.line)
	}
	return n, nil
}

// endTLSUpload ends the sending side of a TLS upload: close_notify, so
// that the server can tell the end of the file from a cut connection, then
// the TCP FIN; then it reads until the server closes. A TLS 1.3 server
// sends session tickets after the handshake, which an upload never reads;
// closing a socket with unread bytes sends a reset instead of the FIN, and
// the server (vsftpd: "426 Failure reading network stream") takes the
// upload for a failed one.
func endTLSUpload(tc *tls.Conn) error {
	if err := tc.CloseWrite(); err != nil {
		return err
	}
	if tcp, ok := tc.NetConn().(*net.TCPConn); ok {
		if err := tcp.CloseWrite(); err != nil {
			return err
		}
	}
	_, err := io.Copy(io.Discard, tc)
	return err
}

// userSink is where a timed download goes: read(2) into one 1 MiB buffer
// that is then dropped, as io.Discard does but with fewer system calls.
type userSink struct{ buf []byte }

func newUserSink() *userSink { return &userSink{buf: make([]byte, 1<<20)} }

func (s *userSink) Write(p []byte) (int, error) { return len(p), nil }

// ReadFrom is what io.Copy uses: it reads until EOF.
func (s *userSink) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		k, err := r.Read(s.buf)
		total += int64(k)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// pattern is the generator of a timed upload: n bytes written from one
// 1 MiB block, each write(2) a whole block.
type pattern struct {
	block []byte
	n     int64
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.n == 0 {
		return 0, io.EOF
	}
	k := copy(b, p.block[:min(int64(len(p.block)), p.n)])
	p.n -= int64(k)
	return k, nil
}

// WriteTo is what io.Copy uses: whole blocks, no intermediate buffer.
func (p *pattern) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for p.n > 0 {
		k, err := w.Write(p.block[:min(int64(len(p.block)), p.n)])
		total += int64(k)
		p.n -= int64(k)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// size returns the server's SIZE of name (binary mode).
func (c *ftpConn) size(name string) (int64, error) {
	rep, err := c.expect("SIZE "+name, 213)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(rep.line)
	if len(f) != 2 {
		return 0, fmt.Errorf("bad SIZE reply %q", rep.line)
	}
	return strconv.ParseInt(f[1], 10, 64)
}

// quit ends the session politely and closes the connection.
func (c *ftpConn) quit() error {
	_, err := c.expect("QUIT", 221)
	c.c.Close()
	return err
}

// noopLine is the NOOP command, prebuilt so the round-trip loop does not
// allocate.
var noopLine = []byte("NOOP\r\n")

// noop sends NOOP and waits for its 200.
func (c *ftpConn) noop() error {
	if _, err := c.c.Write(noopLine); err != nil {
		return err
	}
	rep, err := c.readReply()
	if err != nil {
		return err
	}
	if rep.code != 200 {
		return fmt.Errorf("NOOP: %q", rep.line)
	}
	return nil
}
