//go:build interop

package nat

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

// The topology, five network namespaces named <prefix>-<role>:
//
//	cli  10.10.0.2 (eth0), default route via the router
//	rtr  10.10.0.1 (lan0), 198.51.100.1 (wan0); forwards and masquerades
//	     the client LAN onto wan0, with or without the kernel's FTP helper
//	pxy  198.51.100.10 (wan0)        the proxy's public address
//	     10.20.0.1, fd00:20::1 (srv0) its leg into the server net
//	     10.30.0.1, fd00:1::1 (in0)   the inside/IPv6 client net
//	     no forwarding: nothing reaches the servers but the proxy (case
//	     h turns it on for a while, as an edge router, and off again)
//	srv  10.20.0.2, fd00:20::2 (eth0) the FTP servers, no default route
//	in   10.30.0.2, fd00:1::2 (eth0)  the inside client, IPv4 and IPv6
//
// No interface, address or route is added to the namespace the test runs
// in: every veth pair is created inside one test namespace with its peer
// placed directly in another.
const (
	cliIP    = "10.10.0.2"
	rtrLanIP = "10.10.0.1"
	rtrWanIP = "198.51.100.1"
	pxyWanIP = "198.51.100.10"
	pxySrvIP = "10.20.0.1"
	pxyInIP  = "10.30.0.1"
	srvIP    = "10.20.0.2"
	inIP     = "10.30.0.2"
	pxyIn6   = "fd00:1::1"
	in6      = "fd00:1::2"
	pxySrv6  = "fd00:20::1"
	srv6     = "fd00:20::2"
)

// Namespace roles.
const (
	nsCli = "cli"
	nsRtr = "rtr"
	nsPxy = "pxy"
	nsSrv = "srv"
	nsIn  = "in"
)

// topo is the set of namespaces of one run.
type topo struct {
	prefix  string
	created []string // full names, in creation order
}

// name returns the full namespace name of a role.
func (tp *topo) name(role string) string { return tp.prefix + "-" + role }

// ip runs the ip tool with a bounded time.
func ip(ctx context.Context, args ...string) error {
	_, err := peers.RunTool(ctx, 20*time.Second, append([]string{"ip"}, args...)...)
	return err
}

