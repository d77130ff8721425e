//go:build interop

package probe

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

// The topology, four network namespaces named <prefix>-<role>:
//
//	cli  192.0.2.10 (eth0), default route via the router; resolves
//	     ftp.example.net to 198.51.100.10 (/etc/netns/<prefix>-cli/hosts)
//	lan  10.40.0.2 (eth0), default route via the router, which
//	     masquerades it: a client behind NAT
//	rtr  192.0.2.1 (cli0), 10.40.0.1 (lan0), 198.51.100.1 (srv0); forwards,
//	     with the case's firewall rules (nftables) on the way to srv
//	srv  198.51.100.10-14 (eth0), a route to 192.0.2.0/24 via the router,
//	     none to 10.40.0.0/24 and no default route
//
// The servers, all in srv:
//
//	198.51.100.10:21    vsftpd, FTPS offered (ftp.example.net)
//	198.51.100.10:990   vsftpd, implicit FTPS
//	198.51.100.10:2121  ftpproxy in front of 198.51.100.10:21, FTPS offered
//	198.51.100.11:21    pure-ftpd, FTPS offered
//	198.51.100.12:21    proftpd, FTPS offered
//	198.51.100.13:21    vsftpd with pasv_address=10.99.0.5 (routed nowhere)
//	198.51.100.14:21    an SSH banner, not FTP
//
// No interface, address or route is added to the namespace the test runs
// in: every veth pair is created inside one test namespace with its peer
// placed directly in another.
const (
	cliIP    = "192.0.2.10"
	rtrCliIP = "192.0.2.1"
	lanIP    = "10.40.0.2"
	rtrLanIP = "10.40.0.1"
	rtrSrvIP = "198.51.100.1"
	ftpIP    = "198.51.100.10" // vsftpd :21, implicit vsftpd :990, ftpproxy :2121
	pureIP   = "198.51.100.11"
	proIP    = "198.51.100.12"
	natSrvIP = "198.51.100.13" // vsftpd announcing foreignIP
	sshIP    = "198.51.100.14"

	ftpName   = "ftp.example.net" // ftpIP, in the cli namespace's hosts file
	foreignIP = "10.99.0.5"       // in the 227 of natSrvIP; no route leads there
)

// Namespace roles.
const (
	nsCli = "cli"
	nsLan = "lan"
	nsRtr = "rtr"
	nsSrv = "srv"
)

// topo is the set of namespaces of one run.
type topo struct {
	prefix  string
	created []string // full names, in creation order
	etc     string   // /etc/netns/<prefix>-cli, if written
}

// name returns the full namespace name of a role.
func (tp *topo) name(role string) string { return tp.prefix + "-" + role }

// ip runs the ip tool with a bounded time.
func ip(ctx context.Context, args ...string) error {
	_, err := peers.RunTool(ctx, 20*time.Second, append([]string{"ip"}, args...)...)
	return err
}

// build creates the namespaces, links, addresses, routes, sysctls and the
// client's hosts file. The error says which step the kernel refused.
func (tp *topo) build(ctx context.Context) error {
	for _, role := range []string{nsCli, nsLan, nsRtr, nsSrv} {
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
		{nsRtr, "cli0", nsCli, "eth0"},
		{nsRtr, "lan0", nsLan, "eth0"},
		{nsRtr, "srv0", nsSrv, "eth0"},
	}
	for _, l := range links {
		if err := ip(ctx, "-n", tp.name(l.ns), "link", "add", l.dev, "type", "veth", "peer", "name", l.peerDev, "netns", tp.name(l.peerNS)); err != nil {
			return fmt.Errorf("the kernel refused a veth pair: %w", err)
		}
	}
	addrs := []struct{ ns, dev, cidr string }{
		{nsCli, "eth0", cliIP + "/24"},
		{nsLan, "eth0", lanIP + "/24"},
		{nsRtr, "cli0", rtrCliIP + "/24"},
		{nsRtr, "lan0", rtrLanIP + "/24"},
		{nsRtr, "srv0", rtrSrvIP + "/24"},
		{nsSrv, "eth0", ftpIP + "/24"},
		{nsSrv, "eth0", pureIP + "/24"},
		{nsSrv, "eth0", proIP + "/24"},
		{nsSrv, "eth0", natSrvIP + "/24"},
		{nsSrv, "eth0", sshIP + "/24"},
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
		{nsCli, []string{"default", "via", rtrCliIP}},
		{nsLan, []string{"default", "via", rtrLanIP}},
		{nsSrv, []string{"192.0.2.0/24", "via", rtrSrvIP}},
	}
	for _, r := range routes {
		if err := ip(ctx, append([]string{"-n", tp.name(r.ns), "route", "add"}, r.args...)...); err != nil {
			return err
		}
	}
	err := tp.in(nsRtr, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644)
	})
	if err != nil {
		return fmt.Errorf("sysctl net.ipv4.ip_forward in %s: %w", tp.name(nsRtr), err)
	}
	// ip netns exec mounts the files of /etc/netns/<name> over /etc for
	// the programs it runs.
	tp.etc = filepath.Join("/etc/netns", tp.name(nsCli))
	if err := os.MkdirAll(tp.etc, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(tp.etc, "hosts"), []byte("127.0.0.1 localhost\n"+ftpIP+" "+ftpName+"\n"), 0o644)
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

// firewall loads the router's ruleset with the case's rules, replacing
// whatever it had.
func (tp *topo) firewall(ctx context.Context, rules string) error {
	path := fmt.Sprintf("%s/nft-%s-%d.conf", os.TempDir(), tp.name(nsRtr), time.Now().UnixNano())
	if err := os.WriteFile(path, []byte("flush ruleset\n"+routerRules(rules)), 0o600); err != nil {
		return err
	}
	defer os.Remove(path)
	_, err := peers.RunTool(ctx, 20*time.Second, "ip", "netns", "exec", tp.name(nsRtr), "nft", "-f", path)
	return err
}

// routerRules is the router's ruleset. The client net reaches the server
// net and back; the NAT LAN is masqueraded onto the server net and, like a
// home router, lets in only replies and connections conntrack relates to
// them. rules, the case's blocks, apply to what goes from the client nets
// to the servers.
func routerRules(rules string) string {
	var b strings.Builder
	for _, r := range strings.Split(strings.TrimSpace(rules), "\n") {
		if r = strings.TrimSpace(r); r != "" {
			fmt.Fprintf(&b, "    oifname \"srv0\" %s\n", r)
		}
	}
	return fmt.Sprintf(`table ip ftpprobe {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
%s    iifname "lan0" oifname "srv0" accept
    iifname "cli0" oifname "srv0" accept
    iifname "srv0" oifname "cli0" accept
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr 10.40.0.0/24 oifname "srv0" masquerade
  }
}
`, b.String())
}

// The case's rules for routerRules.
const (
	openPath   = ""
	drop21     = "ip daddr " + ftpIP + " tcp dport { 21, 30000-30049 } drop" // and the passive range
	reset21    = "ip daddr " + ftpIP + " tcp dport 21 reject with tcp reset"
	prohibit21 = "ip daddr " + ftpIP + " tcp dport 21 reject with icmp type admin-prohibited"
	dropPasv   = "ip daddr " + ftpIP + " tcp dport 30000-30049 drop"
)
