package nat

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
)

// ErrPortRange reports a passive port range that cannot be used.
var ErrPortRange = errors.New("nat: bad port range")

// PortPool hands out ports from a fixed range. Ports are picked at random
// among the free ones, so that the next data port cannot be predicted from
// the last one (a predictable port invites data-connection theft), and are
// returned to the pool as soon as a transfer is over.
type PortPool struct {
	lo, hi uint16

	mu    sync.Mutex
	inUse []bool // indexed by port-lo
	used  int
}

// NewPortPool returns a pool of the ports lo to hi inclusive.
func NewPortPool(lo, hi uint16) (*PortPool, error) {
	if lo == 0 || hi < lo {
		return nil, fmt.Errorf("%w: %d-%d", ErrPortRange, lo, hi)
	}
	return &PortPool{lo: lo, hi: hi, inUse: make([]bool, int(hi-lo)+1)}, nil
}

// ParsePortRange parses "LO-HI" (a single port "P" is the range P-P).
func ParsePortRange(s string) (lo, hi uint16, err error) {
	a, b, found := strings.Cut(s, "-")
	if !found {
		b = a
	}
	l, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 16)
	h, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 16)
	if err1 != nil || err2 != nil || l == 0 || h < l {
		return 0, 0, fmt.Errorf("%w: %q, want LO-HI with 1 <= LO <= HI <= 65535", ErrPortRange, s)
	}
	return uint16(l), uint16(h), nil
}

// Size returns the number of ports in the range.
func (p *PortPool) Size() int { return len(p.inUse) }

// Range returns the first and the last port of the pool.
func (p *PortPool) Range() (lo, hi uint16) { return p.lo, p.hi }

// InUse returns the number of ports handed out and not yet released.
func (p *PortPool) InUse() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.used
}

// Acquire takes a free port at random. It reports false when every port in
// the range is taken.
func (p *PortPool) Acquire() (uint16, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.inUse)
	if p.used == n {
		return 0, false
	}
	// Start at a random offset and walk to the next free port; with a
	// mostly free range the first probe nearly always hits.
	start := rand.IntN(n)
	for i := range n {
		j := (start + i) % n
		if !p.inUse[j] {
			p.inUse[j] = true
			p.used++
			return p.lo + uint16(j), true
		}
	}
	return 0, false // unreachable: used < n
}

// Release returns port to the pool. Releasing a port outside the range or
// one that is not taken does nothing.
func (p *PortPool) Release(port uint16) {
	if port < p.lo || port > p.hi {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if j := int(port - p.lo); p.inUse[j] {
		p.inUse[j] = false
		p.used--
	}
}
