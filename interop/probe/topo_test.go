//go:build interop

package probe

import (
	"context"
	"fmt"
	"strings"

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

// newTopo describes the topology of one run.
func newTopo(prefix string) *peers.Topology {
	return &peers.Topology{
		Prefix: prefix,
		Roles:  []string{nsCli, nsLan, nsRtr, nsSrv},
		Links: []peers.Link{
			{Role: nsRtr, Dev: "cli0", PeerRole: nsCli, PeerDev: "eth0"},
			{Role: nsRtr, Dev: "lan0", PeerRole: nsLan, PeerDev: "eth0"},
			{Role: nsRtr, Dev: "srv0", PeerRole: nsSrv, PeerDev: "eth0"},
		},
		Addrs: []peers.Addr{
			{Role: nsCli, Dev: "eth0", CIDR: cliIP + "/24"},
			{Role: nsLan, Dev: "eth0", CIDR: lanIP + "/24"},
			{Role: nsRtr, Dev: "cli0", CIDR: rtrCliIP + "/24"},
			{Role: nsRtr, Dev: "lan0", CIDR: rtrLanIP + "/24"},
			{Role: nsRtr, Dev: "srv0", CIDR: rtrSrvIP + "/24"},
			{Role: nsSrv, Dev: "eth0", CIDR: ftpIP + "/24"},
			{Role: nsSrv, Dev: "eth0", CIDR: pureIP + "/24"},
			{Role: nsSrv, Dev: "eth0", CIDR: proIP + "/24"},
			{Role: nsSrv, Dev: "eth0", CIDR: natSrvIP + "/24"},
			{Role: nsSrv, Dev: "eth0", CIDR: sshIP + "/24"},
		},
		Routes: []peers.Route{
			{Role: nsCli, Args: []string{"default", "via", rtrCliIP}},
			{Role: nsLan, Args: []string{"default", "via", rtrLanIP}},
			{Role: nsSrv, Args: []string{"192.0.2.0/24", "via", rtrSrvIP}},
		},
		Sysctls: []peers.Sysctl{
			{Role: nsRtr, Key: "net/ipv4/ip_forward", Value: "1"},
		},
		// /etc/netns/<prefix>-cli/hosts, which ip netns exec mounts over
		// /etc/hosts for the probe.
		Hosts: []peers.Hosts{
			{Role: nsCli, Content: "127.0.0.1 localhost\n" + ftpIP + " " + ftpName + "\n"},
		},
	}
}

// firewall loads the router's ruleset with the case's rules, replacing
// whatever it had.
func firewall(ctx context.Context, tp *peers.Topology, rules string) error {
	return tp.Nft(ctx, nsRtr, routerRules(rules))
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
