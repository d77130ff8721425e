package nat

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
)

func TestAdvertise(t *testing.T) {
	v4 := netip.MustParseAddr
	tests := []struct {
		name          string
		static        string
		client, local string
		want          string
	}{
		{"default is the local address", "", "192.0.2.10", "198.51.100.1", "198.51.100.1"},
		{"static v4", "203.0.113.7", "192.0.2.10", "10.0.0.1", "203.0.113.7"},
		{"mapped local is unmapped", "", "192.0.2.10", "::ffff:10.0.0.1", "10.0.0.1"},
		{"static v4 not used for a v6 client", "203.0.113.7", "2001:db8::1", "2001:db8::2", "2001:db8::2"},
		{"static v6 for a v6 client", "2001:db8::99", "2001:db8::1", "2001:db8::2", "2001:db8::99"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a Advertiser
			if tt.static != "" {
				a.Static = v4(tt.static)
			}
			if got := a.Advertise(v4(tt.client), v4(tt.local)); got != v4(tt.want) {
				t.Errorf("Advertise = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestListenAddr(t *testing.T) {
	a := netip.MustParseAddr
	tests := []struct{ adv, local, want string }{
		{"127.0.0.2", "127.0.0.2", "127.0.0.2"},
		{"203.0.113.7", "10.0.0.1", "0.0.0.0"},
		{"2001:db8::9", "2001:db8::1", "::"},
		{"::1", "::1", "::1"},
	}
	for _, tt := range tests {
		if got := ListenAddr(a(tt.adv), a(tt.local)); got != a(tt.want) {
			t.Errorf("ListenAddr(%s, %s) = %v, want %v", tt.adv, tt.local, got, tt.want)
		}
	}
}

func TestParsePortRange(t *testing.T) {
	tests := []struct {
		in     string
		lo, hi uint16
		ok     bool
	}{
		{"21000-21099", 21000, 21099, true},
		{"2100", 2100, 2100, true},
		{" 10 - 20 ", 10, 20, true},
		{"0-10", 0, 0, false},
		{"20-10", 0, 0, false},
		{"1-65536", 0, 0, false},
		{"a-b", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, tt := range tests {
		lo, hi, err := ParsePortRange(tt.in)
		if (err == nil) != tt.ok || lo != tt.lo || hi != tt.hi {
			t.Errorf("ParsePortRange(%q) = %d, %d, %v", tt.in, lo, hi, err)
		}
		if err != nil && !errors.Is(err, ErrPortRange) {
			t.Errorf("ParsePortRange(%q) error %v is not ErrPortRange", tt.in, err)
		}
	}
}

func TestPortPoolExhaustAndRelease(t *testing.T) {
	p, err := NewPortPool(21000, 21003)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint16]bool{}
	for range 4 {
		port, ok := p.Acquire()
		if !ok || port < 21000 || port > 21003 || seen[port] {
			t.Fatalf("Acquire = %d, %v (seen %v)", port, ok, seen)
		}
		seen[port] = true
	}
	if _, ok := p.Acquire(); ok {
		t.Fatal("Acquire on an exhausted pool succeeded")
	}
	p.Release(21002)
	p.Release(21002) // double release must not free a second slot
	p.Release(9)     // outside the range: ignored
	if port, ok := p.Acquire(); !ok || port != 21002 {
		t.Fatalf("Acquire after release = %d, %v, want 21002", port, ok)
	}
	if _, ok := p.Acquire(); ok {
		t.Fatal("double release freed two slots")
	}
	for port := range seen {
		p.Release(port)
	}
	if p.InUse() != 0 {
		t.Fatalf("InUse = %d after releasing all", p.InUse())
	}
}

// Ports must not come out in sequence: a predictable next port invites a
// third party to connect to it first.
func TestPortPoolUnpredictable(t *testing.T) {
	p, _ := NewPortPool(21000, 21999)
	sequential := 0
	prev, _ := p.Acquire()
	for range 50 {
		port, _ := p.Acquire()
		if port == prev+1 {
			sequential++
		}
		prev = port
	}
	if sequential > 10 {
		t.Fatalf("%d of 50 ports followed their predecessor", sequential)
	}
}

func TestPortPoolConcurrent(t *testing.T) {
	p, _ := NewPortPool(21000, 21015)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				if port, ok := p.Acquire(); ok {
					p.Release(port)
				}
			}
		})
	}
	wg.Wait()
	if p.InUse() != 0 {
		t.Fatalf("InUse = %d, want 0", p.InUse())
	}
}

func TestNewPortPoolRejects(t *testing.T) {
	if _, err := NewPortPool(0, 10); !errors.Is(err, ErrPortRange) {
		t.Errorf("NewPortPool(0,10) err = %v", err)
	}
	if _, err := NewPortPool(10, 9); !errors.Is(err, ErrPortRange) {
		t.Errorf("NewPortPool(10,9) err = %v", err)
	}
}
