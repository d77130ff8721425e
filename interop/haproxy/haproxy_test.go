//go:build interop

package haproxy

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

var (
	flagProxyBin = flag.String("ftpproxy", "../../bin/ftpproxy", "the ftpproxy binary")
	flagPeers    = flag.String("peers", "../.peers", "directory the servers were unpacked into by install-peers.sh")
	flagScript   = flag.String("ftplib", "../clients/ftplib_client.py", "the ftplib client script")
	flagExample  = flag.String("example", "../../examples/haproxy", "the directory with haproxy.cfg and ftpproxy.sh")
	flagNetnsB   = flag.String("netns-b", "", "the network namespace of the balanced instances (made by run.sh)")
	flagWork     = flag.String("work", "", "work directory (default: a new directory under $TMPDIR)")
	flagKeep     = flag.Bool("keep", false, "keep the work directory even when every case passed")
	flagBigMiB   = flag.Int("big", 64, "size of the file downloaded while its instance drains, in MiB")
	flagSessions = flag.Int("sessions", 100, "sessions in the scale-out case")
)

// The addresses run.sh sets up. The test runs in the main namespace; the
// balanced instances run in the second one, reached over a veth pair, so
// that HAProxy can forward their passive port ranges with the same port
// numbers (on one host, HAProxy's listeners on those ports and the
// instance's wildcard passive listeners would collide).
const (
	lbIP       = "127.0.0.1"  // HAProxy's frontends
	lbVethIP   = "10.213.0.1" // HAProxy's source address towards the balanced instances
	serverIP   = "10.213.0.5" // vsftpd (main namespace, reachable from both)
	px1IP      = "10.213.0.2" // balanced instance 1 (second namespace)
	px2IP      = "10.213.0.3" // balanced instance 2 (second namespace)
	directIP   = "127.0.0.2"  // instance whose clients open data connections to it directly
	clientIP   = "127.0.0.4"  // the clients
	chainAIP   = "127.0.0.6"  // chain: first proxy
	chainAOut  = "127.0.0.1"  // chain: the source address of A's connections to B (A binds none)
	chainBIP   = "127.0.0.7"  // chain: second proxy
	strangeIP  = "127.0.0.8"  // a peer no instance trusts
	serverPort = 2101

	vipPort      = 2130 // examples/haproxy/haproxy.cfg: both instances
	frontA1v1    = 2133 // test frontends: instance 1 with send-proxy
	frontA1v2    = 2134 // instance 1 with send-proxy-v2 and TLVs
	directPort   = 2137
	frontDirV1   = 2138 // the direct instance with send-proxy
	frontDirV2   = 2139 // the direct instance with send-proxy-v2 and TLVs
	chainAPort   = 2135
	chainBPort   = 2136
	directRange  = "23300-23349"
	chainARange  = "23350-23369"
	chainBRange  = "23370-23389"
	serverPasvLo = 23200
	serverPasvHi = 23299
)

// extraCfg holds the test's own HAProxy frontends, loaded after the
// example's haproxy.cfg.
const extraCfg = `
frontend t_a1_v1
    bind 127.0.0.1:2133
    default_backend t_a1_v1
backend t_a1_v1
    server ftpproxy1 "${FTPPROXY1}:2131" send-proxy

frontend t_a1_v2
    bind 127.0.0.1:2134
    unique-id-format %{+X}o%ci:%cp_%fi:%fp_%Ts_%rt:%pid
    default_backend t_a1_v2
backend t_a1_v2
    server ftpproxy1 "${FTPPROXY1}:2131" send-proxy-v2 proxy-v2-options authority,unique-id,crc32c

frontend t_dir_v1
    bind 127.0.0.1:2138
    default_backend t_dir_v1
backend t_dir_v1
    server direct 127.0.0.2:2137 send-proxy

frontend t_dir_v2
    bind 127.0.0.1:2139
    unique-id-format %{+X}o%ci:%cp_%fi:%fp_%Ts_%rt:%pid
    default_backend t_dir_v2
backend t_dir_v2
    server direct 127.0.0.2:2137 send-proxy-v2 proxy-v2-options authority,unique-id,crc32c
`

// --- tally -------------------------------------------------------------------

type tally struct {
	mu             sync.Mutex
	passed, failed int
	failures       []string
}

// run runs one case and prints its PASS or FAIL line.
func (tl *tally) run(name string, fn func() error) bool {
	start := time.Now()
	err := fn()
	d := time.Since(start).Seconds()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if err == nil {
		tl.passed++
		fmt.Printf("PASS %s %.2fs\n", name, d)
		return true
	}
	tl.failed++
	tl.failures = append(tl.failures, name)
	fmt.Printf("FAIL %s %.2fs\n    %s\n", name, d, strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "\n    "))
	return false
}

// --- processes ---------------------------------------------------------------

// proc is a long-running program started in its own process group and
// stopped by its PID.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

