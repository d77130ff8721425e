package proxy_test

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ftpproxy/ftpproxy/kernelpath"
	"github.com/ftpproxy/ftpproxy/proxy"
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
	kp := openKernelPath(t)
	down := randomBytes(t, 8<<20)
	up := randomBytes(t, 4<<20)
	m := &miniFTP{files: map[string][]byte{"down.bin": down}, stored: make(chan storedFile, 1)}
	fs := newFakeServer(t, m.serve)
	e := startProxy(t, fs.addr(), proxyOpts{config: func(c *proxy.Config) { c.KernelPath = kp }})

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
	for _, line := range strings.Split(e.logs.String(), "\n") {
		if strings.Contains(line, `"message":"transfer"`) && !strings.Contains(line, `"data_path":"kernel"`) {
			t.Errorf("transfer not carried by the kernel: %s", line)
		}
	}
	checkNoElements(t, kp)
}
