//go:build interop

package nat

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strconv"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

// dialFTP connects from source (an IP, or "" for any) to addr, reads the
// greeting and logs in as the test user, for probes the client programs
// cannot make: holding passive ports, reading a server's raw 227. Replies
// are awaited 15 s. Its sockets are opened in the namespace of the
// goroutine that dials.
func dialFTP(addr, source string) (*peers.Ctrl, error) {
	return peers.DialLogin(addr, source, 15*time.Second)
}

// retrOver runs RETR name on f over a data connection to data (opened
// from source) after a PASV, and returns the sha256 of what arrived.
func retrOver(f *peers.Ctrl, data netip.AddrPort, source, name string) (string, int64, error) {
	dc, err := peers.DialFrom(source, data.String())
	if err != nil {
		return "", 0, fmt.Errorf("data connection to %s: %w", data, err)
	}
	defer dc.Close()
	if code, text, err := f.Cmd("RETR " + name); err != nil || code/100 != 1 {
		return "", 0, fmt.Errorf("RETR: %d %q %v", code, text, err)
	}
	dc.SetReadDeadline(time.Now().Add(30 * time.Second))
	h := sha256.New()
	n, err := io.Copy(h, dc)
	dc.Close() // as clients do at the end of the data, before reading 226
	if err != nil {
		return "", n, err
	}
	if code, text, err := f.Reply(); err != nil || code != 226 {
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
