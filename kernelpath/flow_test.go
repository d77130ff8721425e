package kernelpath

import (
	"testing"

	"github.com/ti-mo/conntrack"
)

// tcpFlow is a conntrack report of a TCP flow in state with the given
// per-side flags (IP_CT_TCP_FLAG_*), as ctnetlink sends them.
func tcpFlow(state, orig, reply uint8) conntrack.Flow {
	return conntrack.Flow{ProtoInfo: conntrack.ProtoInfo{TCP: &conntrack.ProtoInfoTCP{
		State: state, OriginalFlags: uint16(orig) << 8, ReplyFlags: uint16(reply) << 8,
	}}}
}

// TestOutcome follows flows through the states conntrack reports and
// checks what each means for a download (the reply side sends) and an
// upload (the original side sends).
func TestOutcome(t *testing.T) {
	const (
		fin   = flagCloseInit
		unack = flagDataUnacked
	)
	tests := []struct {
		name      string
		steps     []conntrack.Flow
		destroyed bool
		down, up  Outcome
		noneKnown Outcome // the transfer's direction not known yet
		wasReset  bool
	}{
		{"established", []conntrack.Flow{tcpFlow(stateEstablished, 0, unack)}, false, Flowing, Flowing, Flowing, false},
		{"server FIN not yet acknowledged", []conntrack.Flow{tcpFlow(stateFinWait, 0, fin|unack)}, false, Flowing, Flowing, Flowing, false},
		{"server FIN acknowledged", []conntrack.Flow{tcpFlow(stateCloseWait, 0, fin)}, false, Delivered, Flowing, Delivered, false},
		{"server closed first, then the client", []conntrack.Flow{tcpFlow(stateCloseWait, 0, fin), tcpFlow(stateLastAck, 0, fin)}, false, Delivered, Flowing, Delivered, false},
		{"both closed", []conntrack.Flow{tcpFlow(stateTimeWait, 0, fin)}, false, Closed, Closed, Closed, false},
		{"client FIN acknowledged", []conntrack.Flow{tcpFlow(stateCloseWait, fin, 0)}, false, Flowing, Delivered, Delivered, false},
		{"CLOSE_WAIT while data unacknowledged", []conntrack.Flow{tcpFlow(stateCloseWait, 0, fin|unack)}, false, Flowing, Flowing, Flowing, false},
		{"reset mid-transfer", []conntrack.Flow{tcpFlow(stateEstablished, 0, unack), tcpFlow(stateClose, 0, unack)}, false, Reset, Reset, Reset, true},
		{"reset after delivery", []conntrack.Flow{tcpFlow(stateCloseWait, 0, fin), tcpFlow(stateClose, 0, fin)}, false, Delivered, Reset, Delivered, true},
		{"reset after TIME_WAIT", []conntrack.Flow{tcpFlow(stateTimeWait, 0, fin), tcpFlow(stateClose, 0, fin)}, false, Delivered, Reset, Delivered, true},
		{"gone while established", []conntrack.Flow{tcpFlow(stateEstablished, 0, 0)}, true, Reset, Reset, Reset, true},
		{"no flags reported", []conntrack.Flow{{ProtoInfo: conntrack.ProtoInfo{TCP: &conntrack.ProtoInfoTCP{State: stateCloseWait}}}}, false, Flowing, Flowing, Flowing, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Snapshot
			for i, f := range tt.steps {
				s.merge(f, tt.destroyed && i == len(tt.steps)-1)
			}
			if got := s.Outcome(true, true); got != tt.down {
				t.Errorf("download: %v, want %v", got, tt.down)
			}
			if got := s.Outcome(false, true); got != tt.up {
				t.Errorf("upload: %v, want %v", got, tt.up)
			}
			if got := s.Outcome(false, false); got != tt.noneKnown {
				t.Errorf("direction unknown: %v, want %v", got, tt.noneKnown)
			}
			if s.WasReset() != tt.wasReset {
				t.Errorf("WasReset %v, want %v", s.WasReset(), tt.wasReset)
			}
		})
	}
}

// TestPayload: the counts less a minimal header per packet, never below
// zero.
func TestPayload(t *testing.T) {
	s := Snapshot{OrigBytes: 520, OrigPackets: 10, ReplyBytes: 1040 + 40*3, ReplyPackets: 3}
	if o, r := s.Payload(); o != 120 || r != 1040 {
		t.Errorf("IPv4: %d, %d; want 120, 1040", o, r)
	}
	s = Snapshot{OrigBytes: 10, OrigPackets: 1, IPv6: true}
	if o, _ := s.Payload(); o != 0 {
		t.Errorf("IPv6 short: %d, want 0", o)
	}
}
