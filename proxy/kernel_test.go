package proxy_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/rs/zerolog"

	"github.com/ftpproxy/ftpproxy/kernelpath"
	"github.com/ftpproxy/ftpproxy/proxy"
	"github.com/ftpproxy/ftpproxy/rewrite"
)

// The kernel data path changes nftables: its tests run in a network
// namespace of their own. A test calls inNetns first; outside the
// namespace it runs itself again under unshare -n and reports the result.
const netnsEnv = "FTPPROXY_TEST_NETNS"

var netnsSetup sync.Once

func inNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(netnsEnv) != "" {
		netnsSetup.Do(func() {
			if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
				t.Fatalf("lo up: %v %s", err, out)
			}
			for _, key := range []string{"net/netfilter/nf_conntrack_acct", "net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
				if err := os.WriteFile("/proc/sys/"+key, []byte("1"), 0); err != nil {
					t.Fatalf("sysctl %s: %v", key, err)
				}
			}
		})
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root and unshare: the kernel data path is tested in a network namespace of its own")
	}
	cmd := exec.Command("unshare", "-n", os.Args[0], "-test.run", "^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("in a network namespace of its own:\n%s", out)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatal("the test did not pass in its namespace")
	}
	return false
}

// openKernelPath opens the kernel path for one test.
func openKernelPath(t *testing.T) *kernelpath.Path {
	t.Helper()
	p, err := kernelpath.Open(kernelpath.Config{Table: "ftpproxytest", Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(false) })
	return p
}

// kernelProxy runs m behind a proxy with the kernel path on.
func kernelProxy(t *testing.T, m *miniFTP, o proxyOpts) (*kernelpath.Path, *proxyEnv) {
	t.Helper()
	kp := openKernelPath(t)
	fs := newFakeServer(t, m.serve)
	config := o.config
	o.config = func(c *proxy.Config) {
		c.KernelPath = kp
		if config != nil {
			config(c)
		}
	}
	return kp, startProxy(t, fs.addr(), o)
}

