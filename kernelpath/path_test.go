package kernelpath

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/rs/zerolog"
)

// The tests that change nftables run in a network namespace of their own:
// TestMain runs the test binary again under unshare -n, as root, so that
// nothing of the host's ruleset or conntrack table is touched.
const netnsEnv = "KERNELPATH_TEST_NETNS"

func TestMain(m *testing.M) {
	if os.Getenv(netnsEnv) == "" && os.Geteuid() == 0 {
		if _, err := exec.LookPath("unshare"); err == nil {
			cmd := exec.Command("unshare", append([]string{"-n", os.Args[0]}, os.Args[1:]...)...)
			cmd.Env = append(os.Environ(), netnsEnv+"=1")
			cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
			if err := cmd.Run(); err != nil {
				if ee, ok := err.(*exec.ExitError); ok {
					os.Exit(ee.ExitCode())
				}
				os.Stderr.WriteString("kernelpath: unshare: " + err.Error() + "\n")
				os.Exit(1)
			}
			os.Exit(0)
		}
	}
	if os.Getenv(netnsEnv) != "" {
		for _, args := range [][]string{{"ip", "link", "set", "lo", "up"}} {
			if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
				os.Stderr.WriteString("kernelpath: " + string(out))
				os.Exit(1)
			}
		}
		for _, key := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
			os.WriteFile("/proc/sys/"+key, []byte("1"), 0)
		}
		// Set before conntrack exists in the namespace; set again once
		// a path has loaded it (openPath).
	}
	os.Exit(m.Run())
}

// inNetns skips a test outside the test's own namespace, and turns
// conntrack accounting on there, so that each test can run alone.
func inNetns(t *testing.T) {
	t.Helper()
	if os.Getenv(netnsEnv) == "" {
		t.Skip("needs root and unshare: the kernel path is tested in a network namespace of its own")
	}
	const acct = "/proc/sys/net/netfilter/nf_conntrack_acct"
	if os.WriteFile(acct, []byte("1"), 0) == nil {
		return
	}
	// Conntrack is not in the namespace yet: a table with NAT chains
	// loads it (Open then fails, accounting being off, and removes it).
	if p, err := Open(Config{Table: "fpload", Log: zerolog.Nop()}); err == nil {
		p.Close(false)
	}
	if err := os.WriteFile(acct, []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
}

// openPath opens a path in the test's namespace, or skips without one.
func openPath(t *testing.T, guard bool) *Path {
	t.Helper()
	inNetns(t)
	p, err := Open(Config{Table: "fptest", Guard: guard, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(false); err != nil {
			t.Error(err)
		}
	})
	return p
}

func listen(t *testing.T, addr string) *net.TCPListener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.(*net.TCPListener)
}

func dialFrom(from, to string) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", to)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

func addrPort(a net.Addr) netip.AddrPort { return a.(*net.TCPAddr).AddrPort() }

