package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/ftpproxy/ftpproxy/nat"
	"github.com/ftpproxy/ftpproxy/proxy"
)

// forwardFlags are forward mode's flags: the login names the server, and
// the destination policy says which servers may be named.
type forwardFlags struct {
	on        bool
	allowDest listFlag
	ports     string
	from      string
	users     string
}

func (f *forwardFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.on, "forward", false, "forward mode: the client names the server in its login (USER user@host[:port], OPEN host, or a proxy-authenticating form); with --upstream too, a login that names none goes there")
	fs.Var(&f.allowDest, "allow-dest", "forward mode: destinations that may be reached, `LIST` of CIDR, IP or host name, each with an optional :port ([v6]:port); may be repeated; nothing is allowed without it; loopback, link-local, multicast, the proxy's own addresses and trusted balancers only through a CIDR inside them")
	fs.StringVar(&f.ports, "forward-ports", nat.DefaultForwardPorts, "forward mode: the destination `PORTS` (P or LO-HI, comma-separated) allowed for --allow-dest entries without a port")
	fs.StringVar(&f.from, "forward-from", "", "forward mode: only clients in `CIDR[,CIDR]` may name a destination (default: every client --allow admits)")
	fs.StringVar(&f.users, "forward-users", "", "forward mode: `FILE` of proxy accounts, name:bcrypt-hash lines (ftpproxy passwd NAME makes one); when set, clients must log in to the proxy first; read again on SIGHUP")
}

// parse checks the forward-mode flags and builds o.forward.
func (f *forwardFlags) parse(o *options) error {
	if !f.on {
		if len(f.allowDest) > 0 || f.from != "" || f.users != "" || f.ports != nat.DefaultForwardPorts {
			return errors.New("--allow-dest, --forward-ports, --forward-from and --forward-users need --forward")
		}
		return nil
	}
	if o.pasvAddress == "reply" {
		return errors.New("--upstream-pasv-address reply cannot go with --forward: a server a client chose would choose where the proxy connects")
	}
	pol, err := nat.ParseDestPolicy(f.allowDest, f.ports)
	if err != nil {
		return fmt.Errorf("--allow-dest/--forward-ports: %w", err)
	}
	fc := &proxy.ForwardConfig{Dest: pol}
	if f.from != "" {
		if fc.From, err = nat.ParseCIDRs(f.from); err != nil {
			return fmt.Errorf("--forward-from: %w", err)
		}
	}
	if f.users != "" {
		fh, err := os.Open(f.users)
		if err != nil {
			return fmt.Errorf("--forward-users: %w", err)
		}
		defer fh.Close()
		if fc.Users, err = proxy.ParseProxyUsers(fh); err != nil {
			return fmt.Errorf("--forward-users %s: %w", f.users, err)
		}
	}
	o.forward = fc
	return nil
}

// passwdMain is `ftpproxy passwd NAME`: it reads a password on standard
// input (its first line) and prints the NAME:HASH line of a
// --forward-users file.
func passwdMain(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) != 1 || args[0] == "" || strings.ContainsAny(args[0], "@: \t") || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, "usage: ftpproxy passwd NAME < password\n  prints NAME:bcrypt-hash for a --forward-users file; NAME without @, : or spaces")
		return 64
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintln(stderr, "ftpproxy passwd:", err)
		return 1
	}
	pass := strings.TrimRight(line, "\r\n")
	if pass == "" {
		fmt.Fprintln(stderr, "ftpproxy passwd: empty password on standard input")
		return 1
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.DefaultCost)
	if err != nil {
		fmt.Fprintln(stderr, "ftpproxy passwd:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s:%s\n", args[0], hash)
	return 0
}
