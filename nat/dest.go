package nat

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ErrDestination reports an --allow-dest or --forward-ports value that
// cannot be used.
var ErrDestination = errors.New("nat: bad destination rule")

// DestPolicy says which servers a forward-mode session may reach. It
// allows nothing unless an entry names the destination: an open FTP relay
// is what a careless forward proxy becomes.
//
// An entry is a network (CIDR or a single address) or a host name, with an
// optional port; an entry without a port allows the policy's ports (21 and
// 990 unless widened). Some addresses are refused even inside a network
// that holds them (see Special): a network entry allows such an address
// only if the entry lies wholly inside the special range, so 127.0.0.0/8
// allows loopback and 0.0.0.0/0 does not.
type DestPolicy struct {
	entries []destEntry
	ports   []portSpan
}

type destEntry struct {
	net  netip.Prefix // valid for a network entry
	host string       // a host name entry, lower case, no trailing dot
	port uint16       // 0: the policy's ports
}

type portSpan struct{ lo, hi uint16 }

// DefaultForwardPorts are the ports a destination entry without a port
// allows: FTP and implicit FTPS.
const DefaultForwardPorts = "21,990"

// ParseDestPolicy builds a policy from --allow-dest entries (each a comma
// separated list of "CIDR", "IP", "host", with an optional ":port";
// "[v6]:port") and --forward-ports ("21,990,2100-2199").
func ParseDestPolicy(entries []string, ports string) (*DestPolicy, error) {
	p := &DestPolicy{}
	for _, list := range entries {
		for _, e := range strings.Split(list, ",") {
			e = strings.TrimSpace(e)
			if e == "" {
				continue
			}
			de, err := parseDestEntry(e)
			if err != nil {
				return nil, err
			}
			p.entries = append(p.entries, de)
		}
	}
	for _, s := range strings.Split(ports, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		lo, hi, err := ParsePortRange(s)
		if err != nil {
			return nil, fmt.Errorf("%w: port %q", ErrDestination, s)
		}
		p.ports = append(p.ports, portSpan{lo, hi})
	}
	return p, nil
}

func parseDestEntry(e string) (destEntry, error) {
	bad := func(why string) (destEntry, error) {
		return destEntry{}, fmt.Errorf("%w: %q: %s", ErrDestination, e, why)
	}
	if pfx, err := netip.ParsePrefix(e); err == nil {
		return destEntry{net: netip.PrefixFrom(pfx.Addr().Unmap(), unmappedBits(pfx)).Masked()}, nil
	}
	if a, err := netip.ParseAddr(e); err == nil {
		a = a.Unmap()
		return destEntry{net: netip.PrefixFrom(a, a.BitLen())}, nil
	}
	// A network with a port: 10.0.0.0/8:2121, [2001:db8::/32]:2121.
	if i := strings.LastIndex(e, ":"); i > 0 && strings.Contains(e, "/") {
		n := strings.TrimSuffix(strings.TrimPrefix(e[:i], "["), "]")
		if pfx, err := netip.ParsePrefix(n); err == nil && (pfx.Addr().Is4() || strings.HasPrefix(e, "[")) {
			port, err := parsePortNumber(e[i+1:])
			if err != nil {
				return bad(err.Error())
			}
			return destEntry{net: netip.PrefixFrom(pfx.Addr().Unmap(), unmappedBits(pfx)).Masked(), port: port}, nil
		}
	}
	host, port, err := SplitDestination(e, 0)
	if err != nil {
		return bad(err.Error())
	}
	if a, err := netip.ParseAddr(host); err == nil {
		a = a.Unmap()
		return destEntry{net: netip.PrefixFrom(a, a.BitLen()), port: port}, nil
	}
	return destEntry{host: host, port: port}, nil
}

// unmappedBits is the prefix length of p once an IPv4-mapped address is
// taken as IPv4.
func unmappedBits(p netip.Prefix) int {
	if p.Addr().Is4In6() {
		return max(p.Bits()-96, 0)
	}
	return p.Bits()
}

// Special ranges are refused as destinations unless an entry inside them
// allows them: a user-chosen destination must not reach the proxy itself,
// a cloud metadata service, or a network the operator did not mean.
var special = []struct {
	name string
	nets []netip.Prefix
}{
	{"loopback", prefixes("127.0.0.0/8", "::1/128")},
	{"link-local", prefixes("169.254.0.0/16", "fe80::/10")},
	{"unspecified", prefixes("0.0.0.0/8", "::/128")},
	{"multicast", prefixes("224.0.0.0/4", "ff00::/8")},
	{"broadcast", prefixes("255.255.255.255/32")},
}

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// DestRefusal is why a destination is refused; its text is fit for the
// client's reply and the log.
type DestRefusal struct {
	Reason string
	// Protected: the address lies in a special or protected range, not
	// merely outside the policy. A name with such an address is refused
	// whole.
	Protected bool
}

