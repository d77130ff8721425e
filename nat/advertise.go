package nat

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	sockaddrtemplate "github.com/hashicorp/go-sockaddr/template"
)

// ErrAdvertise reports an --advertise value that cannot be used.
var ErrAdvertise = errors.New("nat: bad advertised address")

// Rule tells clients from one network which address to connect to: split
// horizon, so that clients on the inside get a private address and everyone
// else the public one.
type Rule struct {
	Clients netip.Prefix
	Addr    netip.Addr
}

// Advertiser picks the address a passive reply tells the client to connect
// to.
type Advertiser struct {
	// Rules are tried in order; the first whose network holds the client's
	// address, and whose address is of the client's family, wins.
	Rules []Rule

	// Static, if valid, is advertised to every client no rule matched whose
	// control connection uses the same address family. If it is the zero
	// Addr, the local address the client's control connection reached is
	// advertised: the client demonstrably can reach it.
	Static netip.Addr
}

// Advertise returns the address to put in a passive reply for a client at
// client whose control connection arrived at local.
func (a Advertiser) Advertise(client, local netip.Addr) netip.Addr {
	client, local = client.Unmap(), local.Unmap()
	for _, r := range a.Rules {
		if r.Clients.Contains(client) && r.Addr.Is4() == local.Is4() {
			return r.Addr
		}
	}
	if a.Static.IsValid() && a.Static.Is4() == local.Is4() {
		return a.Static
	}
	return local
}

// Resolver looks up a host name; *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// ParseAdvertiser builds an Advertiser from --advertise values, each either
// "ADDRESS" (the fallback; at most one) or "CIDR=ADDRESS" (a rule). An
// ADDRESS is an IP literal, a go-sockaddr template such as
// {{ GetPrivateIP }} or {{ GetInterfaceIP "eth0" }}, or a host name looked
// up with res. Names and templates are resolved now: call it again to pick
// up a changed address.
func ParseAdvertiser(ctx context.Context, values []string, res Resolver) (Advertiser, error) {
	var a Advertiser
	for _, v := range values {
		cidr, addr, isRule := strings.Cut(v, "=")
		if !isRule {
			addr = v
		}
		ip, err := resolveAddr(ctx, strings.TrimSpace(addr), res)
		if err != nil {
			return Advertiser{}, fmt.Errorf("%q: %w", v, err)
		}
		if !isRule {
			if a.Static.IsValid() {
				return Advertiser{}, fmt.Errorf("%w: %q: only one fallback address; use CIDR=ADDRESS for the others", ErrAdvertise, v)
			}
			a.Static = ip
			continue
		}
		p, err := netip.ParsePrefix(strings.TrimSpace(cidr))
		if err != nil {
			return Advertiser{}, fmt.Errorf("%w: %q: %q is not a CIDR", ErrAdvertise, v, cidr)
		}
		a.Rules = append(a.Rules, Rule{Clients: p.Masked(), Addr: ip})
	}
	return a, nil
}

// resolveAddr turns one ADDRESS into an IP.
func resolveAddr(ctx context.Context, s string, res Resolver) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, fmt.Errorf("%w: empty", ErrAdvertise)
	}
	if ip, err := netip.ParseAddr(s); err == nil {
		return connectable(s, ip)
	}
	if strings.Contains(s, "{{") {
		out, err := sockaddrtemplate.Parse(s)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("%w: template: %v", ErrAdvertise, err)
		}
		// A template may yield several addresses separated by spaces;
		// the first is taken, as go-sockaddr's own users do.
		first, _, _ := strings.Cut(strings.TrimSpace(out), " ")
		ip, err := netip.ParseAddr(first)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("%w: template %s gave %q, not an IP address", ErrAdvertise, s, out)
		}
		return connectable(s, ip)
	}
	if res == nil {
		return netip.Addr{}, fmt.Errorf("%w: %s is not an IP address", ErrAdvertise, s)
	}
	ips, err := res.LookupNetIP(ctx, "ip", s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: look up %s: %v", ErrAdvertise, s, err)
	}
	// Prefer IPv4: a 227 reply, the one most clients use, can carry only
	// IPv4.
	for _, ip := range ips {
		if ip.Unmap().Is4() {
			return connectable(s, ip)
		}
	}
	if len(ips) == 0 {
		return netip.Addr{}, fmt.Errorf("%w: %s has no address", ErrAdvertise, s)
	}
	return connectable(s, ips[0])
}

// connectable returns ip, unmapped, if a client can connect to it: not the
// unspecified address and without a zone (a zone means nothing to another
// host), whether the operator wrote it, a template made it or a name
// resolved to it.
func connectable(s string, ip netip.Addr) (netip.Addr, error) {
	if !ip.IsValid() || ip.Zone() != "" || ip.IsUnspecified() {
		return netip.Addr{}, fmt.Errorf("%w: %s gives %v, which cannot be connected to", ErrAdvertise, s, ip)
	}
	return ip.Unmap(), nil
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
