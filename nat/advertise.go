package nat

import "net/netip"

// Advertiser picks the address a passive reply tells the client to connect
// to.
type Advertiser struct {
	// Static, if valid, is advertised to every client whose control
	// connection uses the same address family. If it is the zero Addr, the
	// local address the client's control connection reached is advertised:
	// the client demonstrably can reach it.
	Static netip.Addr
}

// Advertise returns the address to put in a 227 reply for a client at
// client whose control connection arrived at local.
func (a Advertiser) Advertise(client, local netip.Addr) netip.Addr {
	local = local.Unmap()
	if a.Static.IsValid() && a.Static.Unmap().Is4() == local.Is4() {
		return a.Static.Unmap()
	}
	return local
}

// ListenAddr returns the address a passive data listener binds to so that it
// is reachable both at the advertised address and at the address the client
// dialed for its control connection: many clients (curl since 7.74, FileZilla
// for unroutable addresses) ignore the address in a 227 reply and dial the
// control connection's address with the announced port, and EPSV carries no
// address at all. When the two are the same, only that address is bound;
// otherwise the unspecified address of the family.
func ListenAddr(advertised, local netip.Addr) netip.Addr {
	local = local.Unmap()
	if advertised.Unmap() == local {
		return local
	}
	if local.Is4() {
		return netip.IPv4Unspecified()
	}
	return netip.IPv6Unspecified()
}
