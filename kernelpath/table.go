package kernelpath

import (
	"fmt"
	"os"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The marks this package gives its flows: markBase in the bits of
// markMask, an id in the others. The forward chain lets through exactly
// the flows with such a mark.
const (
	markBase = 0x46500000 // "FP"
	markMask = 0xfff00000
	idMask   = ^uint32(markMask)
)

// Register numbers of nf_tables: reg1 is the 16-byte register that the
// 4-byte registers 8 to 11 alias; a concatenation's parts each start on a
// 4-byte register.
const (
	reg1   = 1
	reg2   = 2 // 4-byte registers 12-15: the port after an IPv6 address
	reg32x = 8 // first 4-byte register
)

// nftDynsetOpDelete is NFT_DYNSET_OP_DELETE, which golang.org/x/sys does
// not name.
const nftDynsetOpDelete = 2

// family is what differs between the IPv4 and IPv6 halves of the table.
type family struct {
	nfproto   byte // NFPROTO_IPV4 or NFPROTO_IPV6
	addrType  nftables.SetDatatype
	addrLen   uint32
	saddrOff  uint32 // source address offset in the network header
	portReg   uint32 // register of the port after an address in reg1
	markReg   uint32 // a free 4-byte register for the mark
	natFamily uint32

	gate, keys, dnat, snat *nftables.Set
}

// sets are the table's sets, by family, the dead set and the owner set.
type sets struct {
	v4, v6 family
	dead   *nftables.Set
	// owner holds the process ID of the proxy that uses the table (two
	// during an upgrade), so that a second instance given the same table
	// name sees that it is taken instead of rebuilding it under the first.
	owner *nftables.Set
}

func newSets(t *nftables.Table) (*sets, error) {
	key4, err := nftables.ConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
	if err != nil {
		return nil, err
	}
	key6, err := nftables.ConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetService)
	if err != nil {
		return nil, err
	}
	s := &sets{
		v4: family{nfproto: unix.NFPROTO_IPV4, addrType: nftables.TypeIPAddr, addrLen: 4, saddrOff: 12,
			portReg: reg32x + 1, markReg: reg32x + 2, natFamily: unix.NFPROTO_IPV4},
		v6: family{nfproto: unix.NFPROTO_IPV6, addrType: nftables.TypeIP6Addr, addrLen: 16, saddrOff: 8,
			portReg: reg2, markReg: reg32x + 5, natFamily: unix.NFPROTO_IPV6},
	}
	for _, f := range []struct {
		fam  *family
		key  nftables.SetDatatype
		name string
	}{{&s.v4, key4, "4"}, {&s.v6, key6, "6"}} {
		// gate: client address . announced port, open for one
		// connection: the packet path deletes the element it matched.
		// (A set of its own: nft 1.0 cannot list a rule that deletes
		// from a map.)
		f.fam.gate = &nftables.Set{Table: t, Name: "gate" + f.name, HasTimeout: true, Dynamic: true,
			Concatenation: true, KeyType: f.key}
		// keys: client address . announced port -> the flow's mark.
		f.fam.keys = &nftables.Set{Table: t, Name: "keys" + f.name, IsMap: true, HasTimeout: true,
			Concatenation: true, KeyType: f.key, DataType: nftables.TypeMark}
		// dnat: mark -> upstream address . port.
		f.fam.dnat = &nftables.Set{Table: t, Name: "dnat" + f.name, IsMap: true, HasTimeout: true,
			KeyType: nftables.TypeMark, DataType: f.key}
		// snat: mark -> the proxy's upstream-side address.
		f.fam.snat = &nftables.Set{Table: t, Name: "snat" + f.name, IsMap: true, HasTimeout: true,
			KeyType: nftables.TypeMark, DataType: f.fam.addrType}
	}
	// dead: marks of flows to end with resets.
	s.dead = &nftables.Set{Table: t, Name: "dead", HasTimeout: true, KeyType: nftables.TypeMark}
	s.owner = &nftables.Set{Table: t, Name: ownerSet, KeyType: nftables.TypeInteger}
	return s, nil
}

// ownerSet is the name of the set holding the owner's process ID.
const ownerSet = "owner"

// pidElement is the owner set's element for process pid, in network byte
// order as nft shows an integer (`nft list set inet ftpproxy owner`).
func pidElement(pid int) []nftables.SetElement {
	return []nftables.SetElement{{Key: binaryutil.BigEndian.PutUint32(uint32(pid))}}
}

// all lists the table's sets of redirects and dead marks (not the owner).
func (s *sets) all() []*nftables.Set {
	return []*nftables.Set{s.v4.gate, s.v4.keys, s.v4.dnat, s.v4.snat, s.v6.gate, s.v6.keys, s.v6.dnat, s.v6.snat, s.dead}
}