// TestRedirectDownload: the client's connection to the announced port
// reaches the upstream from the proxy's address, every byte arrives, the
// flow reports its close and its counts, and no element is left.
func TestRedirectDownload(t *testing.T) {
	p := openPath(t, false)
	upstream := listen(t, "127.0.0.3:0")
	announced := listen(t, "127.0.0.2:0") // the proxy's passive listener
	flow, err := p.Redirect(Redirect{
		Client: netip.MustParseAddr("127.0.0.1"), Port: addrPort(announced.Addr()).Port(),
		To: addrPort(upstream.Addr()), From: netip.MustParseAddr("127.0.0.4"), Timeout: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer flow.Forget()
	if n, _, err := p.Elements(); err != nil || n != 4 {
		t.Fatalf("elements after redirect: %d, %v; want 4", n, err)
	}
	// The host's own tools must still read the ruleset (nft 1.0 aborts on
	// some expressions it cannot print). Without nft there is nothing to
	// break; the interop suite, which installs it, checks it too.
	if _, err := exec.LookPath("nft"); err == nil {
		if out, err := exec.Command("nft", "list", "ruleset").CombinedOutput(); err != nil {
			t.Fatalf("nft list ruleset: %v\n%s", err, out)
		}
	}

	payload := make([]byte, 8<<20)
	rand.Read(payload)
	served := make(chan netip.AddrPort, 1)
	go func() {
		c, err := upstream.Accept()
		if err != nil {
			served <- netip.AddrPort{}
			return
		}
		served <- addrPort(c.RemoteAddr())
		c.Write(payload)
		c.Close()
	}()
	c, err := dialFrom("127.0.0.1", announced.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("got %d bytes, want %d, different content", len(got), len(payload))
	}
	if from := <-served; from.Addr() != netip.MustParseAddr("127.0.0.4") {
		t.Fatalf("upstream saw the connection from %v, want 127.0.0.4 (SNAT)", from)
	}
	select {
	case <-flow.Established():
	case <-time.After(2 * time.Second):
		t.Fatal("conntrack never reported the flow")
	}
	// The gate closed behind the first packet: a second connection from
	// the client reaches the proxy's own listener.
	if n, _, _ := p.Elements(); n != 3 {
		t.Errorf("elements once established: %d, want 3 (keys, dnat and snat)", n)
	}
	second := make(chan error, 1)
	go func() {
		c, err := announced.Accept()
		if err == nil {
			c.Close()
		}
		second <- err
	}()
	c2, err := dialFrom("127.0.0.1", announced.Addr().String())
	if err != nil {
		t.Fatalf("second connection: %v", err)
	}
	c2.Close()
	if err := <-second; err != nil {
		t.Fatalf("second connection did not reach the proxy's listener: %v", err)
	}
	c.Close()
	var snap Snapshot
	deadline := time.Now().Add(3 * time.Second)
	for {
		snap, _ = flow.Snapshot()
		if o := snap.Outcome(true, true); o == Closed || o == Delivered {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("flow never ended cleanly: %+v", snap)
		}
		select {
		case <-flow.Changed():
		case <-time.After(100 * time.Millisecond):
		}
	}
	_, down := snap.Payload()
	if down < uint64(len(payload)) || down > uint64(len(payload))*11/10 {
		t.Errorf("counted %d bytes down, want about %d", down, len(payload))
	}
	if err := flow.Close(); err != nil {
		t.Fatal(err)
	}
	if n, dead, err := p.Elements(); err != nil || n != 0 || dead != 0 {
		t.Fatalf("elements after close: %d redirects, %d dead, %v; want none", n, dead, err)
	}
}

// redirected sets up an upstream listener on 127.0.0.3, the proxy's
// listener on 127.0.0.2 and a redirect for the client 127.0.0.1, SNATed
// to 127.0.0.1.
func redirected(t *testing.T, p *Path) (upstream, announced *net.TCPListener, flow *Flow) {
	t.Helper()
	upstream = listen(t, "127.0.0.3:0")
	announced = listen(t, "127.0.0.2:0")
	flow, err := p.Redirect(Redirect{
		Client: netip.MustParseAddr("127.0.0.1"), Port: addrPort(announced.Addr()).Port(),
		To: addrPort(upstream.Addr()), From: netip.MustParseAddr("127.0.0.1"), Timeout: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { flow.Forget() })
	return upstream, announced, flow
}

// TestRedirectOnlyClient: a connection from another address is not
// redirected, and the redirect still waits for the client.
func TestRedirectOnlyClient(t *testing.T) {
	p := openPath(t, false)
	_, announced, flow := redirected(t, p)
	thief, err := dialFrom("127.0.0.9", announced.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer thief.Close()
	announced.SetDeadline(time.Now().Add(2 * time.Second))
	c, err := announced.Accept()
	if err != nil {
		t.Fatalf("the other address's connection did not reach the proxy: %v", err)
	}
	if from := addrPort(c.RemoteAddr()).Addr(); from != netip.MustParseAddr("127.0.0.9") {
		t.Fatalf("proxy saw %v", from)
	}
	c.Close()
	select {
	case <-flow.Established():
		t.Fatal("flow established by another address")
	case <-time.After(200 * time.Millisecond):
	}
	if n, _, _ := p.Elements(); n != 4 {
		t.Fatalf("elements: %d, want the 4 still waiting", n)
	}
}

// TestKill: a killed flow is reset on both sides and counted as such.
func TestKill(t *testing.T) {
	p := openPath(t, false)
	upstream, announced, flow := redirected(t, p)
	upErr := make(chan error, 1)
	go func() {
		c, err := upstream.Accept()
		if err != nil {
			upErr <- err
			return
		}
		defer c.Close()
		buf := bytes.Repeat([]byte("x"), 64<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				upErr <- err
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	c, err := dialFrom("127.0.0.1", announced.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-flow.Established()
	if err := flow.Kill(); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(time.Second))
	_, err = io.Copy(io.Discard, c)
	if err == nil {
		t.Fatal("client saw a clean end of a killed flow")
	}
	// On loopback the upstream's own end is reset only once it sends to
	// the closed client; across the host (the forward chain) both ends
	// get theirs, which the interop suite checks.
	select {
	case err := <-upErr:
		t.Logf("upstream: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		snap, _ := flow.Snapshot()
		if snap.Outcome(true, true) == Reset {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("outcome %v, want reset: %+v", snap.Outcome(true, true), snap)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n, dead, _ := p.Elements(); n != 3 || dead != 1 {
		t.Errorf("killed flow: %d redirect elements, %d dead; want 3 and 1", n, dead)
	}
	if err := flow.Close(); err != nil {
		t.Fatal(err)
	}
	// The mark stays in the dead set until it expires.
	deadline = time.Now().Add(deadTimeout + 2*time.Second)
	for {
		n, dead, _ := p.Elements()
		if n == 0 && dead == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("closed killed flow: %d redirect elements, %d dead after %v; want none", n, dead, deadTimeout+2*time.Second)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestTableLifecycle: a table left behind (by a crash) is rebuilt empty at
// start; a process that takes over in an upgrade keeps it with the old
// process's redirects; closing with keep leaves it, closing without
// removes it.
func TestTableLifecycle(t *testing.T) {
	inNetns(t)
	open := func(keep bool) *Path {
		t.Helper()
		p, err := Open(Config{Table: "fplife", Keep: keep, Log: zerolog.Nop()})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	redirect := func(p *Path, port uint16) *Flow {
		t.Helper()
		f, err := p.Redirect(Redirect{Client: netip.MustParseAddr("127.0.0.1"), Port: port,
			To: netip.MustParseAddrPort("127.0.0.3:2100"), From: netip.MustParseAddr("127.0.0.1"), Timeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	crashed := open(false)
	redirect(crashed, 21001)
	crashed.Close(true) // as if it had died: the table and its element stay

	old := open(false)
	if n, _, _ := old.Elements(); n != 0 {
		t.Fatalf("a fresh start found %d elements of the table left behind", n)
	}
	redirect(old, 21002)
	upgraded := open(true)
	if n, _, _ := upgraded.Elements(); n != 4 {
		t.Fatalf("the upgraded process sees %d elements, want the old process's 4", n)
	}
	f := redirect(upgraded, 21003)
	if n, _, _ := old.Elements(); n != 8 {
		t.Fatalf("%d elements with both processes' redirects, want 8", n)
	}
	f.Forget()
	if err := old.Close(true); err != nil { // the old process exits after the upgrade
		t.Fatal(err)
	}
	if n, _, _ := upgraded.Elements(); n != 4 {
		t.Fatalf("%d elements after the old process left, want its 4 (they time out)", n)
	}
	if err := upgraded.Close(false); err != nil {
		t.Fatal(err)
	}
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == "fplife" {
			t.Fatal("table still there after a clean exit")
		}
	}
}

// TestTableOwner: a second instance given a table that a running process
// owns leaves it alone (ErrTableInUse); a process taking over in an
// upgrade becomes its owner; a table whose owner is gone is rebuilt.
func TestTableOwner(t *testing.T) {
	inNetns(t)
	const name = "fpowner"
	table := &nftables.Table{Name: name, Family: nftables.TableFamilyINet}
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	owners := func() []int {
		t.Helper()
		set, err := c.GetSetByName(table, ownerSet)
		if err != nil {
			t.Fatal(err)
		}
		els, err := c.GetSetElements(set)
		if err != nil {
			t.Fatal(err)
		}
		var pids []int
		for _, el := range els {
			pids = append(pids, int(binaryutil.BigEndian.Uint32(el.Key)))
		}
		return pids
	}
	setOwner := func(pid int) {
		t.Helper()
		set, err := c.GetSetByName(table, ownerSet)
		if err != nil {
			t.Fatal(err)
		}
		c.FlushSet(set)
		if err := c.SetAddElements(set, pidElement(pid)); err != nil {
			t.Fatal(err)
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	other := exec.Command("sleep", "30")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { other.Process.Kill(); other.Wait() }()

	first, err := Open(Config{Table: name, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if got := owners(); !slices.Equal(got, []int{os.Getpid()}) {
		t.Fatalf("owner %v, want this process %d", got, os.Getpid())
	}
	if _, err := first.Redirect(Redirect{Client: netip.MustParseAddr("127.0.0.1"), Port: 21011,
		To: netip.MustParseAddrPort("127.0.0.3:2100"), From: netip.MustParseAddr("127.0.0.1"), Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	// As if the table were another running instance's.
	setOwner(other.Process.Pid)
	_, err = Open(Config{Table: name, Log: zerolog.Nop()})
	if !errors.Is(err, ErrTableInUse) || !strings.Contains(err.Error(), fmt.Sprintf("process %d", other.Process.Pid)) ||
		!strings.Contains(err.Error(), "--kernel-table") {
		t.Fatalf("Open of a table a running process owns: %v, want ErrTableInUse naming it", err)
	}
	if n, _, _ := first.Elements(); n != 4 {
		t.Fatalf("%d elements after the refused Open, want the running one's 4", n)
	}

	// An upgrade joins the owners; the process it took over from takes
	// itself out as it leaves. (Here both are this process: the other's
	// PID stands for the one taken over from.)
	upgraded, err := Open(Config{Table: name, Keep: true, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	got := owners()
	slices.Sort(got)
	if want := []int{os.Getpid(), other.Process.Pid}; !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Fatalf("owners after the takeover %v, want %v", got, want)
	}
	if err := first.Close(true); err != nil {
		t.Fatal(err)
	}
	if got := owners(); !slices.Equal(got, []int{other.Process.Pid}) {
		t.Fatalf("owners after this process left %v, want %v", got, []int{other.Process.Pid})
	}
	upgraded.Close(true) // as if it had died: the table stays

	// The owner is gone: the table is stale and rebuilt.
	other.Process.Kill()
	other.Wait()
	rebuilt, err := Open(Config{Table: name, Log: zerolog.Nop()})
	if err != nil {
		t.Fatalf("Open of a table whose owner exited: %v", err)
	}
	defer rebuilt.Close(false)
	if n, _, _ := rebuilt.Elements(); n != 0 {
		t.Fatalf("%d elements in the rebuilt table, want 0", n)
	}
}

// TestOpenSaysWhy: without forwarding or accounting Open fails with the
// sysctl to set, and leaves no table.
func TestOpenSaysWhy(t *testing.T) {
	if os.Getenv(netnsEnv) == "" {
		t.Skip("needs root and unshare: the kernel path is tested in a network namespace of its own")
	}
	set := func(key, v string) {
		t.Helper()
		if err := os.WriteFile("/proc/sys/"+key, []byte(v), 0); err != nil {
			t.Fatal(err)
		}
	}
	defer set("net/ipv4/ip_forward", "1")
	defer set("net/ipv6/conf/all/forwarding", "1")
	defer set("net/netfilter/nf_conntrack_acct", "1")
	set("net/ipv4/ip_forward", "0")
	set("net/ipv6/conf/all/forwarding", "0")
	if _, err := Open(Config{Table: "fpwhy"}); err == nil || !strings.Contains(err.Error(), "net.ipv4.ip_forward=1") {
		t.Errorf("forwarding off: %v", err)
	}
	set("net/ipv4/ip_forward", "1")
	set("net/netfilter/nf_conntrack_acct", "0")
	if _, err := Open(Config{Table: "fpwhy"}); err == nil || !strings.Contains(err.Error(), "nf_conntrack_acct=1") {
		t.Errorf("accounting off: %v", err)
	}
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListTableOfFamily("fpwhy", nftables.TableFamilyINet); err == nil {
		t.Error("a path that failed to open left its table")
	}

	// A process taking over in an upgrade that cannot open leaves the
	// running one's table alone.
	set("net/netfilter/nf_conntrack_acct", "1")
	running, err := Open(Config{Table: "fpwhy"})
	if err != nil {
		t.Fatal(err)
	}
	defer running.Close(false)
	set("net/netfilter/nf_conntrack_acct", "0")
	if _, err := Open(Config{Table: "fpwhy", Keep: true}); err == nil {
		t.Fatal("opened with accounting off")
	}
	if _, err := c.ListTableOfFamily("fpwhy", nftables.TableFamilyINet); err != nil {
		t.Errorf("a taking-over process that failed to open removed the running one's table: %v", err)
	}
}

// TestRedirectOnlyToLocal: a connection from the client to the announced
// port of another host (one the proxy's host routes to) is not diverted.
func TestRedirectOnlyToLocal(t *testing.T) {
	p := openPath(t, false)
	for _, args := range [][]string{
		{"link", "add", "fpveth0", "type", "veth", "peer", "name", "fpveth1"},
		{"addr", "add", "10.99.0.1/24", "dev", "fpveth0"},
		{"link", "set", "fpveth0", "up"},
		{"link", "set", "fpveth1", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	defer exec.Command("ip", "link", "del", "fpveth0").Run()
	upstream := listen(t, "127.0.0.3:0")
	flow, err := p.Redirect(Redirect{
		Client: netip.MustParseAddr("10.99.0.1"), Port: 21005,
		To: addrPort(upstream.Addr()), From: netip.MustParseAddr("127.0.0.1"), Timeout: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer flow.Forget()
	d := net.Dialer{Timeout: 500 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: net.ParseIP("10.99.0.1")}}
	if c, err := d.Dial("tcp", "10.99.0.2:21005"); err == nil {
		c.Close()
		t.Fatal("a connection to another host's port was diverted to the upstream")
	}
	if n, _, _ := p.Elements(); n != 4 {
		t.Fatalf("%d elements, want the redirect's 4 still waiting", n)
	}
}
