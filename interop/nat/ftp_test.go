//go:build interop

package nat

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

// ftpConn is a minimal FTP control connection for probes the client
// programs cannot make: holding passive ports, reading a server's raw 227.
// Its sockets are opened in the namespace of the goroutine that dials.
type ftpConn struct {
	c net.Conn
	r *bufio.Reader
}

// dialFTP connects from source (an IP, or "" for any) to addr, reads the
// greeting and logs in as the test user.
func dialFTP(addr, source string) (*ftpConn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if source != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(source)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	f := &ftpConn{c: c, r: bufio.NewReader(c)}
	if code, text, err := f.reply(); err != nil || code != 220 {
		c.Close()
		return nil, fmt.Errorf("greeting from %s: %d %q %v", addr, code, text, err)
	}
	if code, text, err := f.cmd("USER " + peers.User); err != nil || code != 331 {
		c.Close()
		return nil, fmt.Errorf("USER: %d %q %v", code, text, err)
	}
	if code, text, err := f.cmd("PASS " + peers.Password); err != nil || code != 230 {
		c.Close()
		return nil, fmt.Errorf("PASS: %d %q %v", code, text, err)
	}
	if code, text, err := f.cmd("TYPE I"); err != nil || code != 200 {
		c.Close()
		return nil, fmt.Errorf("TYPE I: %d %q %v", code, text, err)
	}
	return f, nil
}

// reply reads one reply, multi-line ones whole, within 15 s.
func (f *ftpConn) reply() (int, string, error) {
	f.c.SetReadDeadline(time.Now().Add(15 * time.Second))
	var lines []string
	first := ""
	for {
		line, err := f.r.ReadString('\n')
		if err != nil {
			return 0, strings.Join(lines, "\n"), err
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

// cmd sends one command and reads its reply.
func (f *ftpConn) cmd(line string) (int, string, error) {
	f.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(f.c, line+"\r\n"); err != nil {
		return 0, "", err
	}
	return f.reply()
}

func (f *ftpConn) close() { f.c.Close() }

var pasvRe = regexp.MustCompile(`\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)`)

// parse227 returns the address in a 227 reply.
func parse227(text string) (netip.AddrPort, error) {
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

// retrOver runs RETR name over a data connection to data (opened from
// source) after a PASV, and returns the sha256 of what arrived.
func (f *ftpConn) retrOver(data netip.AddrPort, source, name string) (string, int64, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if source != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(source)}
	}
	dc, err := d.Dial("tcp", data.String())
	if err != nil {
		return "", 0, fmt.Errorf("data connection to %s: %w", data, err)
	}
	defer dc.Close()
	if code, text, err := f.cmd("RETR " + name); err != nil || code/100 != 1 {
		return "", 0, fmt.Errorf("RETR: %d %q %v", code, text, err)
	}
	dc.SetReadDeadline(time.Now().Add(30 * time.Second))
	h := sha256.New()
	n, err := io.Copy(h, dc)
	dc.Close() // as clients do at the end of the data, before reading 226
	if err != nil {
		return "", n, err
	}
	if code, text, err := f.reply(); err != nil || code != 226 {
		return "", n, fmt.Errorf("after RETR: %d %q %v", code, text, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// runResult is one client program run: its combined output, exit error
// and duration.
type runResult struct {
	out     string
	err     error
	elapsed time.Duration
	argv    []string
}

// failure describes a run for a FAIL message.
func (r runResult) failure(what string) error {
	return fmt.Errorf("%s\n$ %s\nexit: %v after %s\n%s", what, peers.ShellQuote(r.argv), r.err, r.elapsed.Round(time.Millisecond), peers.Tail(r.out, 2500))
}

// runCombined runs argv with a bounded time and returns stdout and stderr
// together (curl -v writes its trace to stderr). It runs in the namespace
// of the calling goroutine.
func runCombined(ctx context.Context, limit time.Duration, argv ...string) runResult {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = 3 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	r := runResult{out: out.String(), err: err, elapsed: time.Since(start), argv: argv}
	if ctx.Err() == context.DeadlineExceeded {
		r.err = fmt.Errorf("timed out after %s (%v)", limit, err)
	}
	return r
}

// curlArgs is a curl command line for the test user with a verbose trace.
// mode is pasv, epsv, port or eprt.
func curlArgs(host string, port int, source, mode string, extra ...string) []string {
	a := []string{"curl", "-sS", "-v", "--max-time", "60", "--connect-timeout", "10",
		"--interface", source, "--user", peers.User + ":" + peers.Password}
	switch mode {
	case "epsv":
		a = append(a, "--ftp-pasv")
	case "pasv":
		a = append(a, "--ftp-pasv", "--disable-epsv")
	case "port":
		a = append(a, "-P", source, "--disable-eprt")
	case "eprt":
		a = append(a, "-P", source)
	}
	return append(a, extra...)
}

// ftpURL is the URL of path on host:port.
func ftpURL(host string, port int, path string) string {
	return "ftp://" + net.JoinHostPort(host, strconv.Itoa(port)) + "/" + path
}
