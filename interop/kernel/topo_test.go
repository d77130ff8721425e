//go:build interop

package kernel

import "github.com/ftpproxy/ftpproxy/interop/peers"

// The topology, six network namespaces named <prefix>-<role>:
//
//	cli    10.10.0.2 (eth0), default route via the router
//	rtr    10.10.0.1 (lan0), 198.51.100.1 (wan0); forwards and masquerades
//	       the client LAN onto wan0; a route to the server net via the
//	       proxy host, for the direct comparison
//	pxy    198.51.100.10 (wan0)        the proxy's public address
//	       10.20.0.1, fd00:20::1 (srv0) its leg into the server net
//	       10.30.0.1, fd00:1::1 (in0)   the inside/IPv6 client net
//	       198.18.0.1 (th0)             the thief's net
//	       forwarding on (IPv4 and IPv6) and conntrack accounting on, as
//	       the kernel data path needs: while a proxy with the forward
//	       guard runs, nothing but its redirected flows crosses
//	srv    10.20.0.2, fd00:20::2 (eth0) the FTP servers; a route back to
//	       the public net via the proxy host (the direct comparison)
//	in     10.30.0.2, fd00:1::2 (eth0)  the inside client, IPv4 and IPv6
//	thief  198.18.0.2 (eth0), default route via the proxy host: another
//	       address on the proxy's client side
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
	pxyThIP  = "198.18.0.1"
	srvIP    = "10.20.0.2"
	inIP     = "10.30.0.2"
	thiefIP  = "198.18.0.2"
	pxyIn6   = "fd00:1::1"
	in6      = "fd00:1::2"
	pxySrv6  = "fd00:20::1"
	srv6     = "fd00:20::2"
)

// Namespace roles.
const (
	nsCli   = "cli"
	nsRtr   = "rtr"
	nsPxy   = "pxy"
	nsSrv   = "srv"
	nsIn    = "in"
	nsThief = "thief"
)

// newTopo describes the topology of one run.
func newTopo(prefix string) *peers.Topology {
	return &peers.Topology{
		Prefix: prefix,
		Roles:  []string{nsCli, nsRtr, nsPxy, nsSrv, nsIn, nsThief},
		Links: []peers.Link{
			{Role: nsRtr, Dev: "lan0", PeerRole: nsCli, PeerDev: "eth0"},
			{Role: nsRtr, Dev: "wan0", PeerRole: nsPxy, PeerDev: "wan0"},
			{Role: nsPxy, Dev: "srv0", PeerRole: nsSrv, PeerDev: "eth0"},
			{Role: nsPxy, Dev: "in0", PeerRole: nsIn, PeerDev: "eth0"},
			{Role: nsPxy, Dev: "th0", PeerRole: nsThief, PeerDev: "eth0"},
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
			{Role: nsPxy, Dev: "th0", CIDR: pxyThIP + "/24"},
			{Role: nsSrv, Dev: "eth0", CIDR: srvIP + "/24"},
			{Role: nsSrv, Dev: "eth0", CIDR: srv6 + "/64"},
			{Role: nsIn, Dev: "eth0", CIDR: inIP + "/24"},
			{Role: nsIn, Dev: "eth0", CIDR: in6 + "/64"},
			{Role: nsThief, Dev: "eth0", CIDR: thiefIP + "/24"},
		},
		Routes: []peers.Route{
			{Role: nsCli, Args: []string{"default", "via", rtrLanIP}},
			{Role: nsThief, Args: []string{"default", "via", pxyThIP}},
			// The direct comparison: the client reaches the server routed
			// through the proxy host, which only works with no guard on.
			{Role: nsRtr, Args: []string{"10.20.0.0/24", "via", pxyWanIP}},
			{Role: nsSrv, Args: []string{"198.51.100.0/24", "via", pxySrvIP}},
		},
		Sysctls: []peers.Sysctl{
			{Role: nsRtr, Key: "net/ipv4/ip_forward", Value: "1"},
			{Role: nsPxy, Key: "net/ipv4/ip_forward", Value: "1"},
			{Role: nsPxy, Key: "net/ipv6/conf/all/forwarding", Value: "1"},
			{Role: nsPxy, Key: "net/netfilter/nf_conntrack_acct", Value: "1"},
		},
	}
}

// routerRules is the router's ruleset: it masquerades the client LAN onto
// the public net and, like a home router, lets in from the public side
// only replies and connections conntrack relates to an existing one.
const routerRules = `table ip ftpkrn {
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "lan0" oifname "wan0" accept
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan0" masquerade
  }
}
`