func startProc(name, logPath string, env []string, argv ...string) (*proc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("%s: %w", peers.ShellQuote(argv), err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process itself.
func (p *proc) signal(sig syscall.Signal) {
	if !p.exited() {
		syscall.Kill(p.cmd.Process.Pid, sig)
	}
}

// wait waits up to limit for the process to end.
func (p *proc) wait(limit time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(limit):
		return fmt.Errorf("%s (pid %d) still running after %s", p.name, p.cmd.Process.Pid, limit)
	}
}

// stop sends SIGTERM, and SIGKILL after limit.
func (p *proc) stop(limit time.Duration) error {
	if p.exited() {
		return p.err
	}
	p.signal(syscall.SIGTERM)
	if err := p.wait(limit); err == nil || p.exited() {
		return err
	}
	syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
	p.wait(5 * time.Second)
	return fmt.Errorf("%s did not stop within %s of SIGTERM", p.name, limit)
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.logPath)
	return peers.Tail(string(b), 1500)
}

// probeFTP waits until addr greets with 220, dialling from src (an address
// the instance does not trust, so that no PROXY header is due).
func probeFTP(ctx context.Context, p *proc, src, addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, p.tail())
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c, err := dialFrom(src, addr)
		if err == nil {
			c.SetDeadline(time.Now().Add(3 * time.Second))
			line, rerr := bufio.NewReader(c).ReadString('\n')
			c.Write([]byte("QUIT\r\n"))
			c.Close()
			if rerr == nil && strings.HasPrefix(line, "220") {
				return nil
			}
			last = fmt.Errorf("greeting %q: %v", line, rerr)
		} else {
			last = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	msg := ""
	if p != nil {
		msg = "\n" + p.tail()
	}
	return fmt.Errorf("%s did not greet: %v%s", addr, last, msg)
}

func dialFrom(src, addr string) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: 3 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// health fetches an instance's health endpoint.
func health(url string) (int, string, error) {
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}

// --- logs ----------------------------------------------------------------------

type logLine map[string]any

func (l logLine) str(k string) string { s, _ := l[k].(string); return s }

// readLog returns the JSON lines of a log from byte offset from on.
func readLog(path string, from int64) ([]logLine, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if from > int64(len(b)) {
		from = int64(len(b))
	}
	var out []logLine
	for _, ln := range strings.Split(string(b[from:]), "\n") {
		var l logLine
		if json.Unmarshal([]byte(ln), &l) == nil {
			out = append(out, l)
		}
	}
	return out, nil
}

func logSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// waitLog polls a log until a line after offset satisfies match.
func waitLog(path string, from int64, limit time.Duration, what string, match func(logLine) bool) (logLine, error) {
	deadline := time.Now().Add(limit)
	for {
		lines, err := readLog(path, from)
		if err != nil {
			return nil, err
		}
		for _, l := range lines {
			if match(l) {
				return l, nil
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(path)
			if from <= int64(len(b)) {
				b = b[from:]
			}
			return nil, fmt.Errorf("no log line %s in %s within %s; log since:\n%s", what, path, limit, peers.Tail(string(b), 1500))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sessionsOpened returns the "session opened" lines after offset.
func sessionsOpened(path string, from int64) []logLine {
	lines, _ := readLog(path, from)
	var out []logLine
	for _, l := range lines {
		if l.str("message") == "session opened" {
			out = append(out, l)
		}
	}
	return out
}

// checkClientVia checks that the sessions opened after offset came from
// clientIP through via.
func checkClientVia(path string, from int64, min int, via string) error {
	opened := sessionsOpened(path, from)
	if len(opened) < min {
		return fmt.Errorf("%d \"session opened\" lines in %s, want at least %d", len(opened), path, min)
	}
	for _, l := range opened {
		ch, _, _ := net.SplitHostPort(l.str("client"))
		vh, _, _ := net.SplitHostPort(l.str("via"))
		if ch != clientIP || vh != via {
			return fmt.Errorf("session %v: client %q via %q, want client %s:* via %s:*", l["session"], l.str("client"), l.str("via"), clientIP, via)
		}
	}
	return nil
}

// --- clients ---------------------------------------------------------------------

// curlArgs builds a curl command line for a data mode: epsv, pasv (the
// address in the 227 reply is used, not the control connection's), port,
// eprt.
func curlArgs(mode string, extra ...string) []string {
	a := []string{"curl", "-sS", "--max-time", "120", "--connect-timeout", "10", "--interface", clientIP,
		"--user", peers.User + ":" + peers.Password}
	switch mode {
	case "epsv":
		a = append(a, "--ftp-pasv")
	case "pasv":
		a = append(a, "--ftp-pasv", "--disable-epsv", "--no-ftp-skip-pasv-ip")
	case "port":
		a = append(a, "-P", clientIP, "--disable-eprt")
	case "eprt":
		a = append(a, "-P", clientIP)
	default:
		panic("mode " + mode)
	}
	return append(a, extra...)
}

func ftpURL(host string, port int, name string) string {
	return "ftp://" + net.JoinHostPort(host, strconv.Itoa(port)) + "/" + name
}

// roundTrip uploads f as name with the client, checks it on the server,
// downloads it again and checks the copy.
func roundTrip(ctx context.Context, srv *peers.Server, client, mode, host string, port int, f peers.File, name, dl string) error {
	dst := filepath.Join(dl, name)
	switch client {
	case "curl":
		if _, err := peers.RunTool(ctx, 150*time.Second, curlArgs(mode, "-T", f.Path, ftpURL(host, port, name))...); err != nil {
			return err
		}
		if err := peers.SameContent(srv.Path(name), f.Size, f.Sum); err != nil {
			return fmt.Errorf("server side: %w", err)
		}
		if _, err := peers.RunTool(ctx, 150*time.Second, curlArgs(mode, "-o", dst, ftpURL(host, port, name))...); err != nil {
			return err
		}
	case "lftp":
		tg := peers.Target{Host: host, Port: port, Source: clientIP, Mode: mode}
		if err := (peers.Lftp{}).Put(ctx, tg, f.Path, name, 0); err != nil {
			return err
		}
		if err := peers.SameContent(srv.Path(name), f.Size, f.Sum); err != nil {
			return fmt.Errorf("server side: %w", err)
		}
		if err := (peers.Lftp{}).Get(ctx, tg, name, dst, 0); err != nil {
			return err
		}
	default:
		return fmt.Errorf("client %q", client)
	}
	return peers.SameContent(dst, f.Size, f.Sum)
}

// --- raw FTP and PROXY headers ---------------------------------------------------

type rawConn struct {
	c *net.TCPConn
	r *bufio.Reader
}

func newRaw(c *net.TCPConn) *rawConn {
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawConn{c: c, r: bufio.NewReader(c)}
}

// reply reads one whole reply, multi-line ones included.
func (rc *rawConn) reply() (string, error) {
	var all []string
	for {
		line, err := rc.r.ReadString('\n')
		if err != nil {
			return strings.Join(append(all, line), "\n"), err
		}
		line = strings.TrimRight(line, "\r\n")
		all = append(all, line)
		if len(all) == 1 && len(line) >= 4 && line[3] == '-' {
			continue
		}
		if len(all[0]) >= 4 && all[0][3] == '-' && !(len(line) >= 4 && line[:3] == all[0][:3] && line[3] == ' ') {
			continue
		}
		return strings.Join(all, "\n"), nil
	}
}

// cmd sends a command and reads its reply, which must start with want.
func (rc *rawConn) cmd(line, want string) (string, error) {
	if _, err := rc.c.Write([]byte(line + "\r\n")); err != nil {
		return "", err
	}
	r, err := rc.reply()
	if err != nil {
		return r, fmt.Errorf("%s: %q: %v", line, r, err)
	}
	if !strings.HasPrefix(r, want) {
		return r, fmt.Errorf("%s: got %q, want %s", line, r, want)
	}
	return r, nil
}

func v1Header(src, dst string) string {
	sh, sp, _ := net.SplitHostPort(src)
	dh, dp, _ := net.SplitHostPort(dst)
	return fmt.Sprintf("PROXY TCP4 %s %s %s %s\r\n", sh, dh, sp, dp)
}

var sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")

// v2Header is a PROXY v2 header for TCP over IPv4 with the given TLVs
// (type, value) after the addresses.
func v2Header(src, dst string, tlvs ...[2]string) []byte {
	s, _ := netipAddrPort(src)
	d, _ := netipAddrPort(dst)
	body := make([]byte, 0, 64)
	body = append(body, s.ip...)
	body = append(body, d.ip...)
	body = binary.BigEndian.AppendUint16(body, s.port)
	body = binary.BigEndian.AppendUint16(body, d.port)
	for _, t := range tlvs {
		body = append(body, t[0][0])
		body = binary.BigEndian.AppendUint16(body, uint16(len(t[1])))
		body = append(body, t[1]...)
	}
	h := append([]byte{}, sigV2...)
	h = append(h, 0x21, 0x11)
	h = binary.BigEndian.AppendUint16(h, uint16(len(body)))
	return append(h, body...)
}

type ap4 struct {
	ip   []byte
	port uint16
}

func netipAddrPort(s string) (ap4, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return ap4{}, err
	}
	n, _ := strconv.Atoi(p)
	return ap4{ip: net.ParseIP(h).To4(), port: uint16(n)}, nil
}

// pasvPort parses the port of a 227 reply.
func pasvPort(r string) (string, int, error) {
	i, j := strings.Index(r, "("), strings.Index(r, ")")
	if i < 0 || j < i {
		return "", 0, fmt.Errorf("bad 227 %q", r)
	}
	f := strings.Split(r[i+1:j], ",")
	if len(f) != 6 {
		return "", 0, fmt.Errorf("bad 227 %q", r)
	}
	hi, _ := strconv.Atoi(f[4])
	lo, _ := strconv.Atoi(f[5])
	return strings.Join(f[:4], "."), hi*256 + lo, nil
}

// --- the suite -----------------------------------------------------------------------

func absPath(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

func TestHAProxy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 7*time.Minute)
	defer cancel()

	proxyBin := absPath(*flagProxyBin)
	peersDir := absPath(*flagPeers)
	script := absPath(*flagScript)
	example := absPath(*flagExample)
	for _, p := range []string{proxyBin, peersDir, script, filepath.Join(example, "haproxy.cfg"), filepath.Join(example, "ftpproxy.sh")} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%v (run interop/haproxy/run.sh)", err)
		}
	}
	if *flagNetnsB == "" {
		t.Fatal("-netns-b is required: run interop/haproxy/run.sh, which makes the namespaces")
	}
	if _, err := exec.LookPath("haproxy"); err != nil {
		t.Fatal("haproxy not found: run interop/install-peers.sh")
	}

	work := *flagWork
	var err error
	if work == "" {
		if work, err = os.MkdirTemp("", "ftpproxy-haproxy-"); err != nil {
			t.Fatal(err)
		}
	} else if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(work, 0o755)
	tl := &tally{}
	var stops []func()
	defer func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		fmt.Printf("haproxy: %d passed, %d failed\n", tl.passed, tl.failed)
		if tl.failed > 0 || *flagKeep || t.Failed() {
			fmt.Printf("haproxy: work directory kept: %s\n", work)
		} else {
			os.RemoveAll(work)
		}
		if tl.failed > 0 {
			t.Errorf("%d cases failed: %s", tl.failed, strings.Join(tl.failures, ", "))
		}
	}()
	local := filepath.Join(work, "local")
	dl := filepath.Join(work, "dl")
	os.MkdirAll(local, 0o755)
	os.MkdirAll(dl, 0o755)
	f4M, err := peers.WriteRandom(filepath.Join(local, "f4M.bin"), 4<<20, 1)
	if err != nil {
		t.Fatal(err)
	}

	// --- the peers ---
	var srv *peers.Server
	if !tl.run("start/vsftpd", func() error {
		var err error
		srv, err = peers.StartServer(ctx, peers.Vsftpd, peersDir, work, serverIP, serverPort, peers.PassivePorts(serverPasvLo, serverPasvHi))
		return err
	}) {
		return
	}
	stops = append(stops, srv.Stop)
	upstream := srv.Addr()

	// The balanced instances run the example's ftpproxy.sh in the second
	// namespace.
	exEnv := []string{
		"FTP_VIP=" + lbIP, "FTPPROXY1=" + px1IP, "FTPPROXY2=" + px2IP,
		"UPSTREAM=" + upstream, "LB=" + lbVethIP + "/32", "FTPPROXY=" + proxyBin,
	}
	balanced := map[int]*proc{}
	for _, n := range []int{1, 2} {
		ip := map[int]string{1: px1IP, 2: px2IP}[n]
		if !tl.run(fmt.Sprintf("start/ftpproxy%d", n), func() error {
			p, err := startProc(fmt.Sprintf("ftpproxy%d", n), filepath.Join(work, fmt.Sprintf("ftpproxy%d.log", n)), exEnv,
				"ip", "netns", "exec", *flagNetnsB, filepath.Join(example, "ftpproxy.sh"), strconv.Itoa(n),
				"--log-format", "json", "--log-level", "debug")
			if err != nil {
				return err
			}
			stops = append(stops, func() { p.stop(10 * time.Second) })
			balanced[n] = p
			// From vsftpd's address: one the instance does not trust.
			if err := probeFTP(ctx, p, serverIP, net.JoinHostPort(ip, strconv.Itoa(2130+n)), 10*time.Second); err != nil {
				return err
			}
			code, body, err := health(fmt.Sprintf("http://%s:%d/", ip, 8130+n))
			if err != nil || code != 200 || !strings.HasPrefix(body, "ok,") {
				return fmt.Errorf("health: %d %q %v", code, body, err)
			}
			return nil
		}) {
			return
		}
	}

	startPx := func(name string, cfg peers.ProxyConfig) (*peers.Proxy, error) {
		cfg.Bin = proxyBin
		cfg.LogPath = filepath.Join(work, name+".log")
		px, err := peers.StartProxy(ctx, cfg)
		if err == nil {
			stops = append(stops, func() { px.Stop() })
		}
		return px, err
	}
	var direct, chainB *peers.Proxy
	if !tl.run("start/ftpproxy-direct", func() error {
		var err error
		direct, err = startPx("ftpproxy-direct", peers.ProxyConfig{
			Listen: net.JoinHostPort(directIP, strconv.Itoa(directPort)), Upstream: upstream, PassivePorts: directRange,
			Args:        []string{"--proxy-protocol-from", lbIP + "/32", "--advertise", directIP},
			ProbeSource: strangeIP,
		})
		return err
	}) {
		return
	}
	chainOK := tl.run("start/ftpproxy-chain", func() error {
		var err error
		chainB, err = startPx("ftpproxy-chain-b", peers.ProxyConfig{
			Listen: net.JoinHostPort(chainBIP, strconv.Itoa(chainBPort)), Upstream: upstream, PassivePorts: chainBRange,
			Args:        []string{"--proxy-protocol-from", chainAOut + "/32", "--proxy-protocol-chained", "--data-accept-timeout", "10s"},
			ProbeSource: strangeIP,
		})
		if err != nil {
			return err
		}
		_, err = startPx("ftpproxy-chain-a", peers.ProxyConfig{
			Listen: net.JoinHostPort(chainAIP, strconv.Itoa(chainAPort)), Upstream: net.JoinHostPort(chainBIP, strconv.Itoa(chainBPort)),
			PassivePorts: chainARange,
			Args:         []string{"--upstream-proxy-protocol", "v2", "--upstream-data-mode", "passive", "--data-accept-timeout", "10s"},
		})
		return err
	})

	// HAProxy: the example's configuration as it is, plus the test's
	// frontends.
	extra := filepath.Join(work, "haproxy-test.cfg")
	if err := os.WriteFile(extra, []byte(extraCfg), 0o644); err != nil {
		t.Fatal(err)
	}
	hapArgs := []string{"-f", filepath.Join(example, "haproxy.cfg"), "-f", extra}
	var hap *proc
	if !tl.run("haproxy/config-check", func() error {
		cmd := exec.CommandContext(ctx, "haproxy", append([]string{"-c"}, hapArgs...)...)
		cmd.Env = append(os.Environ(), exEnv...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("haproxy -c: %v\n%s", err, out)
		}
		return nil
	}) {
		return
	}
	if !tl.run("haproxy/start", func() error {
		var err error
		hap, err = startProc("haproxy", filepath.Join(work, "haproxy.log"), exEnv, append([]string{"haproxy", "-db"}, hapArgs...)...)
		if err != nil {
			return err
		}
		stops = append(stops, func() { hap.stop(5 * time.Second) })
		// The client address goes through HAProxy to an instance.
		return probeFTP(ctx, hap, clientIP, net.JoinHostPort(lbIP, strconv.Itoa(vipPort)), 10*time.Second)
	}) {
		return
	}

	// --- isolation: the clients reach the server and the instances'
	// control ports only through HAProxy ---
	tl.run("isolation", func() error {
		for _, target := range []string{upstream, net.JoinHostPort(directIP, strconv.Itoa(directPort)), net.JoinHostPort(px1IP, "2131"), net.JoinHostPort(chainBIP, strconv.Itoa(chainBPort))} {
			if c, err := dialFrom(clientIP, target); err == nil {
				c.Close()
				return fmt.Errorf("%s reached %s directly", clientIP, target)
			}
		}
		return nil
	})

	// --- 1. HAProxy -> ftpproxy -> vsftpd, transfers ---
	px1Log := balanced[1].logPath
	type front struct {
		name string
		port int
	}
	aStart := logSize(px1Log)
	aSessions := 0
	for _, fr := range []front{{"send-proxy", frontA1v1}, {"send-proxy-v2-tlv", frontA1v2}} {
		for _, cm := range [][2]string{{"curl", "epsv"}, {"curl", "pasv"}, {"lftp", "passive"}} {
			name := fmt.Sprintf("lb-data/%s/%s-%s", fr.name, cm[0], cm[1])
			tl.run(name, func() error {
				return roundTrip(ctx, srv, cm[0], cm[1], lbIP, fr.port, f4M, strings.NewReplacer("/", "_").Replace(name)+".bin", dl)
			})
			aSessions += 2
		}
	}
	tl.run("lb-data/log-client-via", func() error { return checkClientVia(px1Log, aStart, aSessions, lbVethIP) })

	dStart := logSize(direct.LogPath)
	dSessions := 0
	for _, fr := range []front{{"send-proxy", frontDirV1}, {"send-proxy-v2-tlv", frontDirV2}} {
		for _, cm := range [][2]string{{"curl", "pasv"}, {"curl", "port"}, {"curl", "eprt"}, {"lftp", "passive"}, {"lftp", "active"}} {
			name := fmt.Sprintf("direct-data/%s/%s-%s", fr.name, cm[0], cm[1])
			tl.run(name, func() error {
				return roundTrip(ctx, srv, cm[0], cm[1], lbIP, fr.port, f4M, strings.NewReplacer("/", "_").Replace(name)+".bin", dl)
			})
			dSessions += 2
		}
	}
	tl.run("direct-data/log-client-via", func() error { return checkClientVia(direct.LogPath, dStart, dSessions, lbIP) })

	// --- 2. refusals, on the direct instance (trusts 127.0.0.1) ---
	directAddr := net.JoinHostPort(directIP, strconv.Itoa(directPort))
	stillServing := func() error {
		c, err := dialFrom(lbIP, directAddr)
		if err != nil {
			return fmt.Errorf("listener not serving: %v", err)
		}
		defer c.Close()
		rc := newRaw(c)
		if _, err := c.Write([]byte(v1Header("192.0.2.1:1000", "127.0.0.1:2138"))); err != nil {
			return err
		}
		r, err := rc.reply()
		if err != nil || !strings.HasPrefix(r, "220") {
			return fmt.Errorf("after the refusal, a good header got %q, %v", r, err)
		}
		rc.cmd("QUIT", "221")
		return nil
	}
	refusal := func(src string, send []byte, closeWrite bool, errWant string) error {
		from := logSize(direct.LogPath)
		c, err := dialFrom(src, directAddr)
		if err != nil {
			return err
		}
		defer c.Close()
		me := c.LocalAddr().String()
		rc := newRaw(c)
		if _, err := c.Write(send); err != nil {
			return err
		}
		if closeWrite {
			c.CloseWrite()
		}
		var got []string
		for {
			r, err := rc.reply()
			got = append(got, r)
			if strings.HasPrefix(r, "421") {
				break
			}
			if err != nil {
				return fmt.Errorf("no 421: got %q, %v", got, err)
			}
		}
		if !strings.Contains(got[len(got)-1], "PROXY") {
			return fmt.Errorf("421 reply %q does not name the PROXY header", got[len(got)-1])
		}
		if _, err := waitLog(direct.LogPath, from, 5*time.Second, `"PROXY header refused" for `+me, func(l logLine) bool {
			return l.str("message") == "PROXY header refused" && l.str("client") == me && strings.Contains(l.str("error"), errWant)
		}); err != nil {
			return err
		}
		return stillServing()
	}
	tl.run("refuse/untrusted-peer-v1", func() error {
		return refusal(strangeIP, []byte(v1Header("192.0.2.9:4000", directAddr)), false, "untrusted")
	})
	tl.run("refuse/untrusted-peer-v2", func() error {
		return refusal(strangeIP, v2Header("192.0.2.9:4000", directAddr), false, "untrusted")
	})
	tl.run("refuse/trusted-missing-header", func() error {
		return refusal(lbIP, []byte("USER "+peers.User+"\r\n"), false, "missing")
	})
	tl.run("refuse/truncated-v1", func() error {
		return refusal(lbIP, []byte("PROXY TCP4 192.0.2.9 127.0.0.2 4000"), true, "cut short")
	})
	tl.run("refuse/truncated-v2", func() error {
		h := v2Header("192.0.2.9:4000", directAddr)
		return refusal(lbIP, h[:20], true, "cut short")
	})
	tl.run("refuse/oversized-v1", func() error {
		return refusal(lbIP, []byte("PROXY TCP4 "+strings.Repeat("1", 200)+"\r\n"), false, "longer than")
	})
	tl.run("refuse/oversized-v2", func() error {
		h := append([]byte{}, sigV2...)
		h = append(h, 0x21, 0x11, 0x13, 0x88) // 5000 bytes follow
		return refusal(lbIP, append(h, make([]byte, 64)...), false, "v2 header of")
	})
	tl.run("accept/v2-with-tlvs", func() error {
		from := logSize(direct.LogPath)
		c, err := dialFrom(lbIP, directAddr)
		if err != nil {
			return err
		}
		defer c.Close()
		rc := newRaw(c)
		h := v2Header("192.0.2.77:40077", "127.0.0.1:2139",
			[2]string{"\x01", "ftp"}, [2]string{"\x02", "ftp.example.net"}, [2]string{"\x05", "unique-0123456789"}, [2]string{"\x04", "\x00\x00\x00"})
		if _, err := c.Write(h); err != nil {
			return err
		}
		r, err := rc.reply()
		if err != nil || !strings.HasPrefix(r, "220") {
			return fmt.Errorf("greeting %q, %v", r, err)
		}
		if _, err := rc.cmd("USER "+peers.User, "331"); err != nil {
			return err
		}
		if _, err := rc.cmd("PASS "+peers.Password, "230"); err != nil {
			return err
		}
		rc.cmd("QUIT", "221")
		_, err = waitLog(direct.LogPath, from, 5*time.Second, "session opened with client 192.0.2.77:40077", func(l logLine) bool {
			return l.str("message") == "session opened" && l.str("client") == "192.0.2.77:40077" && strings.HasPrefix(l.str("via"), lbIP+":")
		})
		return err
	})
	tl.run("refuse/data-without-header", func() error {
		return dataHeaderCase(direct.LogPath, directAddr)
	})

	// --- 4. chaining: client -> A (sends v2) -> B (trusts A) -> vsftpd ---
	if chainOK {
		chainStart := logSize(chainB.LogPath)
		tl.run("chain/login-pwd", func() error {
			c, err := dialFrom(clientIP, net.JoinHostPort(chainAIP, strconv.Itoa(chainAPort)))
			if err != nil {
				return err
			}
			defer c.Close()
			rc := newRaw(c)
			if r, err := rc.reply(); err != nil || !strings.HasPrefix(r, "220") {
				return fmt.Errorf("greeting %q, %v", r, err)
			}
			for _, st := range [][2]string{{"USER " + peers.User, "331"}, {"PASS " + peers.Password, "230"}, {"PWD", "257"}} {
				if _, err := rc.cmd(st[0], st[1]); err != nil {
					return err
				}
			}
			rc.cmd("QUIT", "221")
			return nil
		})
		tl.run("chain/log-client-via", func() error {
			return checkClientVia(chainB.LogPath, chainStart, 1, chainAOut)
		})
		// One data mode: A opens every upstream data connection passively
		// (--upstream-data-mode passive), so the client's mode does not
		// change what B sees.
		tl.run("chain/curl-epsv", func() error {
			return roundTrip(ctx, srv, "curl", "epsv", chainAIP, chainAPort, f4M, "chain-epsv.bin", dl)
		})
	}

	// --- 3. scale-out over the two balanced instances ---
	logs := map[int]string{1: balanced[1].logPath, 2: balanced[2].logPath}
	off := map[int]int64{1: logSize(logs[1]), 2: logSize(logs[2])}
	n := *flagSessions
	tl.run(fmt.Sprintf("scale/%d-sessions-1MiB", n), func() error {
		dir := srv.Path("scale")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		os.Chown(dir, srv.UID, srv.GID)
		tg := peers.Target{Host: lbIP, Port: vipPort, Source: clientIP, Mode: "epsv"}
		out, err := (peers.Ftplib{Script: script}).Concurrent(ctx, tg, n, 1<<20, "scale")
		if err != nil {
			return err
		}
		return srv.CheckConcurrent(out, n, 1<<20)
	})
	tl.run("scale/both-instances-served", func() error {
		a, b := len(sessionsOpened(logs[1], off[1])), len(sessionsOpened(logs[2], off[2]))
		fmt.Printf("    sessions: ftpproxy1 %d, ftpproxy2 %d\n", a, b)
		if a == 0 || b == 0 || a+b < n {
			return fmt.Errorf("ftpproxy1 opened %d sessions, ftpproxy2 %d; want both > 0 and %d in all", a, b, n)
		}
		if err := checkClientVia(logs[1], off[1], 1, lbVethIP); err != nil {
			return err
		}
		return checkClientVia(logs[2], off[2], 1, lbVethIP)
	})
	drainCase(ctx, tl, srv, balanced, logs, hap, local, dl)
}

