//go:build interop

package nat

import (
	"context"
	"fmt"
	"os"
	"strings"
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

// newTopo describes the topology of one run.
func newTopo(prefix string) *peers.Topology {
	return &peers.Topology{
		Prefix: prefix,
		Roles:  []string{nsCli, nsRtr, nsPxy, nsSrv, nsIn},
		Links: []peers.Link{
			{Role: nsRtr, Dev: "lan0", PeerRole: nsCli, PeerDev: "eth0"},
			{Role: nsRtr, Dev: "wan0", PeerRole: nsPxy, PeerDev: "wan0"},
			{Role: nsPxy, Dev: "srv0", PeerRole: nsSrv, PeerDev: "eth0"},
			{Role: nsPxy, Dev: "in0", PeerRole: nsIn, PeerDev: "eth0"},
		},
		Addrs: []peers.Addr{
			{Role: nsCli, Dev: "eth0", CIDR: cliIP + "/24"},
			{Role: nsRtr, Dev: "lan0", CIDR: rtrLanIP + "/24"},
			{Role: nsRtr, Dev: "wan0", CIDR: rtrWanIP + "/24"},
			{Role: nsPxy, Dev: "wan0", CIDR: pxyWanIP + "/24"},
			{Role: nsPxy, Dev: "srv0", CIDR: pxySrvIP + "/24"},
			{Role: nsPxy, Dev: "srv0", CIDR: pxySrv6 + "/64"},
			{Role: nsPxy, Dev: "in0", CIDR: pxyInIP + "/24"},
			{Role: nsPxy, Dev: "in0", CIDR: pxyIn6 + "/64"},
			{Role: nsSrv, Dev: "eth0", CIDR: srvIP + "/24"},
			{Role: nsSrv, Dev: "eth0", CIDR: srv6 + "/64"},
			{Role: nsIn, Dev: "eth0", CIDR: inIP + "/24"},
			{Role: nsIn, Dev: "eth0", CIDR: in6 + "/64"},
		},
		Routes: []peers.Route{
			{Role: nsCli, Args: []string{"default", "via", rtrLanIP}},
		},
		Sysctls: []peers.Sysctl{
			{Role: nsRtr, Key: "net/ipv4/ip_forward", Value: "1"},
			{Role: nsPxy, Key: "net/ipv4/ip_forward", Value: "0"},
			{Role: nsPxy, Key: "net/ipv6/conf/all/forwarding", Value: "0"},
		},
	}
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