// checkNoElements waits for the path's maps to be empty: a transfer leaves
// nothing behind.
func checkNoElements(t *testing.T, p *kernelpath.Path) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for {
		n, dead, err := p.Elements()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 && dead == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d redirect and %d dead elements left", n, dead)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestKernelPathTransfers: RETR and STOR through the kernel, byte-exact,
// with the completion reply after the last byte, logged as carried by the
// kernel, and nothing left in the maps.
func TestKernelPathTransfers(t *testing.T) {
	if !inNetns(t) {
		return
	}
	down := randomBytes(t, 8<<20)
	up := randomBytes(t, 4<<20)
	m := &miniFTP{files: map[string][]byte{"down.bin": down}, stored: make(chan storedFile, 1)}
	kp, e := kernelProxy(t, m, proxyOpts{})

	c := dialLogin(t, e.addr)
	c.Cmd("TYPE I", 200)
	dc := c.DialData(checkPASVReply(t, e, c.Cmd("PASV", 227)))
	c.Send("RETR down.bin")
	c.Expect(150)
	got, err := readAll(dc)
	if err != nil {
		t.Fatal(err)
	}
	dc.Close()
	c.Expect(226)
	checkSame(t, "RETR", got, down)

	dc = c.DialData(c.EPSV())
	c.Send("STOR up.bin")
	c.Expect(150)
	upload(t, dc, up)
	c.Expect(226)
	checkSame(t, "STOR", withTimeout(t, m.stored, "the stored file").data, up)
	c.Cmd("QUIT", 221)
	c.ExpectEOF()

	e.logs.waitFor(t, `"data_path":"kernel"`, `"cmd":"RETR"`, `"down":`)
	e.logs.waitFor(t, `"data_path":"kernel"`, `"cmd":"STOR"`)
	e.logs.waitFor(t, `"message":"session closed"`, `"kernel_transfers":2`, `"transfers":2`)
	for _, line := range strings.Split(e.logs.String(), "\n") {
		if strings.Contains(line, `"message":"transfer"`) && !strings.Contains(line, `"data_path":"kernel"`) {
			t.Errorf("transfer not carried by the kernel: %s", line)
		}
	}
	checkNoElements(t, kp)
}

// TestKernelPathRefusesOthers: a connection to the announced port from
// another address, and a second one from the client once its own is
// established, reach the proxy's listener and are refused; the transfer
// goes on byte-exact, STAT reports conntrack's count, and the 226 waits
// for the server's close.
func TestKernelPathRefusesOthers(t *testing.T) {
	if !inNetns(t) {
		return
	}
	file := randomBytes(t, 2<<20)
	gate := make(chan struct{})
	m := &miniFTP{files: map[string][]byte{"f": file}, closeGate: gate}
	kp, e := kernelProxy(t, m, proxyOpts{})

	c := dialLogin(t, e.addr)
	ap := checkPASVReply(t, e, c.Cmd("PASV", 227))
	refused := func(from string) {
		t.Helper()
		d := net.Dialer{Timeout: ioTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		conn, err := d.Dial("tcp", ap.String())
		if err != nil {
			return // refused outright
		}
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(ioTimeout))
		if n, err := conn.Read(make([]byte, 1)); n != 0 || isTimeout(err) {
			t.Errorf("connection from %s got %d bytes, %v; want it refused", from, n, err)
		}
	}
	refused("127.0.0.9")
	e.logs.waitFor(t, "data connection from a foreign address refused", `"from":"127.0.0.9:`)

	dc := c.DialData(ap)
	c.Send("RETR f")
	c.Expect(150)
	got := make([]byte, len(file))
	dc.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := io.ReadFull(dc, got); err != nil {
		t.Fatal(err)
	}
	refused("127.0.0.1")
	e.logs.waitFor(t, "second data connection refused")
	// STAT answers at once, with conntrack's count.
	r := c.Cmd("STAT", 213)
	var n int
	if _, err := fmt.Sscanf(r.lines[0], "213 Status: RETR in progress, about %d bytes carried by the kernel.", &n); err != nil || n < len(file) {
		t.Errorf("STAT: %q (%d bytes, %v); want about %d bytes carried by the kernel", r.text(), n, err, len(file))
	}
	// Every byte is there and the server has sent its 226, but its data
	// connection is still open: the reply waits.
	replies := make(chan replyOrErr, 1)
	go func() {
		r, err := c.readReply()
		replies <- replyOrErr{r, err}
	}()
	select {
	case r := <-replies:
		t.Fatalf("reply %q before the data connection closed", r.r.text())
	case <-time.After(300 * time.Millisecond):
	}
	close(gate)
	if r := withTimeout(t, replies, "the 226"); r.err != nil || r.r.code != 226 {
		t.Fatalf("got %q, %v; want 226", r.r.text(), r.err)
	}
	if rest, err := readAll(dc); err != nil || len(rest) != 0 {
		t.Fatalf("after the file: %d bytes, %v", len(rest), err)
	}
	checkSame(t, "RETR", got, file)
	checkNoElements(t, kp)
}

// TestKernelPathFailures: a transfer the kernel carried that ends with a
// reset, a stall or the client's ABOR is a 426 for the client, whatever
// the server says, and leaves no element behind.
func TestKernelPathFailures(t *testing.T) {
	if !inNetns(t) {
		return
	}
	kp := openKernelPath(t)
	tests := []struct {
		name string
		// client acts on the data connection once data flows, and says
		// what replies to expect.
		client func(c *ftpClient, dc *net.TCPConn) []int
		// stall: the server sends a little and then nothing.
		stall bool
	}{
		{"client resets", func(c *ftpClient, dc *net.TCPConn) []int {
			dc.SetLinger(0)
			dc.Close()
			return []int{426}
		}, false},
		{"ABOR", func(c *ftpClient, dc *net.TCPConn) []int {
			c.Send("ABOR")
			return []int{426, 226}
		}, false},
		{"stall", func(c *ftpClient, dc *net.TCPConn) []int { return []int{426} }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			serverSaw := make(chan error, 1)
			fs := newFakeServer(t, func(f *fakeConn) {
				dc := f.serveRETR("endless")
				// The flow the proxy ends is reset at each side's next
				// packet; on loopback the server's own end may only stall,
				// so it gives up after a moment either way.
				dc.SetDeadline(time.Now().Add(1500 * time.Millisecond))
				var err error
				if tt.stall {
					dc.Write(bytes.Repeat([]byte("S"), 64<<10))
					_, err = dc.Read(make([]byte, 1))
				} else {
					block := bytes.Repeat([]byte("A"), 32<<10)
					for err == nil {
						_, err = dc.Write(block)
					}
				}
				serverSaw <- err
				dc.Close()
				// A server that did not notice: the proxy must not pass
				// this on.
				f.Send("226 Transfer complete.")
				if line, err := f.ReadLine(); err == nil && line == "NOOP" {
					f.Send("200 NOOP ok.")
				}
			})
			e := startProxy(t, fs.addr(), proxyOpts{config: func(c *proxy.Config) {
				c.KernelPath = kp
				c.DataStallTimeout = 500 * time.Millisecond
			}})
			c := dialLogin(t, e.addr)
			dc := c.DialData(checkPASVReply(t, e, c.Cmd("PASV", 227)))
			c.Send("RETR endless")
			c.Expect(150)
			dc.SetReadDeadline(time.Now().Add(ioTimeout))
			if _, err := io.ReadFull(dc, make([]byte, 32<<10)); err != nil {
				t.Fatal(err)
			}
			for _, code := range tt.client(c, dc) {
				c.Expect(code)
			}
			if err := withTimeout(t, serverSaw, "the server's data connection to end"); err == nil {
				t.Error("the server's data connection ended cleanly")
			}
			// How the client's end of a killed flow ends on loopback is
			// loopback's business; across the host both ends are reset
			// (the interop suite's kill cases).
			c.Cmd("NOOP", 200)
			checkNoElements(t, kp)
		})
	}
}