// dataHeaderCase opens a session as the balancer would (v1 header for a
// client at 127.0.0.9), asks for PASV, and opens the data connection from
// the balancer's address: without a header, with a header naming another
// client, then with the right one, which must carry the listing.
func dataHeaderCase(logPath, directAddr string) error {
	from := logSize(logPath)
	c, err := dialFrom(lbIP, directAddr)
	if err != nil {
		return err
	}
	defer c.Close()
	rc := newRaw(c)
	c.Write([]byte(v1Header("127.0.0.9:5999", "127.0.0.1:2138")))
	if r, err := rc.reply(); err != nil || !strings.HasPrefix(r, "220") {
		return fmt.Errorf("greeting %q, %v", r, err)
	}
	if _, err := rc.cmd("USER "+peers.User, "331"); err != nil {
		return err
	}
	if _, err := rc.cmd("PASS "+peers.Password, "230"); err != nil {
		return err
	}
	r, err := rc.cmd("PASV", "227")
	if err != nil {
		return err
	}
	host, port, err := pasvPort(r)
	if err != nil {
		return err
	}
	if host != directIP {
		return fmt.Errorf("227 names %s, want the advertised %s", host, directIP)
	}
	dataAddr := net.JoinHostPort(host, strconv.Itoa(port))
	refused := func(send []byte, what string) error {
		d, err := dialFrom(lbIP, dataAddr)
		if err != nil {
			return err
		}
		defer d.Close()
		d.Write(send)
		d.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := d.Read(make([]byte, 1)); err == nil || n > 0 {
			return fmt.Errorf("data connection %s was served", what)
		}
		return nil
	}
	if err := refused([]byte("no header here\r\n"), "without a header"); err != nil {
		return err
	}
	if _, err := waitLog(logPath, from, 5*time.Second, `"data connection with a bad PROXY header refused"`, func(l logLine) bool {
		return l.str("message") == "data connection with a bad PROXY header refused"
	}); err != nil {
		return err
	}
	if err := refused([]byte(v1Header("127.0.0.66:6000", dataAddr)), "with another client's header"); err != nil {
		return err
	}
	if _, err := waitLog(logPath, from, 5*time.Second, `"data connection from a foreign address refused" from 127.0.0.66`, func(l logLine) bool {
		return l.str("message") == "data connection from a foreign address refused" && strings.HasPrefix(l.str("from"), "127.0.0.66:")
	}); err != nil {
		return err
	}
	d, err := dialFrom(lbIP, dataAddr)
	if err != nil {
		return err
	}
	defer d.Close()
	d.Write([]byte(v1Header("127.0.0.9:6001", dataAddr)))
	if _, err := rc.cmd("NLST", "150"); err != nil {
		return err
	}
	d.SetReadDeadline(time.Now().Add(10 * time.Second))
	listing, err := io.ReadAll(d)
	if err != nil {
		return fmt.Errorf("listing: %v", err)
	}
	d.Close() // as clients do: the relay ends without waiting for its linger
	if r, err := rc.reply(); err != nil || !strings.HasPrefix(r, "226") {
		return fmt.Errorf("after NLST: %q, %v", r, err)
	}
	if !strings.Contains(string(listing), "scale") && !strings.Contains(string(listing), ".bin") {
		return fmt.Errorf("listing %q names none of the uploaded files", listing)
	}
	rc.cmd("QUIT", "221")
	return nil
}

