//go:build interop

package forward

import "github.com/ftpproxy/ftpproxy/interop/peers"

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

// newTopo describes the topology of one run.
func newTopo(prefix string) *peers.Topology {
	return &peers.Topology{
		Prefix: prefix,
		Roles:  []string{nsCli, nsPxy, nsSrv},
		Links: []peers.Link{
			{Role: nsPxy, Dev: "cli0", PeerRole: nsCli, PeerDev: "eth0"},
			{Role: nsPxy, Dev: "srv0", PeerRole: nsSrv, PeerDev: "eth0"},
		},
		Addrs: []peers.Addr{
			{Role: nsCli, Dev: "eth0", CIDR: cliIn + "/24"},
			{Role: nsCli, Dev: "eth0", CIDR: cliOut + "/24"},
			{Role: nsPxy, Dev: "cli0", CIDR: pxyCliIP + "/24"},
			{Role: nsPxy, Dev: "srv0", CIDR: pxySrvIP + "/24"},
			{Role: nsSrv, Dev: "eth0", CIDR: vsftpdIP + "/24"},
			{Role: nsSrv, Dev: "eth0", CIDR: proftpdIP + "/24"},
			{Role: nsSrv, Dev: "eth0", CIDR: trapIP + "/24"},
			{Role: nsSrv, Dev: "eth0", CIDR: unlistedIP + "/24"},
			{Role: nsSrv, Dev: "eth0", CIDR: metaIP + "/32"},
		},
		Routes: []peers.Route{
			{Role: nsCli, Args: []string{"default", "via", pxyCliIP}},
			{Role: nsSrv, Args: []string{"10.71.1.0/24", "via", pxySrvIP}},
			// So that a proxy that dialled the metadata address would reach
			// the trap there instead of failing on a missing route.
			{Role: nsPxy, Args: []string{metaIP + "/32", "dev", "srv0"}},
		},
		Sysctls: []peers.Sysctl{
			{Role: nsPxy, Key: "net/ipv4/ip_forward", Value: "0"},
			{Role: nsPxy, Key: "net/ipv6/conf/all/forwarding", Value: "0"},
		},
		// ip netns exec mounts the files of /etc/netns/<name> over /etc for
		// the programs it runs: the proxy, started that way, resolves these
		// names and no others.
		Hosts: []peers.Hosts{
			{Role: nsPxy, Content: "127.0.0.1 localhost\n127.0.0.1 " + loopName + "\n" + vsftpdIP + " " + vsftpdName + "\n"},
		},
	}
}