// TestKernelPathConcurrent: 200 sessions at once transfer a file each:
// every file byte-exact through the kernel, and the maps empty at the end.
func TestKernelPathConcurrent(t *testing.T) {
	if !inNetns(t) {
		return
	}
	const sessions = 200
	files := make(map[string][]byte)
	for i := range 10 {
		files[fmt.Sprintf("f%d", i)] = randomBytes(t, 64<<10+i*4096)
	}
	m := &miniFTP{files: files}
	kp, e := kernelProxy(t, m, proxyOpts{poolSize: 256})

	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	// How many redirects existed at once, for the log.
	stop := make(chan struct{})
	peak := make(chan int, 1)
	go func() {
		most := 0
		for {
			select {
			case <-stop:
				peak <- most
				return
			case <-time.After(5 * time.Millisecond):
			}
			if n, _, err := kp.Elements(); err == nil {
				most = max(most, n/4)
			}
		}
	}()
	for i := range sessions {
		wg.Go(func() {
			c := dialLogin(t, e.addr)
			ap := checkPASVReply(t, e, c.Cmd("PASV", 227))
			name := fmt.Sprintf("f%d", i%10)
			dc := c.DialData(ap)
			c.Send("RETR " + name)
			c.Expect(150)
			got, err := readAll(dc)
			if err != nil {
				errs <- err
				return
			}
			c.Expect(226)
			if !bytes.Equal(got, files[name]) {
				errs <- fmt.Errorf("%s: got %d bytes, want %d", name, len(got), len(files[name]))
			}
			c.Cmd("QUIT", 221)
		})
	}
	wg.Wait()
	close(stop)
	t.Logf("at most %d redirects at once", <-peak)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	e.logs.waitFor(t, "session closed")
	if n := strings.Count(e.logs.String(), `"data_path":"kernel"`); n != sessions {
		t.Errorf("%d transfers carried by the kernel, want %d", n, sessions)
	}
	checkNoElements(t, kp)
}

