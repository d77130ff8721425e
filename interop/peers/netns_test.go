//go:build linux

package peers

import (
	"context"
	"slices"
	"strings"
	"testing"
)

func testTopology() *Topology {
	return &Topology{
		Prefix: "t-1",
		Roles:  []string{"a", "b"},
		Links:  []Link{{Role: "a", Dev: "b0", PeerRole: "b", PeerDev: "eth0"}},
		Addrs: []Addr{
			{Role: "a", Dev: "b0", CIDR: "10.1.0.1/24"},
			{Role: "b", Dev: "eth0", CIDR: "fd00::2/64"},
		},
		Routes:  []Route{{Role: "b", Args: []string{"default", "via", "10.1.0.1"}}},
		Sysctls: []Sysctl{{Role: "a", Key: "net/ipv4/ip_forward", Value: "1"}},
		Hosts:   []Hosts{{Role: "b", Content: "127.0.0.1 localhost\n"}},
	}
}

// TestTopologySteps checks what Build would do, in order, without doing it.
func TestTopologySteps(t *testing.T) {
	tp := testTopology()
	if err := tp.check(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range tp.steps() {
		switch {
		case s.ip != nil:
			got = append(got, "ip "+strings.Join(s.ip, " ")+" creates="+s.creates)
		case s.sysctl != nil:
			got = append(got, "sysctl "+s.sysctl.Role+" "+s.sysctl.Key+"="+s.sysctl.Value+" ("+s.what+")")
		case s.hosts != nil:
			got = append(got, "hosts "+s.hosts.Role+" ("+s.what+")")
		}
	}
	want := []string{
		"ip netns add t-1-a creates=t-1-a",
		"ip -n t-1-a link set lo up creates=",
		"ip netns add t-1-b creates=t-1-b",
		"ip -n t-1-b link set lo up creates=",
		"ip -n t-1-a link add b0 type veth peer name eth0 netns t-1-b creates=",
		"ip -n t-1-a addr add 10.1.0.1/24 dev b0 creates=",
		"ip -n t-1-b addr add fd00::2/64 dev eth0 nodad creates=",
		"ip -n t-1-a link set b0 up creates=",
		"ip -n t-1-b link set eth0 up creates=",
		"ip -n t-1-b route add default via 10.1.0.1 creates=",
		"sysctl a net/ipv4/ip_forward=1 (sysctl net.ipv4.ip_forward in t-1-a)",
		"hosts b (hosts file of t-1-b)",
	}
	if !slices.Equal(got, want) {
		t.Errorf("steps:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := tp.Name("a"); n != "t-1-a" {
		t.Errorf("Name(a) = %q", n)
	}
}

func TestTopologyCheck(t *testing.T) {
	for name, spoil := range map[string]func(*Topology){
		"no prefix":  func(tp *Topology) { tp.Prefix = "" },
		"role twice": func(tp *Topology) { tp.Roles = append(tp.Roles, "a") },
		"empty role": func(tp *Topology) { tp.Roles = append(tp.Roles, "") },
		"link peer":  func(tp *Topology) { tp.Links[0].PeerRole = "c" },
		"addr":       func(tp *Topology) { tp.Addrs[1].Role = "c" },
		"route":      func(tp *Topology) { tp.Routes[0].Role = "c" },
		"sysctl":     func(tp *Topology) { tp.Sysctls[0].Role = "c" },
		"hosts":      func(tp *Topology) { tp.Hosts[0].Role = "c" },
		"undeclared link": func(tp *Topology) {
			tp.Links = append(tp.Links, Link{Role: "x", Dev: "d", PeerRole: "a", PeerDev: "e"})
		},
	} {
		tp := testTopology()
		spoil(tp)
		// Build checks before it runs anything, so this needs no root.
		if err := tp.Build(context.Background()); err == nil || !strings.HasPrefix(err.Error(), "topology: ") {
			t.Errorf("%s: Build error %v, want a topology: error", name, err)
		}
		if len(tp.created) != 0 || len(tp.etc) != 0 {
			t.Errorf("%s: Build recorded %v %v", name, tp.created, tp.etc)
		}
	}
}

// TestTopologyUnbuilt: Destroy of a topology never built touches nothing,
// and In fails for a namespace that does not exist.
func TestTopologyUnbuilt(t *testing.T) {
	tp := &Topology{Prefix: "ftpproxy-netns-test-absent", Roles: []string{"a"}}
	if err := tp.Destroy(); err != nil {
		t.Errorf("Destroy: %v", err)
	}
	ran := false
	if err := tp.In("a", func() error { ran = true; return nil }); err == nil || ran {
		t.Errorf("In on a missing namespace: err %v, ran %v", err, ran)
	}
}
