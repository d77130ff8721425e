//go:build linux

package peers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Topology describes a set of network namespaces named <Prefix>-<role>,
// the veth pairs between them, their addresses, routes and sysctls, and
// hosts files for ip netns exec. Build makes it, Destroy removes what Build
// made. No interface, address or route is added to the namespace the
// caller runs in: every veth pair is created inside one of the topology's
// namespaces with its peer placed directly in another.
//
//	tp := &peers.Topology{Prefix: "ftpx-42", Roles: []string{"cli", "srv"},
//		Links: []peers.Link{{Role: "cli", Dev: "eth0", PeerRole: "srv", PeerDev: "eth0"}},
//		Addrs: []peers.Addr{{Role: "cli", Dev: "eth0", CIDR: "10.9.0.1/24"},
//			{Role: "srv", Dev: "eth0", CIDR: "10.9.0.2/24"}}}
//	defer tp.Destroy()
//	err := tp.Build(ctx)
//	err = tp.In("cli", func() error { _, err := net.Dial("tcp", "10.9.0.2:21"); return err })
type Topology struct {
	Prefix  string
	Roles   []string // the namespaces, created in this order, each with lo up
	Links   []Link
	Addrs   []Addr
	Routes  []Route
	Sysctls []Sysctl
	Hosts   []Hosts

	created []string // namespaces, full names, in creation order
	etc     []string // /etc/netns/<name> directories, in creation order
}

// Link is a veth pair: Dev in Role's namespace, PeerDev in PeerRole's.
// Build sets both ends up once the addresses are on.
type Link struct{ Role, Dev, PeerRole, PeerDev string }

// Addr is an address (CIDR notation) on Dev in Role's namespace. IPv6
// addresses are added nodad: usable at once, with no duplicate address
// detection to wait for.
type Addr struct{ Role, Dev, CIDR string }

// Route is one route in Role's namespace: Args follow `ip route add`.
type Route struct {
	Role string
	Args []string
}

// Sysctl is a value written to /proc/sys/<Key> in Role's namespace, Key
// with slashes (net/ipv4/ip_forward).
type Sysctl struct{ Role, Key, Value string }

// Hosts is the hosts file of Role's namespace: ip netns exec mounts the
// files of /etc/netns/<name> over /etc for the programs it runs, so they
// resolve these names (and, without a line for it, not even localhost).
type Hosts struct{ Role, Content string }

// netnsToolLimit bounds each ip and nft command of a topology.
const netnsToolLimit = 20 * time.Second

// Name returns the full namespace name of a role.
func (t *Topology) Name(role string) string { return t.Prefix + "-" + role }

// step is one step of Build: an ip command, a sysctl or a hosts file.
type step struct {
	what    string   // what the kernel refused, for the error
	ip      []string // the ip command's arguments
	creates string   // the namespace an ip step creates
	sysctl  *Sysctl
	hosts   *Hosts
}

// steps is what Build does, in order: the namespaces (lo up in each), the
// veth pairs, the addresses, both ends of every link up, the routes, the
// sysctls and the hosts files.
func (t *Topology) steps() []step {
	var s []step
	for _, role := range t.Roles {
		n := t.Name(role)
		s = append(s,
			step{what: "the kernel refused a network namespace", ip: []string{"netns", "add", n}, creates: n},
			step{what: "lo up in " + n, ip: []string{"-n", n, "link", "set", "lo", "up"}})
	}
	for _, l := range t.Links {
		s = append(s, step{what: "the kernel refused a veth pair",
			ip: []string{"-n", t.Name(l.Role), "link", "add", l.Dev, "type", "veth", "peer", "name", l.PeerDev, "netns", t.Name(l.PeerRole)}})
	}
	for _, a := range t.Addrs {
		args := []string{"-n", t.Name(a.Role), "addr", "add", a.CIDR, "dev", a.Dev}
		if strings.Contains(a.CIDR, ":") {
			args = append(args, "nodad")
		}
		s = append(s, step{what: "address " + a.CIDR + " on " + a.Dev + " in " + t.Name(a.Role), ip: args})
	}
	for _, l := range t.Links {
		for _, end := range [][2]string{{l.Role, l.Dev}, {l.PeerRole, l.PeerDev}} {
			n := t.Name(end[0])
			s = append(s, step{what: end[1] + " up in " + n, ip: []string{"-n", n, "link", "set", end[1], "up"}})
		}
	}
	for _, r := range t.Routes {
		n := t.Name(r.Role)
		s = append(s, step{what: "route " + strings.Join(r.Args, " ") + " in " + n,
			ip: append([]string{"-n", n, "route", "add"}, r.Args...)})
	}
	for i := range t.Sysctls {
		c := &t.Sysctls[i]
		s = append(s, step{what: "sysctl " + strings.ReplaceAll(c.Key, "/", ".") + " in " + t.Name(c.Role), sysctl: c})
	}
	for i := range t.Hosts {
		h := &t.Hosts[i]
		s = append(s, step{what: "hosts file of " + t.Name(h.Role), hosts: h})
	}
	return s
}