// drainCase stops the instance that serves a long download with SIGTERM:
// the download must finish byte-exactly, the health check must turn 503,
// HAProxy must mark the instance down, and new sessions must all go to the
// other instance.
func drainCase(ctx context.Context, tl *tally, srv *peers.Server, balanced map[int]*proc, logs map[int]string, hap *proc, local, dl string) {
	bigSize := int64(*flagBigMiB) << 20
	var big peers.File
	if !tl.run(fmt.Sprintf("drain/prepare-%dMiB", *flagBigMiB), func() error {
		var err error
		big, err = peers.WriteRandom(filepath.Join(local, "big.bin"), bigSize, 7)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(big.Path)
		if err != nil {
			return err
		}
		if err := os.WriteFile(srv.Path("big.bin"), b, 0o644); err != nil {
			return err
		}
		return os.Chown(srv.Path("big.bin"), srv.UID, srv.GID)
	}) {
		return
	}
	off := map[int]int64{1: logSize(logs[1]), 2: logSize(logs[2])}
	hapOff := logSize(hap.logPath)
	dst := filepath.Join(dl, "big.bin")
	// About 8 s at 8 MiB/s for 64 MiB: long enough to drain around it.
	rate := fmt.Sprintf("%dM", max(1, *flagBigMiB/8))
	dlDone := make(chan error, 1)
	go func() {
		_, err := peers.RunTool(ctx, 150*time.Second, curlArgs("epsv", "--limit-rate", rate, "-o", dst, ftpURL(lbIP, vipPort, "big.bin"))...)
		dlDone <- err
	}()
	var victim, other int
	var termAt int64
	if !tl.run("drain/sigterm-during-download", func() error {
		deadline := time.Now().Add(10 * time.Second)
		for victim == 0 && time.Now().Before(deadline) {
			for _, n := range []int{1, 2} {
				lines, _ := readLog(logs[n], off[n])
				for _, l := range lines {
					if l.str("message") == "transfer" || (l.str("message") == "command" && strings.HasPrefix(l.str("cmd"), "RETR")) {
						victim = n
					}
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		if victim == 0 {
			return fmt.Errorf("no instance logged the RETR of big.bin")
		}
		other = 3 - victim
		termAt = logSize(logs[victim])
		balanced[victim].signal(syscall.SIGTERM)
		fmt.Printf("    download runs through ftpproxy%d; SIGTERM sent\n", victim)
		return nil
	}) {
		<-dlDone
		return
	}
	url := fmt.Sprintf("http://%s:%d/", map[int]string{1: px1IP, 2: px2IP}[victim], 8130+victim)
	tl.run("drain/health-503", func() error {
		deadline := time.Now().Add(5 * time.Second)
		for {
			code, body, err := health(url)
			if err == nil && code == 503 && strings.HasPrefix(body, "draining") {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("health %s: %d %q %v, want 503 draining", url, code, body, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	tl.run("drain/haproxy-marks-down", func() error {
		want := fmt.Sprintf("ftpproxy_control/ftpproxy%d is DOWN", victim)
		deadline := time.Now().Add(10 * time.Second)
		for {
			b, _ := os.ReadFile(hap.logPath)
			if int64(len(b)) > hapOff && strings.Contains(string(b[hapOff:]), want) {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("HAProxy did not log %q:\n%s", want, peers.Tail(string(b[min(int64(len(b)), hapOff):]), 1500))
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	otherOff := logSize(logs[other])
	const newSessions = 10
	tl.run(fmt.Sprintf("drain/%d-new-sessions-to-the-other", newSessions), func() error {
		f, err := peers.WriteRandom(filepath.Join(local, "after.bin"), 256<<10, 8)
		if err != nil {
			return err
		}
		for i := range newSessions {
			name := fmt.Sprintf("after-%d.bin", i)
			if _, err := peers.RunTool(ctx, 60*time.Second, curlArgs("epsv", "-T", f.Path, ftpURL(lbIP, vipPort, name))...); err != nil {
				return err
			}
			if err := peers.SameContent(srv.Path(name), f.Size, f.Sum); err != nil {
				return err
			}
		}
		select {
		case <-dlDone:
			return fmt.Errorf("the download had ended before the new sessions did: the drain was not overlapped (raise -big)")
		default:
		}
		if got := sessionsOpened(logs[victim], termAt); len(got) > 0 {
			return fmt.Errorf("the draining ftpproxy%d opened %d sessions after SIGTERM", victim, len(got))
		}
		if got := sessionsOpened(logs[other], otherOff); len(got) != newSessions {
			return fmt.Errorf("ftpproxy%d opened %d sessions, want %d", other, len(got), newSessions)
		}
		return nil
	})
	tl.run(fmt.Sprintf("drain/download-%dMiB-completes", *flagBigMiB), func() error {
		select {
		case err := <-dlDone:
			if err != nil {
				return err
			}
		case <-time.After(170 * time.Second):
			return fmt.Errorf("download still running")
		}
		return peers.SameContent(dst, big.Size, big.Sum)
	})
	tl.run("drain/instance-exits-cleanly", func() error {
		p := balanced[victim]
		if err := p.wait(15 * time.Second); err != nil {
			return fmt.Errorf("%v\n%s", err, p.tail())
		}
		b, _ := os.ReadFile(p.logPath)
		if strings.Contains(string(b), "drain cut short") || !strings.Contains(string(b), "ftpproxy stopped") {
			return fmt.Errorf("log:\n%s", p.tail())
		}
		downs, _, _ := peers.ReadTransfers(p.logPath)
		for _, d := range downs {
			if d == bigSize {
				return nil
			}
		}
		return fmt.Errorf("no transfer line with down=%d in %s", bigSize, p.logPath)
	})
}
