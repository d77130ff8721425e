package kernelpath

import (
	"errors"
	"net/netip"
	"sync"

	"github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// Flow is one redirected data connection, from the redirect until the
// caller closes it.
type Flow struct {
	p      *Path
	fam    *family
	mark   uint32
	client netip.Addr
	port   uint16

	established chan struct{} // closed once conntrack reports the connection
	changed     chan struct{} // a token after each event

	mu           sync.Mutex
	tuple        conntrack.Tuple // the connection's original tuple, once known
	known        bool
	last         Snapshot
	others       int // further connections that took the same mark
	unredirected bool
	killed       bool // the redirect's elements are gone
}

// Established is closed when the client's connection has been redirected.
func (f *Flow) Established() <-chan struct{} { return f.established }

// Changed receives a token after conntrack reports a change of the flow
// (not every one: a token waiting is not doubled).
func (f *Flow) Changed() <-chan struct{} { return f.changed }

// owns reports whether c is this flow's connection.
func (f *Flow) owns(c conntrack.Flow) bool {
	o := c.TupleOrig
	return c.Mark == f.mark && o.Proto.Protocol == unix.IPPROTO_TCP &&
		o.IP.SourceAddress.Unmap() == f.client && o.Proto.DestinationPort == f.port
}

func (f *Flow) event(ev conntrack.Event) {
	if !f.owns(*ev.Flow) {
		return
	}
	f.mu.Lock()
	switch {
	case !f.known:
		f.tuple, f.known = ev.Flow.TupleOrig, true
		close(f.established)
	case ev.Flow.TupleOrig.Proto.SourcePort != f.tuple.Proto.SourcePort:
		// Not the connection that closed the gate (one that took the
		// mark in the same instant, on another CPU): not followed.
		f.mu.Unlock()
		return
	}
	f.last.merge(*ev.Flow, ev.Type == conntrack.EventDestroy)
	f.mu.Unlock()
	f.poke()
}

func (f *Flow) poke() {
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

func (f *Flow) isKnown() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.known
}

// Snapshot asks conntrack for the flow's state and counters now, and
// reports whether the flow is established (before that there is nothing
// to ask).
func (f *Flow) Snapshot() (Snapshot, bool) {
	f.mu.Lock()
	known, tuple := f.known, f.tuple
	f.mu.Unlock()
	if !known {
		return Snapshot{}, false
	}
	c, err := f.p.ct.Get(conntrack.Flow{TupleOrig: tuple})
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case errors.Is(err, unix.ENOENT):
		f.last.Gone = true
	case err == nil:
		f.last.merge(c, false)
	}
	return f.last, f.known
}

// Kill makes the kernel reset the connection on both sides: for
// deadTimeout the dead set answers each side's next packet with a reset.
// (A side that sends nothing meanwhile is reset by the other's kernel when
// it does: that side's socket is gone.) Killing again does nothing.
func (f *Flow) Kill() error {
	f.mu.Lock()
	killed := f.killed
	f.mu.Unlock()
	if killed {
		return nil
	}
	if err := f.p.kill(f); err != nil {
		return err
	}
	f.mu.Lock()
	f.killed = true
	f.mu.Unlock()
	return nil
}

// Close removes the flow's elements, which the packet path does not need
// once the connection is established (conntrack holds its NAT). A killed
// flow's mark stays in the dead set until it expires (deadTimeout).
// Closing again does nothing. The flow is still followed until Forget.
func (f *Flow) Close() error {
	f.mu.Lock()
	redirect := !f.unredirected
	gate := !f.known // a connection has closed the gate behind it
	f.unredirected = true
	f.mu.Unlock()
	if !redirect {
		return nil
	}
	return f.p.removeElements(f, gate)
}

// Forget closes the flow and stops following it.
func (f *Flow) Forget() error {
	err := f.Close()
	f.p.forget(f)
	return err
}

// TCP states as conntrack numbers them (enum tcp_conntrack).
const (
	stateEstablished = 3
	stateFinWait     = 4
	stateCloseWait   = 5
	stateLastAck     = 6
	stateTimeWait    = 7
	stateClose       = 8
)

// Per-direction flags of conntrack's TCP tracking (IP_CT_TCP_FLAG_*).
const (
	flagCloseInit   = 0x04 // this side sent the first FIN
	flagDataUnacked = 0x10 // this side has data not yet acknowledged
)