func (r *DestRefusal) Error() string { return r.Reason }

// Check decides whether ap may be dialled for a destination the client
// named host (a name, or the address itself). protected lists further
// special ranges: the proxy's own addresses and its trusted balancers,
// with their names. It returns nil or a *DestRefusal.
func (p *DestPolicy) Check(host string, ap netip.AddrPort, protected []NamedPrefix) error {
	a := ap.Addr().Unmap()
	port := ap.Port()
	host = normalHost(host)
	if !a.IsValid() || port == 0 {
		return &DestRefusal{Reason: "no usable address"}
	}
	// An address in a special or protected range is allowed only by a
	// network entry inside that range: 0.0.0.0/0 or a host name never
	// reaches loopback, whatever the name resolves to.
	var inside netip.Prefix
	var what string
	for _, sp := range special {
		for _, n := range sp.nets {
			if !inside.IsValid() && n.Contains(a) {
				inside, what = n, sp.name+" address"
			}
		}
	}
	for _, np := range protected {
		if !inside.IsValid() && np.Prefix.Contains(a) {
			inside, what = np.Prefix, np.Name
		}
	}
	portRefused := false
	for _, e := range p.entries {
		if !e.matches(host, a) {
			continue
		}
		if inside.IsValid() && !(e.net.IsValid() && e.net.Bits() >= inside.Bits() && inside.Contains(e.net.Addr())) {
			continue
		}
		if p.portAllowed(e, port) {
			return nil
		}
		portRefused = true
	}
	switch {
	case portRefused:
		return &DestRefusal{Reason: fmt.Sprintf("port %d is not allowed for %s", port, a), Protected: inside.IsValid()}
	case inside.IsValid():
		return &DestRefusal{Reason: fmt.Sprintf("%s %s (not named by --allow-dest)", what, a), Protected: true}
	case len(p.entries) == 0:
		return &DestRefusal{Reason: "no destination is allowed (--allow-dest is empty)"}
	}
	return &DestRefusal{Reason: fmt.Sprintf("%s is not in --allow-dest", netip.AddrPortFrom(a, port))}
}

// NamedPrefix is a protected range with what to call it in a refusal.
type NamedPrefix struct {
	Name   string
	Prefix netip.Prefix
}

func (e destEntry) matches(host string, a netip.Addr) bool {
	if e.net.IsValid() {
		return e.net.Contains(a)
	}
	return e.host != "" && e.host == host
}

func (p *DestPolicy) portAllowed(e destEntry, port uint16) bool {
	if e.port != 0 {
		return port == e.port
	}
	for _, s := range p.ports {
		if s.lo <= port && port <= s.hi {
			return true
		}
	}
	return false
}

func normalHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// SplitDestination splits a destination as a client names it in forward
// mode, "host", "host:port", "[v6addr]" or "[v6addr]:port" (a bare IPv6
// address is taken whole), into host and port; defPort is the port when
// none is given. A host must be an IP address or a DNS name.
func SplitDestination(s string, defPort uint16) (host string, port uint16, err error) {
	port = defPort
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", 0, errors.New("missing ]")
		}
		host = s[1:end]
		rest := s[end+1:]
		if rest != "" {
			if rest[0] != ':' {
				return "", 0, errors.New("junk after ]")
			}
			if port, err = parsePortNumber(rest[1:]); err != nil {
				return "", 0, err
			}
		}
		a, perr := netip.ParseAddr(host)
		if perr != nil || !a.Is6() || a.Zone() != "" {
			return "", 0, errors.New("not an IPv6 address in brackets")
		}
		return host, port, nil
	case strings.Count(s, ":") > 1:
		a, perr := netip.ParseAddr(s)
		if perr != nil || a.Zone() != "" {
			return "", 0, errors.New("not an IPv6 address")
		}
		return s, port, nil
	}
	host = s
	if h, p, found := strings.Cut(s, ":"); found {
		host = h
		if port, err = parsePortNumber(p); err != nil {
			return "", 0, err
		}
	}
	if _, perr := netip.ParseAddr(host); perr == nil {
		return host, port, nil
	}
	if !validHostName(host) {
		return "", 0, errors.New("not a host name")
	}
	return normalHost(host), port, nil
}

func parsePortNumber(s string) (uint16, error) {
	if s == "" || len(s) > 5 {
		return 0, errors.New("bad port")
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, errors.New("bad port")
	}
	return uint16(n), nil
}

// validHostName accepts DNS names (letters, digits, hyphens and
// underscores in labels of 1 to 63 characters, 253 in all), which keeps
// anything else away from the resolver and the logs.
func validHostName(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