// check reports a description that names a role it does not declare.
func (t *Topology) check() error {
	if t.Prefix == "" {
		return errors.New("topology: no prefix")
	}
	roles := map[string]bool{}
	for _, r := range t.Roles {
		if r == "" || roles[r] {
			return fmt.Errorf("topology: role %q empty or declared twice", r)
		}
		roles[r] = true
	}
	var used []string
	for _, l := range t.Links {
		used = append(used, l.Role, l.PeerRole)
	}
	for _, a := range t.Addrs {
		used = append(used, a.Role)
	}
	for _, r := range t.Routes {
		used = append(used, r.Role)
	}
	for _, c := range t.Sysctls {
		used = append(used, c.Role)
	}
	for _, h := range t.Hosts {
		used = append(used, h.Role)
	}
	for _, r := range used {
		if !roles[r] {
			return fmt.Errorf("topology: role %q is not among the roles %v", r, t.Roles)
		}
	}
	return nil
}

// Build creates the namespaces, links, addresses, routes, sysctls and hosts
// files. The error names the step the kernel (or the file system) refused.
// Whatever Build created before that stays for Destroy.
func (t *Topology) Build(ctx context.Context) error {
	if err := t.check(); err != nil {
		return err
	}
	for _, s := range t.steps() {
		var err error
		switch {
		case s.ip != nil:
			err = t.ipTool(ctx, s.ip...)
			if err == nil && s.creates != "" {
				t.created = append(t.created, s.creates)
			}
		case s.sysctl != nil:
			c := s.sysctl
			err = t.In(c.Role, func() error {
				return os.WriteFile("/proc/sys/"+c.Key, []byte(c.Value), 0o644)
			})
		case s.hosts != nil:
			dir := filepath.Join("/etc/netns", t.Name(s.hosts.Role))
			t.etc = append(t.etc, dir)
			if err = os.MkdirAll(dir, 0o755); err == nil {
				err = os.WriteFile(filepath.Join(dir, "hosts"), []byte(s.hosts.Content), 0o644)
			}
		}
		if err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
	}
	return nil
}

// Destroy removes the namespaces and hosts files this topology's Build
// created, and /etc/netns when that is left empty; nothing else. It may be
// called more than once and before Build.
func (t *Topology) Destroy() error {
	var errs []error
	for i := len(t.created) - 1; i >= 0; i-- {
		errs = append(errs, t.ipTool(context.Background(), "netns", "del", t.created[i]))
	}
	t.created = nil
	for i := len(t.etc) - 1; i >= 0; i-- {
		errs = append(errs, os.RemoveAll(t.etc[i]))
		os.Remove(filepath.Dir(t.etc[i])) // only if no other run has one there
	}
	t.etc = nil
	return errors.Join(errs...)
}

// In runs fn on an OS thread of its own that has joined the role's network
// namespace: sockets fn opens and programs it starts (which keep the
// namespace after fn returns) live there. The thread is never handed back
// to the Go scheduler: it ends with fn's goroutine, so no other goroutine
// ever runs in the namespace. Goroutines fn starts run elsewhere.
func (t *Topology) In(role string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread exits with this goroutine.
		f, err := os.Open("/run/netns/" + t.Name(role))
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %v", t.Name(role), err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Within is In for an fn that makes something there, a server, a proxy
// or a socket, and returns what fn returned.
func Within[T any](t *Topology, role string, fn func() (T, error)) (T, error) {
	var v T
	err := t.In(role, func() error {
		var err error
		v, err = fn()
		return err
	})
	return v, err
}

// Exec runs argv in the role's namespace with ip netns exec (which also
// mounts the namespace's hosts file), bounded by limit, and returns its
// stdout; the error is RunTool's.
func (t *Topology) Exec(ctx context.Context, limit time.Duration, role string, argv ...string) (string, error) {
	return RunTool(ctx, limit, append([]string{"ip", "netns", "exec", t.Name(role)}, argv...)...)
}

// Nft loads an nftables ruleset into the role's namespace, replacing
// whatever it had.
func (t *Topology) Nft(ctx context.Context, role, ruleset string) error {
	path := fmt.Sprintf("%s/nft-%s-%d.conf", os.TempDir(), t.Name(role), time.Now().UnixNano())
	if err := os.WriteFile(path, []byte("flush ruleset\n"+ruleset), 0o600); err != nil {
		return err
	}
	defer os.Remove(path)
	_, err := t.Exec(ctx, netnsToolLimit, role, "nft", "-f", path)
	return err
}

// ipTool runs the ip tool with a bounded time.
func (t *Topology) ipTool(ctx context.Context, args ...string) error {
	_, err := RunTool(ctx, netnsToolLimit, append([]string{"ip"}, args...)...)
	return err
}
