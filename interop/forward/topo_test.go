//go:build interop

package forward

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

// The topology, three network namespaces named <prefix>-<role>:
//
//	cli  10.71.1.10 (eth0, inside --forward-from), 10.71.1.20 (eth0,
//	     outside it); default route via the proxy
//	pxy  10.71.1.1 (cli0), 10.71.2.1 (srv0); no forwarding, so nothing
//	     reaches the servers but the proxy's own connections; a route to
//	     169.254.169.254 on srv0; /etc/netns/<prefix>-pxy/hosts for the
//	     names below
//	srv  10.71.2.21 (vsftpd :21), 10.71.2.22 (proftpd :21, and a trap
//	     :990), 10.71.2.23 (a trap :21 and :2121), 10.71.2.24 (a trap :21),
//	     169.254.169.254 (a trap :21); a route to the client net via the
//	     proxy, so that only the proxy's refusal to forward keeps the
//	     client out
//
// The traps are listeners of the test that count the connections they
// accept: a refused destination must see none. Two more live in pxy, on
// 127.0.0.1:21 and on the proxy's own 10.71.2.1:21.
//
// No interface, address or route is added to the namespace the test runs
// in: every veth pair is created inside one test namespace with its peer
// placed directly in another.
const (
	cliIn      = "10.71.1.10" // in --forward-from
	cliOut     = "10.71.1.20" // not in --forward-from
	pxyCliIP   = "10.71.1.1"  // the proxy's listeners
	pxySrvIP   = "10.71.2.1"  // the proxy's side of the server net
	vsftpdIP   = "10.71.2.21"
	proftpdIP  = "10.71.2.22"
	trapIP     = "10.71.2.23"
	unlistedIP = "10.71.2.24"
	metaIP     = "169.254.169.254" // where clouds put their metadata service

	// The proxy's hosts file (ip netns exec mounts it over /etc/hosts).
	loopName   = "loop.fwd.test"   // 127.0.0.1
	vsftpdName = "vsftpd.fwd.test" // vsftpdIP
)

// Namespace roles.
const (
	nsCli = "cli"
	nsPxy = "pxy"
	nsSrv = "srv"
)

// topo is the set of namespaces of one run.
type topo struct {
	prefix  string
	created []string // full names, in creation order
	etc     string   // /etc/netns/<prefix>-pxy, if written
}

// name returns the full namespace name of a role.
func (tp *topo) name(role string) string { return tp.prefix + "-" + role }

// ip runs the ip tool with a bounded time.
func ip(ctx context.Context, args ...string) error {
	_, err := peers.RunTool(ctx, 20*time.Second, append([]string{"ip"}, args...)...)
	return err
}