// TestKernelPathFallbackActive: an active-mode transfer with the kernel
// path on is relayed, byte-exact.
func TestKernelPathFallbackActive(t *testing.T) {
	if !inNetns(t) {
		return
	}
	file := randomBytes(t, 1<<20)
	m := &miniFTP{files: map[string][]byte{"f": file}}
	_, e := kernelProxy(t, m, proxyOpts{})
	c := dialLogin(t, e.addr)
	ln := listenActive(t, "tcp", "127.0.0.1:0")
	c.Cmd("EPRT "+rewrite.FormatEPRT(ln.Addr().(*net.TCPAddr).AddrPort()), 200)
	c.Send("RETR f")
	c.Expect(150)
	got, err := readAll(acceptData(t, ln))
	if err != nil {
		t.Fatal(err)
	}
	c.Expect(226)
	checkSame(t, "RETR", got, file)
	e.logs.waitFor(t, `"message":"transfer"`, `"cmd":"RETR"`)
	e.logs.waitFor(t, `"path":"splice_active"`)
	if strings.Contains(e.logs.String(), `"data_path":"kernel"`) {
		t.Error("an active-mode transfer was logged as carried by the kernel")
	}
}

// TestKernelPathAddFails: a redirect that cannot be added (the table was
// deleted under the proxy) leaves the transfer to the relay, byte-exact.
func TestKernelPathAddFails(t *testing.T) {
	if !inNetns(t) {
		return
	}
	file := randomBytes(t, 1<<20)
	m := &miniFTP{files: map[string][]byte{"f": file}}
	_, e := kernelProxy(t, m, proxyOpts{})
	nft, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	nft.DelTable(&nftables.Table{Name: "ftpproxytest", Family: nftables.TableFamilyINet})
	if err := nft.Flush(); err != nil {
		t.Fatal(err)
	}
	c := dialLogin(t, e.addr)
	retrPassive(t, c, checkPASVReply(t, e, c.Cmd("PASV", 227)), "f", file)
	e.logs.waitFor(t, "kernel data path: redirect not added; relaying this transfer")
	e.logs.waitFor(t, `"path":"splice_add_failed"`)
	e.logs.waitFor(t, `"message":"transfer"`, `"cmd":"RETR"`)
	if strings.Contains(e.logs.String(), `"data_path":"kernel"`) {
		t.Error("the transfer was logged as carried by the kernel")
	}
}

// TestKernelPathFallbackFamily: an IPv6 client in front of an IPv4
// server is relayed (the kernel cannot translate), byte-exact.
func TestKernelPathFallbackFamily(t *testing.T) {
	if !inNetns(t) {
		return
	}
	file := randomBytes(t, 256<<10)
	m := &miniFTP{files: map[string][]byte{"f": file}}
	kp, e := kernelProxy(t, m, proxyOpts{listen: "[::1]:0"})
	c := dialLogin(t, e.addr)
	port := checkEPSVReply(t, e, c.Cmd("EPSV", 229))
	retrPassive(t, c, netip.AddrPortFrom(netip.MustParseAddr("::1"), port), "f", file)
	e.logs.waitFor(t, `"path":"splice_family"`)
	e.logs.waitFor(t, `"message":"transfer"`, `"cmd":"RETR"`)
	if strings.Contains(e.logs.String(), `"data_path":"kernel"`) {
		t.Error("an IPv6 client before an IPv4 server was logged as carried by the kernel")
	}
	checkNoElements(t, kp)
}