// build queues the whole table on c: its sets, the NAT chains that
// redirect a flow whose key is in the keys map, and the filter chains that
// reset dead flows and, with guard, drop every other forwarded packet.
func (s *sets) build(c *nftables.Conn, t *nftables.Table, guard bool) error {
	c.AddTable(t)
	for _, set := range s.all() {
		if err := c.AddSet(set, nil); err != nil {
			return fmt.Errorf("kernelpath: add set %s: %w", set.Name, err)
		}
	}
	if err := c.AddSet(s.owner, pidElement(os.Getpid())); err != nil {
		return fmt.Errorf("kernelpath: add set %s: %w", s.owner.Name, err)
	}
	pre := c.AddChain(&nftables.Chain{Table: t, Name: "prerouting", Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest})
	// Locally generated connections (a client on the proxy's own host)
	// pass the output hook instead.
	out := c.AddChain(&nftables.Chain{Table: t, Name: "output", Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest})
	post := c.AddChain(&nftables.Chain{Table: t, Name: "postrouting", Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	accept := nftables.ChainPolicyAccept
	fwd := c.AddChain(&nftables.Chain{Table: t, Name: "forward", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	in := c.AddChain(&nftables.Chain{Table: t, Name: "input", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	for _, f := range []*family{&s.v4, &s.v6} {
		c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: f.redirectExprs()})
		c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: f.redirectExprs()})
		c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: f.snatExprs()})
	}
	for _, ch := range []*nftables.Chain{fwd, in} {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: s.deadExprs()})
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: ownMarkExprs(expr.VerdictAccept)})
	if guard {
		c.AddRule(&nftables.Rule{Table: t, Chain: fwd, Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}}})
	}
	return nil
}

// redirectExprs: a new TCP connection to one of the host's own addresses
// whose source address and destination port are in the gate closes the
// gate behind it, takes the key's mark and is DNATed to the mark's
// upstream address. (Only to the host's own addresses: a host that also
// routes the client's traffic elsewhere must not divert a connection to
// another server that happens to use the announced port.)
func (f *family) redirectExprs() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{f.nfproto}},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Fib{Register: reg1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
		&expr.Ct{Key: expr.CtKeySTATE, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: make([]byte, 4)},
		&expr.Payload{Base: expr.PayloadBaseNetworkHeader, Offset: f.saddrOff, Len: f.addrLen, DestRegister: reg1},
		&expr.Payload{Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2, DestRegister: f.portReg},
		&expr.Lookup{SourceRegister: reg1, SetName: f.gate.Name},
		// The key again for each use, and the mark read back from the
		// connection, as nft itself writes them: nft 1.0 aborts listing a
		// rule whose expression reads registers an earlier one consumed.
		&expr.Payload{Base: expr.PayloadBaseNetworkHeader, Offset: f.saddrOff, Len: f.addrLen, DestRegister: reg1},
		&expr.Payload{Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2, DestRegister: f.portReg},
		&expr.Dynset{SrcRegKey: reg1, SetName: f.gate.Name, Operation: nftDynsetOpDelete},
		&expr.Payload{Base: expr.PayloadBaseNetworkHeader, Offset: f.saddrOff, Len: f.addrLen, DestRegister: reg1},
		&expr.Payload{Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2, DestRegister: f.portReg},
		&expr.Lookup{SourceRegister: reg1, SetName: f.keys.Name, IsDestRegSet: true, DestRegister: f.markReg},
		&expr.Ct{Key: expr.CtKeyMARK, Register: f.markReg, SourceRegister: true},
		&expr.Ct{Key: expr.CtKeyMARK, Register: reg1},
		&expr.Lookup{SourceRegister: reg1, SetName: f.dnat.Name, IsDestRegSet: true, DestRegister: reg1},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: f.natFamily, RegAddrMin: reg1, RegProtoMin: f.portReg, Specified: true},
	}
}

// snatExprs: a connection with a mark in the snat map leaves from the
// proxy's upstream-side address, so the upstream's replies come back
// through the proxy's host.
func (f *family) snatExprs() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{f.nfproto}},
		&expr.Ct{Key: expr.CtKeyMARK, Register: reg1},
		&expr.Lookup{SourceRegister: reg1, SetName: f.snat.Name, IsDestRegSet: true, DestRegister: reg1},
		&expr.NAT{Type: expr.NATTypeSourceNAT, Family: f.natFamily, RegAddrMin: reg1},
	}
}

// deadExprs: every packet of a dead flow is answered with a reset, which
// ends the connection on both sides at their next packet.
func (s *sets) deadExprs() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Ct{Key: expr.CtKeyMARK, Register: reg1},
		&expr.Lookup{SourceRegister: reg1, SetName: s.dead.Name},
		&expr.Reject{Type: unix.NFT_REJECT_TCP_RST},
	}
}

// ownMarkExprs: a packet of a flow this package redirected.
func ownMarkExprs(v expr.VerdictKind) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: reg1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(markMask), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.NativeEndian.PutUint32(markBase)},
		&expr.Verdict{Kind: v},
	}
}

// markBytes is a mark as the sets hold it (host byte order, as the ct
// mark register).
func markBytes(mark uint32) []byte { return binaryutil.NativeEndian.PutUint32(mark) }

// addrPortBytes is an address . port concatenation: each part padded to
// four bytes, the port in network order.
func addrPortBytes(addr []byte, port uint16) []byte {
	b := make([]byte, 0, len(addr)+4)
	b = append(b, addr...)
	return append(b, byte(port>>8), byte(port), 0, 0)
}

// elementTimeout bounds how long a redirect outlives a proxy that died
// without removing it.
func elementTimeout(d time.Duration) time.Duration {
	return max(d, time.Second)
}