// Snapshot is what conntrack knows of a flow. Byte counts are those of
// the IP packets the kernel saw, headers included, for each direction.
type Snapshot struct {
	State                      uint8
	OrigFlags, ReplyFlags      uint8 // IP_CT_TCP_FLAG_* of each side
	flagsKnown                 bool
	OrigBytes, ReplyBytes      uint64
	OrigPackets, ReplyPackets  uint64
	IPv6                       bool
	Gone                       bool // conntrack no longer has the flow
	sawReset, sawDeliveredOrig bool
	sawDeliveredReply          bool
}

func (s *Snapshot) merge(c conntrack.Flow, destroyed bool) {
	s.IPv6 = c.TupleOrig.IP.SourceAddress.Is6() && !c.TupleOrig.IP.SourceAddress.Is4In6()
	if tcp := c.ProtoInfo.TCP; tcp != nil && tcp.State != 0 {
		s.State = tcp.State
		if tcp.OriginalFlags != 0 || tcp.ReplyFlags != 0 {
			// struct nf_ct_tcp_flags {flags, mask}, read as one
			// big-endian number: the flags are the high byte.
			s.OrigFlags, s.ReplyFlags, s.flagsKnown = uint8(tcp.OriginalFlags>>8), uint8(tcp.ReplyFlags>>8), true
		}
	}
	if c.CountersOrig.Bytes != 0 || c.CountersReply.Bytes != 0 {
		s.OrigBytes, s.OrigPackets = c.CountersOrig.Bytes, c.CountersOrig.Packets
		s.ReplyBytes, s.ReplyPackets = c.CountersReply.Bytes, c.CountersReply.Packets
	}
	if destroyed {
		s.Gone = true
	}
	switch {
	case s.State == stateClose:
		s.sawReset = true
	case s.delivered(false):
		s.sawDeliveredOrig = true
	}
	if s.delivered(true) {
		s.sawDeliveredReply = true
	}
}

// delivered: the sending side closed first and the other has acknowledged
// its FIN, so every byte it sent has arrived.
func (s *Snapshot) delivered(senderIsReply bool) bool {
	flags := s.OrigFlags
	if senderIsReply {
		flags = s.ReplyFlags
	}
	if !s.flagsKnown || flags&flagCloseInit == 0 || flags&flagDataUnacked != 0 {
		return false
	}
	return s.State == stateCloseWait || s.State == stateLastAck || s.State == stateTimeWait
}

// Outcome is how a flow stands for the transfer it carries.
type Outcome int

const (
	Flowing   Outcome = iota // still carrying data
	Delivered                // the data's sender closed and all it sent arrived
	Closed                   // both sides closed cleanly
	Reset                    // reset, or gone without closing cleanly
)

func (o Outcome) String() string {
	return [...]string{"flowing", "delivered", "closed", "reset"}[o]
}

// Outcome classifies the flow for a transfer whose data is sent by the
// reply side (the upstream: a download) or the original side (the client:
// an upload); with neither known, either side's close counts.
func (s Snapshot) Outcome(senderIsReply, senderKnown bool) Outcome {
	delivered := s.sawDeliveredReply
	if senderKnown && !senderIsReply {
		delivered = s.sawDeliveredOrig
	} else if !senderKnown {
		delivered = s.sawDeliveredOrig || s.sawDeliveredReply
	}
	switch {
	case s.State == stateTimeWait && !s.sawReset:
		return Closed
	case delivered:
		return Delivered
	case s.sawReset || s.Gone:
		return Reset
	}
	return Flowing
}

// WasReset reports whether conntrack saw a reset, or lost the flow.
func (s Snapshot) WasReset() bool { return s.sawReset || s.Gone }

// Moved is the number of bytes the flow has carried both ways so far.
func (s Snapshot) Moved() uint64 { return s.OrigBytes + s.ReplyBytes }

// Payload estimates the bytes of data each way from the counters: the
// packets' length less a minimal IP and TCP header each. It counts the
// payload of the packets as the kernel saw them (retransmissions too).
func (s Snapshot) Payload() (orig, reply uint64) {
	hdr := uint64(20 + 20)
	if s.IPv6 {
		hdr = 40 + 20
	}
	sub := func(b, p uint64) uint64 {
		if b < p*hdr {
			return 0
		}
		return b - p*hdr
	}
	return sub(s.OrigBytes, s.OrigPackets), sub(s.ReplyBytes, s.ReplyPackets)
}
