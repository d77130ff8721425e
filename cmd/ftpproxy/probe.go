package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/ftpproxy/ftpproxy/probe"
)

// Exit codes of `ftpproxy probe` beyond the report's own 0, 1 and 2.
const exitUsage = 64 // EX_USAGE of sysexits.h

// passwordEnv holds the probe's password when --password-file is not given.
const passwordEnv = "FTPPROXY_PROBE_PASSWORD"

const probeUsage = `Usage:
  ftpproxy probe [options] HOST[:PORT]

Checks the path from here to an FTP server step by step and says what is
blocked and how to fix it: DNS (IPv4 and IPv6), TCP to the port and to
alternates, the greeting, FEAT, AUTH TLS, the login, passive mode (PASV,
EPSV, a LIST) and active mode (PORT/EPRT). Each check prints one line,
"OK|WARN|FAIL check: finding. fix."

The password is read from --password-file, else from $` + passwordEnv + `;
an anonymous login without one sends "` + probe.DefaultPassword + `". It is never printed.

Exit codes: 0 all OK, 1 warnings, 2 failures, 64 usage error.

Options:
`

// probeOptions is the parsed command line of `ftpproxy probe`.
type probeOptions struct {
	cfg        probe.Config
	json       bool
	transcript bool
}

// probeMain runs `ftpproxy probe` with the arguments after "probe" and
// returns the exit code.
func probeMain(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	o, err := parseProbeFlags(args, stderr, getenv)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "ftpproxy probe:", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep := probe.Run(ctx, o.cfg)
	if o.json {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteText(stdout, o.transcript)
	}
	if err != nil {
		fmt.Fprintln(stderr, "ftpproxy probe:", err)
	}
	return rep.ExitCode
}

// parseProbeFlags parses the probe's command line; flags may come before
// or after HOST[:PORT].
func parseProbeFlags(args []string, out io.Writer, getenv func(string) string) (*probeOptions, error) {
	fs := flag.NewFlagSet("ftpproxy probe", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(out, probeUsage)
		fs.PrintDefaults()
	}
	var (
		o                     probeOptions
		ports, pwFile, caFile string
	)
	fs.StringVar(&ports, "ports", "21,2121,990", "alternate `PORTS` to try a TCP connection to, comma-separated, to tell a blocked port from an unreachable host (\"\" for none)")
	fs.StringVar(&o.cfg.Through, "through", "", "run the checks through the FTP proxy at `PROXYHOST:PORT` (an ftpproxy whose --upstream is HOST)")
	fs.StringVar(&o.cfg.User, "user", "anonymous", "log in as `NAME`")
	fs.StringVar(&pwFile, "password-file", "", "read the password from `FILE` (its first line); default $"+passwordEnv)
	fs.StringVar(&caFile, "ca", "", "verify the server's TLS certificate against the PEM certificates in `FILE` instead of the system roots")
	fs.DurationVar(&o.cfg.Timeout, "timeout", probe.DefaultTimeout, "bound on each step: a lookup, a connection, a reply")
	fs.DurationVar(&o.cfg.Deadline, "deadline", probe.DefaultDeadline, "bound on the whole probe")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON (schema in docs/probe.md)")
	fs.BoolVar(&o.transcript, "transcript", false, "print every line sent and received before the results (PASS masked)")

	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != 1 {
		fs.Usage()
		return nil, fmt.Errorf("want one HOST[:PORT], got %d arguments", len(pos))
	}
	host, port, err := probe.ParseHostPort(pos[0], 21)
	if err != nil {
		return nil, err
	}
	o.cfg.Host, o.cfg.Port = host, port
	if o.cfg.Through != "" {
		if _, _, err := probe.ParseHostPort(o.cfg.Through, 21); err != nil {
			return nil, fmt.Errorf("--through: %w", err)
		}
	}
	if o.cfg.Ports, err = parsePorts(ports); err != nil {
		return nil, fmt.Errorf("--ports %q: %w", ports, err)
	}
	if o.cfg.Timeout <= 0 {
		return nil, fmt.Errorf("--timeout %s: want a positive duration", o.cfg.Timeout)
	}
	if o.cfg.Deadline <= 0 {
		return nil, fmt.Errorf("--deadline %s: want a positive duration", o.cfg.Deadline)
	}
	if o.cfg.User == "" {
		return nil, errors.New("--user: want a user name")
	}
	if o.cfg.Password, err = probePassword(pwFile, getenv); err != nil {
		return nil, err
	}
	if o.cfg.Password == "" && !strings.EqualFold(o.cfg.User, "anonymous") && !strings.EqualFold(o.cfg.User, "ftp") {
		return nil, fmt.Errorf("--user %s needs a password: put it in a file for --password-file, or in $%s", o.cfg.User, passwordEnv)
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca %s: no PEM certificate in it", caFile)
		}
		o.cfg.RootCAs, o.cfg.RootCAsName = pool, caFile
	}
	return &o, nil
}

// probePassword reads the password from the first line of file, or, with
// no file, from the environment.
func probePassword(file string, getenv func(string) string) (string, error) {
	if file == "" {
		return getenv(passwordEnv), nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("--password-file: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimSuffix(line, "\r")
	if line == "" {
		return "", fmt.Errorf("--password-file %s: the first line is empty", file)
	}
	return line, nil
}

// parsePorts parses "21,2121,990".
func parsePorts(s string) ([]uint16, error) {
	var ports []uint16
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%q is not a port from 1 to 65535", f)
		}
		ports = append(ports, uint16(n))
	}
	return ports, nil
}