// build creates the namespaces, links, addresses, routes and sysctls. The
// error says which step the kernel refused.
func (tp *topo) build(ctx context.Context) error {
	for _, role := range []string{nsCli, nsRtr, nsPxy, nsSrv, nsIn} {
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
		{nsRtr, "lan0", nsCli, "eth0"},
		{nsRtr, "wan0", nsPxy, "wan0"},
		{nsPxy, "srv0", nsSrv, "eth0"},
		{nsPxy, "in0", nsIn, "eth0"},
	}
	for _, l := range links {
		if err := ip(ctx, "-n", tp.name(l.ns), "link", "add", l.dev, "type", "veth", "peer", "name", l.peerDev, "netns", tp.name(l.peerNS)); err != nil {
			return fmt.Errorf("the kernel refused a veth pair: %w", err)
		}
	}
	addrs := []struct{ ns, dev, cidr string }{
		{nsCli, "eth0", cliIP + "/24"},
		{nsRtr, "lan0", rtrLanIP + "/24"},
		{nsRtr, "wan0", rtrWanIP + "/24"},
		{nsPxy, "wan0", pxyWanIP + "/24"},
		{nsPxy, "srv0", pxySrvIP + "/24"},
		{nsPxy, "srv0", pxySrv6 + "/64"},
		{nsPxy, "in0", pxyInIP + "/24"},
		{nsPxy, "in0", pxyIn6 + "/64"},
		{nsSrv, "eth0", srvIP + "/24"},
		{nsSrv, "eth0", srv6 + "/64"},
		{nsIn, "eth0", inIP + "/24"},
		{nsIn, "eth0", in6 + "/64"},
	}
	for _, a := range addrs {
		args := []string{"-n", tp.name(a.ns), "addr", "add", a.cidr, "dev", a.dev}
		if strings.Contains(a.cidr, ":") {
			args = append(args, "nodad") // usable at once, no duplicate address detection wait
		}
		if err := ip(ctx, args...); err != nil {
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
	if err := ip(ctx, "-n", tp.name(nsCli), "route", "add", "default", "via", rtrLanIP); err != nil {
		return err
	}
	sysctls := []struct{ ns, key, val string }{
		{nsRtr, "net/ipv4/ip_forward", "1"},
		{nsPxy, "net/ipv4/ip_forward", "0"},
		{nsPxy, "net/ipv6/conf/all/forwarding", "0"},
	}
	for _, s := range sysctls {
		err := tp.in(s.ns, func() error {
			return os.WriteFile("/proc/sys/"+s.key, []byte(s.val), 0o644)
		})
		if err != nil {
			return fmt.Errorf("sysctl %s in %s: %w", s.key, s.ns, err)
		}
	}
	return nil
}

// destroy removes the namespaces this run created.
func (tp *topo) destroy() {
	for i := len(tp.created) - 1; i >= 0; i-- {
		ip(context.Background(), "netns", "del", tp.created[i])
	}
	tp.created = nil
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

// nft loads a ruleset into a namespace, replacing whatever it had.
func (tp *topo) nft(ctx context.Context, role, ruleset string) error {
	path := fmt.Sprintf("%s/nft-%s-%d.conf", os.TempDir(), tp.name(role), time.Now().UnixNano())
	if err := os.WriteFile(path, []byte("flush ruleset\n"+ruleset), 0o600); err != nil {
		return err
	}
	defer os.Remove(path)
	_, err := peers.RunTool(ctx, 20*time.Second, "ip", "netns", "exec", tp.name(role), "nft", "-f", path)
	return err
}

// The router's rulesets. Both masquerade the client LAN onto the public
// net and, like a home router, let in from the public side only replies
// and connections conntrack relates to an existing one. helperNAT also
// runs the kernel's FTP helper on the control connections to the proxy's
// port, as home routers do: it rewrites the client's PORT/EPRT to the
// public address and lets the proxy's data connection in.
func routerRules(helper bool, proxyPort int) string {
	var helperObj, helperRule string
	if helper {
		helperObj = "  ct helper ftp-standard { type \"ftp\" protocol tcp; }\n"
		helperRule = fmt.Sprintf("    iifname \"lan0\" tcp dport %d ct helper set \"ftp-standard\"\n", proxyPort)
	}
	return fmt.Sprintf(`table ip ftpnat {
%s  chain helpers {
    type filter hook prerouting priority filter; policy accept;
%s  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan0" oifname "wan0" accept
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan0" masquerade
  }
}
`, helperObj, helperRule)
}

// kernelNotes describes what this kernel offers for the FTP helper: module
// loading and the helper modules, built in or loaded.
func kernelNotes() string {
	var notes []string
	if _, err := os.Stat("/proc/modules"); err != nil {
		notes = append(notes, "no loadable module support (/proc/modules absent), so modprobe cannot add anything")
	} else {
		notes = append(notes, "loadable modules supported")
	}
	for _, m := range []string{"nf_conntrack_ftp", "nf_nat_ftp"} {
		if _, err := os.Stat("/sys/module/" + m); err == nil {
			notes = append(notes, m+" present (/sys/module/"+m+")")
		} else {
			notes = append(notes, m+" not listed in /sys/module (built-in modules without parameters are not)")
		}
	}
	if cfg, err := readKernelConfig(); err == nil {
		for _, k := range []string{"CONFIG_NF_CONNTRACK_FTP", "CONFIG_NF_NAT_FTP", "CONFIG_NFT_CT", "CONFIG_NFT_MASQ"} {
			v := "unset"
			for _, line := range strings.Split(cfg, "\n") {
				if strings.HasPrefix(line, k+"=") {
					v = strings.TrimPrefix(line, k+"=")
				}
			}
			notes = append(notes, k+"="+v)
		}
	}
	return strings.Join(notes, "; ")
}

// readKernelConfig returns /proc/config.gz uncompressed, if the kernel
// exposes it.
func readKernelConfig() (string, error) {
	if _, err := os.Stat("/proc/config.gz"); err != nil {
		return "", err
	}
	return peers.RunTool(context.Background(), 10*time.Second, "zcat", "/proc/config.gz")
}

// tryModprobe loads the FTP helper modules where the kernel has loadable
// modules, and says what happened.
func tryModprobe(ctx context.Context) string {
	if _, err := os.Stat("/proc/modules"); err != nil {
		return "modprobe not tried: the kernel has no loadable module support"
	}
	out, err := peers.RunTool(ctx, 20*time.Second, "modprobe", "nf_conntrack_ftp", "nf_nat_ftp")
	if err != nil {
		return "modprobe nf_conntrack_ftp nf_nat_ftp failed: " + peers.Tail(err.Error(), 300)
	}
	return "modprobe nf_conntrack_ftp nf_nat_ftp: ok " + strings.TrimSpace(out)
}
