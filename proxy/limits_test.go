package proxy

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestAdmission(t *testing.T) {
	a := netip.MustParseAddr
	p := netip.MustParsePrefix
	now := time.Unix(1700000000, 0)
	tests := []struct {
		name string
		cfg  Config
		ip   string
		held int // sessions the address already has
		want error
	}{
		{"open", Config{}, "192.0.2.1", 0, nil},
		{"denied", Config{Deny: []netip.Prefix{p("192.0.2.0/24")}}, "192.0.2.1", 0, errDenied},
		{"not in allow list", Config{Allow: []netip.Prefix{p("10.0.0.0/8")}}, "192.0.2.1", 0, errDenied},
		{"allowed", Config{Allow: []netip.Prefix{p("10.0.0.0/8")}}, "10.1.1.1", 0, nil},
		{"deny beats allow", Config{Allow: []netip.Prefix{p("10.0.0.0/8")}, Deny: []netip.Prefix{p("10.1.0.0/16")}}, "10.1.1.1", 0, errDenied},
		{"total limit", Config{MaxSessions: 2}, "192.0.2.1", 2, errTooManySessions},
		{"per-address limit", Config{MaxSessionsPerIP: 2}, "192.0.2.1", 2, errTooManyFromIP},
		{"under the limits", Config{MaxSessions: 3, MaxSessionsPerIP: 3}, "192.0.2.1", 2, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			adm := newAdmission(&tt.cfg)
			for range tt.held {
				if _, err := adm.admit(a(tt.ip), now); err != nil {
					t.Fatalf("setup: %v", err)
				}
			}
			release, err := adm.admit(a(tt.ip), now)
			if !errors.Is(err, tt.want) {
				t.Fatalf("admit = %v, want %v", err, tt.want)
			}
			if err == nil {
				release()
				release() // idempotent
				if adm.total != tt.held || adm.perIP[a(tt.ip)] != tt.held {
					t.Fatalf("after release: total %d, per address %d, want %d", adm.total, adm.perIP[a(tt.ip)], tt.held)
				}
			}
		})
	}
}

func TestBanList(t *testing.T) {
	a := netip.MustParseAddr
	attacker, other := a("192.0.2.66"), a("192.0.2.7")
	now := time.Unix(1700000000, 0)
	b := newBanList(3, time.Minute, 10*time.Minute)

	if b.failed(attacker, now) || b.failed(attacker, now.Add(time.Second)) {
		t.Fatal("banned before the limit")
	}
	if b.banned(attacker, now) {
		t.Fatal("banned with 2 of 3 failures")
	}
	if !b.failed(attacker, now.Add(2*time.Second)) {
		t.Fatal("third failure within the window did not ban")
	}
	if !b.banned(attacker, now.Add(5*time.Minute)) {
		t.Fatal("not banned within the ban time")
	}
	if b.banned(other, now.Add(5*time.Minute)) {
		t.Fatal("another address is banned")
	}
	if b.banned(attacker, now.Add(11*time.Minute)) {
		t.Fatal("still banned after the ban time")
	}

	// Failures further apart than the window do not add up.
	for i := range 5 {
		if b.failed(other, now.Add(time.Duration(i)*2*time.Minute)) {
			t.Fatalf("failure %d, spread over the window, banned", i)
		}
	}

	// A zero limit never bans.
	off := newBanList(0, time.Minute, time.Minute)
	for range 100 {
		off.failed(attacker, now)
	}
	if off.banned(attacker, now) {
		t.Fatal("a ban list with no limit banned")
	}
}

func TestBanListBounded(t *testing.T) {
	b := newBanList(1000, time.Hour, time.Hour)
	now := time.Unix(1700000000, 0)
	for i := range maxTracked + 5000 {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		b.failed(ip, now)
	}
	if n := len(b.fails) + len(b.until); n > maxTracked {
		t.Fatalf("ban list holds %d entries, more than %d", n, maxTracked)
	}
}