// build creates the namespaces, links, addresses, routes, sysctls and the
// proxy's hosts file. The error says which step the kernel refused.
func (tp *topo) build(ctx context.Context) error {
	for _, role := range []string{nsCli, nsPxy, nsSrv} {
		n := tp.name(role)
		if err := ip(ctx, "netns", "add", n); err != nil {
			return fmt.Errorf("the kernel refused a network namespace: %w", err)
		}
		tp.created = append(tp.created, n)
		if err := ip(ctx, "-n", n, "link", "set", "lo", "up"); err != nil {
			return err
		}
	}
	links := []struct{ ns, dev, peerNS, peerDev string }{
		{nsPxy, "cli0", nsCli, "eth0"},
		{nsPxy, "srv0", nsSrv, "eth0"},
	}
	for _, l := range links {
		if err := ip(ctx, "-n", tp.name(l.ns), "link", "add", l.dev, "type", "veth", "peer", "name", l.peerDev, "netns", tp.name(l.peerNS)); err != nil {
			return fmt.Errorf("the kernel refused a veth pair: %w", err)
		}
	}
	addrs := []struct{ ns, dev, cidr string }{
		{nsCli, "eth0", cliIn + "/24"},
		{nsCli, "eth0", cliOut + "/24"},
		{nsPxy, "cli0", pxyCliIP + "/24"},
		{nsPxy, "srv0", pxySrvIP + "/24"},
		{nsSrv, "eth0", vsftpdIP + "/24"},
		{nsSrv, "eth0", proftpdIP + "/24"},
		{nsSrv, "eth0", trapIP + "/24"},
		{nsSrv, "eth0", unlistedIP + "/24"},
		{nsSrv, "eth0", metaIP + "/32"},
	}
	for _, a := range addrs {
		if err := ip(ctx, "-n", tp.name(a.ns), "addr", "add", a.cidr, "dev", a.dev); err != nil {
			return err
		}
	}
	for _, l := range links {
		if err := ip(ctx, "-n", tp.name(l.ns), "link", "set", l.dev, "up"); err != nil {
			return err
		}
		if err := ip(ctx, "-n", tp.name(l.peerNS), "link", "set", l.peerDev, "up"); err != nil {
			return err
		}
	}
	routes := []struct {
		ns   string
		args []string
	}{
		{nsCli, []string{"default", "via", pxyCliIP}},
		{nsSrv, []string{"10.71.1.0/24", "via", pxySrvIP}},
		// So that a proxy that dialled the metadata address would reach
		// the trap there instead of failing on a missing route.
		{nsPxy, []string{metaIP + "/32", "dev", "srv0"}},
	}
	for _, r := range routes {
		if err := ip(ctx, append([]string{"-n", tp.name(r.ns), "route", "add"}, r.args...)...); err != nil {
			return err
		}
	}
	for _, key := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
		err := tp.in(nsPxy, func() error {
			return os.WriteFile("/proc/sys/"+key, []byte("0"), 0o644)
		})
		if err != nil {
			return fmt.Errorf("sysctl %s in %s: %w", key, tp.name(nsPxy), err)
		}
	}
	// ip netns exec mounts the files of /etc/netns/<name> over /etc for
	// the programs it runs: the proxy, started that way, resolves these
	// names and no others.
	tp.etc = filepath.Join("/etc/netns", tp.name(nsPxy))
	if err := os.MkdirAll(tp.etc, 0o755); err != nil {
		return err
	}
	hosts := "127.0.0.1 localhost\n127.0.0.1 " + loopName + "\n" + vsftpdIP + " " + vsftpdName + "\n"
	return os.WriteFile(filepath.Join(tp.etc, "hosts"), []byte(hosts), 0o644)
}

// destroy removes the namespaces and the hosts file this run created.
func (tp *topo) destroy() {
	for i := len(tp.created) - 1; i >= 0; i-- {
		ip(context.Background(), "netns", "del", tp.created[i])
	}
	tp.created = nil
	if tp.etc != "" {
		os.RemoveAll(tp.etc)
		os.Remove(filepath.Dir(tp.etc)) // only if no other run has one there
		tp.etc = ""
	}
}

// in runs fn on an OS thread of its own that has joined the role's network
// namespace: sockets fn opens and programs it starts (which keep the
// namespace after fn returns) live there. The thread is never handed back
// to the Go scheduler: it ends with fn's goroutine, so no other goroutine
// ever runs in the namespace. Goroutines fn starts run elsewhere.
func (tp *topo) in(role string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread exits with this goroutine.
		f, err := os.Open("/run/netns/" + tp.name(role))
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		trap, ok := setnsTrap[runtime.GOARCH]
		if !ok {
			errc <- fmt.Errorf("setns: system call number unknown on %s", runtime.GOARCH)
			return
		}
		if _, _, e := syscall.RawSyscall(trap, f.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
			errc <- fmt.Errorf("setns %s: %v", tp.name(role), e)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// setnsTrap is the setns(2) system call number per architecture; package
// syscall names it only on some.
var setnsTrap = map[string]uintptr{
	"amd64": 308, "386": 346, "arm64": 268, "arm": 375, "riscv64": 268,
	"loong64": 268, "ppc64le": 350, "ppc64": 350, "s390x": 339,
}
