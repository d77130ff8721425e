package peers

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"time"
)

// OpTimeout bounds one client invocation (one FTP session) of the drivers.
const OpTimeout = 3 * time.Minute

// RunTool runs a program with a bounded time and returns its stdout; a
// failure carries the command line, the exit status and the tails of
// stderr and stdout.
func RunTool(ctx context.Context, limit time.Duration, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = 5 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("timed out after %s", limit)
		}
		return out.String(), fmt.Errorf("%s: %v\nstderr: %s\nstdout: %s", ShellQuote(argv), err, Tail(errb.String(), 1500), Tail(out.String(), 500))
	}
	return out.String(), nil
}

// Tail returns s without surrounding white space, cut to its last n bytes
// (with a "..." prefix) when longer.
func Tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// ShellQuote renders argv as a shell command line, quoting the arguments
// that need it.
func ShellQuote(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\"'$;|&()<>*?") {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		} else {
			q[i] = a
		}
	}
	return strings.Join(q, " ")
}

// WaitGreeting polls addr until it answers with a 220 greeting. It gives up
// after limit, when ctx ends, or when exited delivers (the process that
// should answer has ended); exited may be nil.
func WaitGreeting(ctx context.Context, addr string, limit time.Duration, exited <-chan error) error {
	return waitGreeting(ctx, addr, "", limit, exited)
}

// waitGreeting is WaitGreeting with the probe's local address: source, when
// not empty, is the IP the probe connections are bound to.
func waitGreeting(ctx context.Context, addr, source string, limit time.Duration, exited <-chan error) error {
	return waitGreetingTLS(ctx, addr, source, nil, limit, exited)
}

// waitGreetingTLS is waitGreeting that, with tlsConf, speaks TLS from the
// first byte (implicit FTPS).
func waitGreetingTLS(ctx context.Context, addr, source string, tlsConf *tls.Config, limit time.Duration, exited <-chan error) error {
	d := net.Dialer{Timeout: time.Second}
	if source != "" {
		ip := net.ParseIP(source)
		if ip == nil {
			return fmt.Errorf("probe source %q is not an IP address", source)
		}
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("process exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		var c net.Conn
		var err error
		if tlsConf != nil {
			c, err = tls.DialWithDialer(&d, "tcp", addr, tlsConf)
		} else {
			c, err = d.Dial("tcp", addr)
		}
		if err == nil {
			c.SetDeadline(time.Now().Add(3 * time.Second))
			line, rerr := bufio.NewReader(c).ReadString('\n')
			c.Write([]byte("QUIT\r\n"))
			c.Close()
			if rerr == nil && strings.HasPrefix(line, "220") {
				return nil
			}
			last = fmt.Errorf("greeting %q: %v", line, rerr)
		} else {
			last = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("timed out: %v", last)
}

// firstInPath returns the path of the first of names found in PATH.
func firstInPath(names ...string) (string, error) {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	return "", errors.New("none of " + strings.Join(names, ", ") + " found in PATH")
}

// isIPv6 reports whether host is an IPv6 address literal.
func isIPv6(host string) bool { return strings.Contains(host, ":") }
