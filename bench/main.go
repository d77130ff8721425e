// Command ftpbench measures ftpproxy against a real vsftpd, in one run,
// alternating a direct connection (client -> vsftpd) with one through the
// proxy (client -> ftpproxy -> vsftpd):
//
//  1. bulk throughput: a RETR of a large file and a STOR, in MB/s (10^6
//     bytes/s) and machine CPU seconds per GiB (/proc/stat, all processes);
//  2. sessions per second for connect, login, PASV, RETR of a 4 KiB file,
//     QUIT, with 1 and with 32 concurrent clients, and session latency;
//  3. the NOOP round trip on a logged-in session;
//  4. the proxy's resident memory per idle logged-in session;
//  5. FTPS throughput, and 6. FTPS sessions per second, for a TLS client
//     direct to vsftpd over TLS, through a proxy that terminates TLS in
//     front of plain vsftpd (offload), and through a proxy that speaks TLS
//     to vsftpd as well (re-encryption), as ratios to direct FTPS.
//
// It starts vsftpd and the proxies itself, on loopback, serving files from
// a memory-backed directory, makes the certificates (a CA and one server
// certificate each for vsftpd and the proxy), and stops what it started
// (and only that) at the end. The figures are informational; the exit
// status is non-zero only when something failed to run or a transfer
// delivered the wrong bytes.
//
// Run it as root (vsftpd's anonymous chroot needs it):
//
//	go run ./bench [flags]
package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

type config struct {
	vsftpd, proxy         string
	vsftpdPort, proxyPort int
	rounds                int
	downMiB, upMiB        int64
	sessionTime           time.Duration
	concurrency           []int
	noops                 int
	idle                  int
	dir                   string
	timeout               time.Duration

	ftps                 bool
	tlsDownMiB, tlsUpMiB int64
	tlsSessionTime       time.Duration
}

// Targets the proxy is held to; the run reports PASS or MISS for each.
const (
	throughputGoal = 0.8      // of direct MB/s
	sessionGoal    = 0.8      // of direct sessions/s
	noopGoalRatio  = 1.5      // p50 proxy / direct
	idleGoalKiB    = 64.0     // RSS per idle session
	smallSize      = 4096     // the file of the session test
	verifyUpload   = 16 << 20 // upload checked byte for byte
	xferTimeout    = 120 * time.Second
	ctlTimeout     = 10 * time.Second
)

func main() {
	var cfg config
	var conc string
	flag.StringVar(&cfg.vsftpd, "vsftpd", "interop/.peers/vsftpd/usr/sbin/vsftpd", "vsftpd binary")
	flag.StringVar(&cfg.proxy, "proxy", "bin/ftpproxy", "ftpproxy binary")
	flag.IntVar(&cfg.vsftpdPort, "vsftpd-port", 2100, "vsftpd control port on 127.0.0.1 (a free port is used if it is taken)")
	flag.IntVar(&cfg.proxyPort, "proxy-port", 2121, "ftpproxy control port on 127.0.0.1 (a free port is used if it is taken)")
	flag.IntVar(&cfg.rounds, "rounds", 5, "rounds of direct/proxy alternation for throughput, sessions and NOOP")
	flag.Int64Var(&cfg.downMiB, "download-mib", 1024, "size of the downloaded file, MiB")
	flag.Int64Var(&cfg.upMiB, "upload-mib", 256, "size of the upload, MiB")
	flag.DurationVar(&cfg.sessionTime, "session-time", 10*time.Second, "session test time per mode and concurrency, split over the rounds")
	flag.StringVar(&conc, "concurrency", "1,32", "concurrent clients of the session test, comma-separated")
	flag.IntVar(&cfg.noops, "noops", 20000, "NOOPs per mode")
	flag.IntVar(&cfg.idle, "idle-sessions", 1000, "idle logged-in sessions for the memory figure")
	flag.StringVar(&cfg.dir, "dir", "", "directory for the served files (default /dev/shm if it has room, else the temp dir)")
	flag.DurationVar(&cfg.timeout, "timeout", 6*time.Minute, "abort the whole run after this long")
	flag.BoolVar(&cfg.ftps, "ftps", true, "also measure FTPS: direct to vsftpd over TLS against the proxy terminating TLS (offload) and the proxy re-encrypting to vsftpd")
	flag.Int64Var(&cfg.tlsDownMiB, "tls-download-mib", 256, "size of the FTPS download, MiB")
	flag.Int64Var(&cfg.tlsUpMiB, "tls-upload-mib", 128, "size of the FTPS upload, MiB")
	flag.DurationVar(&cfg.tlsSessionTime, "tls-session-time", 5*time.Second, "FTPS session test time per mode and concurrency, split over the rounds")
	flag.Parse()
	for _, s := range strings.Split(conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fatalf("bad -concurrency %q", conc)
		}
		cfg.concurrency = append(cfg.concurrency, n)
	}
	if cfg.rounds < 1 || cfg.downMiB < 1 || cfg.upMiB < 1 || cfg.noops < cfg.rounds || cfg.idle < 1 ||
		cfg.tlsDownMiB < 1 || cfg.tlsUpMiB < 1 || cfg.tlsSessionTime <= 0 {
		fatalf("bad flags")
	}
	if os.Geteuid() != 0 {
		fatalf("run as root: vsftpd needs it for its anonymous chroot")
	}

	b := &bench{cfg: cfg}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-stop
		fmt.Fprintf(os.Stderr, "ftpbench: %v, stopping\n", s)
		b.cleanup()
		os.Exit(1)
	}()
	watchdog := time.AfterFunc(cfg.timeout, func() {
		fmt.Fprintf(os.Stderr, "ftpbench: FAIL: the run took longer than %v\n", cfg.timeout)
		b.cleanup()
		os.Exit(1)
	})

	start := time.Now()
	err := b.run()
	watchdog.Stop()
	if err != nil {
		b.mu.Lock()
		for _, p := range []*proc{b.vs, b.px, b.pxOff, b.pxRe} {
			if p != nil {
				if t := p.tail(); t != "" {
					fmt.Fprintf(os.Stderr, "--- end of the %s log:\n%s\n", p.name, t)
				}
			}
		}
		b.mu.Unlock()
	}
	b.cleanup()
	if err != nil {
		fmt.Fprintf(os.Stderr, "ftpbench: FAIL: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("\nftpbench: done in %.0f s\n", time.Since(start).Seconds())
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ftpbench: "+format+"\n", args...)
	os.Exit(2)
}

// mode is one way to reach the server.
type mode struct {
	name string
	addr string
	// For FTPS: the client's TLS configuration (each session uses a clone
	// with a session cache of its own); nil for plain FTP.
	tls *tls.Config
	// The proxy process on the path, nil for a direct mode; a function
	// since the plain proxy is restarted for the memory figure.
	px func() *proc
}

// proxyPID returns the pid of the mode's proxy, 0 for a direct mode.
func (m mode) proxyPID() int {
	if m.px == nil {
		return 0
	}
	return m.px().pid()
}

// proxyTicks returns the CPU time of the mode's proxy process, 0 for a
// direct mode.
func (m mode) proxyTicks() (uint64, error) {
	if pid := m.proxyPID(); pid != 0 {
		return procCPUTicks(pid)
	}
	return 0, nil
}

// login opens a session and logs in; on an FTPS mode it is AUTH TLS, USER,
// PBSZ 0 and PROT P, so that the data connections are TLS as well.
func (m mode) login() (*ftpConn, error) {
	if m.tls == nil {
		return login(m.addr)
	}
	c, err := dialFTP(m.addr, ctlTimeout)
	if err != nil {
		return nil, err
	}
	cfg := m.tls.Clone()
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	if err := c.authTLS(cfg); err != nil {
		c.close()
		return nil, err
	}
	if err := c.login(); err != nil {
		c.close()
		return nil, err
	}
	if _, err := c.expect("PBSZ 0", 200); err != nil {
		c.close()
		return nil, err
	}
	if _, err := c.expect("PROT P", 200); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

type bench struct {
	cfg config

	mu       sync.Mutex // guards the fields cleanup reads
	work     string
	vs, px   *proc
	idleOpen []*ftpConn
	// The FTPS proxies: TLS to the client and plain FTP to vsftpd
	// (offload), TLS on both sides (re-encryption).
	pxOff, pxRe *proc

	root, bigPath  string
	bigSHA         [32]byte
	small          []byte
	direct, proxy  mode
	ftps           []mode // direct FTPS, offload, re-encryption
	tlsSHA         [32]byte
	devnull        *os.File
	sink           *userSink
	block          []byte // the upload generator's 1 MiB
	noFile         uint64
	proxyWarnLines int

	res results
}

type xfer struct {
	mbps, cpuPerGiB, proxyCPUPerGiB float64
}

type sessRes struct {
	rates      []float64 // per round
	proxyTicks uint64    // CPU time of the proxy process over all rounds
	lat        []time.Duration
	n, errs    int
	resumed    int // sessions whose TLS data connection resumed
	firstErr   error
}

type results struct {
	xfer                map[xferKind]map[string][]xfer
	sess                map[int]map[string]*sessRes
	noop                map[string][]time.Duration
	rssBefore, rssAfter int64
	rssClosed           int64
	idle                int

	tlsXfer                     map[xferKind]map[string][]xfer
	tlsSess                     map[int]map[string]*sessRes
	tlsXferData, tlsXferResumed map[string]int // TLS data connections of the timed transfers
}

func (b *bench) cleanup() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.idleOpen {
		c.close()
	}
	b.idleOpen = nil
	for _, p := range []*proc{b.px, b.pxOff, b.pxRe} {
		if p != nil {
			p.stop(3 * time.Second)
		}
	}
	if b.vs != nil {
		// Session processes left over (after a failure) are found while
		// the listener is still their parent.
		left := descendants(b.vs.pid(), "vsftpd")
		for end := time.Now().Add(2 * time.Second); len(left) > 0 && time.Now().Before(end); {
			time.Sleep(50 * time.Millisecond)
			left = descendants(b.vs.pid(), "vsftpd")
		}
		b.vs.stop(3 * time.Second)
		if len(left) > 0 {
			reapPIDs(left, 3*time.Second)
			fmt.Fprintf(os.Stderr, "ftpbench: stopped %d vsftpd session processes that outlived the run\n", len(left))
		}
		b.vs = nil
	}
	if b.work != "" {
		os.RemoveAll(b.work)
		b.work = ""
	}
}

func (b *bench) run() error {
	b.noFile = raiseNoFile()
	if err := b.setup(); err != nil {
		return err
	}
	b.printHeader()
	if err := b.verify(); err != nil {
		return fmt.Errorf("verification: %w", err)
	}
	if b.cfg.ftps {
		if err := b.verifyFTPS(); err != nil {
			return fmt.Errorf("FTPS verification: %w", err)
		}
	}
	if err := b.throughput(); err != nil {
		return fmt.Errorf("throughput: %w", err)
	}
	if err := b.sessionRate(); err != nil {
		return fmt.Errorf("sessions: %w", err)
	}
	if err := b.noopRTT(); err != nil {
		return fmt.Errorf("NOOP: %w", err)
	}
	if err := b.idleMemory(); err != nil {
		return fmt.Errorf("idle sessions: %w", err)
	}
	if b.cfg.ftps {
		if err := b.ftpsThroughput(); err != nil {
			return fmt.Errorf("FTPS throughput: %w", err)
		}
		if err := b.ftpsSessions(); err != nil {
			return fmt.Errorf("FTPS sessions: %w", err)
		}
	}
	b.report()
	for _, c := range b.cfg.concurrency {
		for _, m := range []mode{b.direct, b.proxy} {
			if r := b.res.sess[c][m.name]; r.errs > 0 {
				return fmt.Errorf("%d of %d sessions failed (%s, %d clients), first: %v", r.errs, r.n+r.errs, m.name, c, r.firstErr)
			}
		}
		for _, m := range b.ftps {
			if r := b.res.tlsSess[c][m.name]; r.errs > 0 {
				return fmt.Errorf("%d of %d FTPS sessions failed (%s, %d clients), first: %v", r.errs, r.n+r.errs, m.name, c, r.firstErr)
			}
		}
	}
	return nil
}

// setup writes the served files and the vsftpd configuration, and starts
// vsftpd and ftpproxy.
func (b *bench) setup() error {
	cfg := b.cfg
	for _, p := range []string{cfg.vsftpd, cfg.proxy} {
		if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("%s is not an executable (run 'make peers build')", p)
		}
	}
	parent := cfg.dir
	need := uint64(cfg.downMiB+2*cfg.upMiB+64) << 20
	if cfg.ftps {
		need += uint64(cfg.tlsDownMiB+2*cfg.tlsUpMiB) << 20
	}
	if parent == "" {
		parent = os.TempDir()
		var st syscall.Statfs_t
		if syscall.Statfs("/dev/shm", &st) == nil && st.Bavail*uint64(st.Bsize) > need+(1<<30) {
			parent = "/dev/shm"
		}
	}
	work, err := os.MkdirTemp(parent, "ftpbench-")
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.work = work
	b.mu.Unlock()
	b.root = filepath.Join(work, "root")
	pub := filepath.Join(b.root, "pub")
	empty := filepath.Join(work, "empty")
	for _, d := range []string{pub, empty} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(b.root, 0o555); err != nil {
		return err
	}
	uid, gid := 1, 1
	if u, err := user.Lookup("daemon"); err == nil {
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
	}
	if err := os.Chown(pub, uid, gid); err != nil {
		return err
	}

	// The large file: 1 MiB of random bytes, each copy stamped with its
	// index so that no two MiB are alike.
	b.bigPath = filepath.Join(pub, "big.bin")
	block := make([]byte, 1<<20)
	fillRandom(block)
	if b.bigSHA, err = writeStamped(b.bigPath, cfg.downMiB, block); err != nil {
		return err
	}
	b.small = make([]byte, smallSize)
	fillRandom(b.small)
	if err := os.WriteFile(filepath.Join(pub, "small.bin"), b.small, 0o644); err != nil {
		return err
	}
	var pki *pki
	tlsConf := ""
	if cfg.ftps {
		if b.tlsSHA, err = writeStamped(filepath.Join(pub, "tls.bin"), cfg.tlsDownMiB, block); err != nil {
			return err
		}
		if pki, err = makePKI(work); err != nil {
			return fmt.Errorf("certificates: %w", err)
		}
		tlsConf = vsftpdTLSConf(pki)
	}
	if b.devnull, err = os.OpenFile(os.DevNull, os.O_WRONLY, 0); err != nil {
		return err
	}
	b.sink = newUserSink()
	b.block = block

	vport, err := pickPort(cfg.vsftpdPort)
	if err != nil {
		return err
	}
	pport, err := pickPort(cfg.proxyPort)
	if err != nil {
		return err
	}
	if pport == vport {
		if pport, err = pickPort(0); err != nil {
			return err
		}
	}
	b.direct = mode{name: "direct", addr: fmt.Sprintf("127.0.0.1:%d", vport)}
	b.proxy = mode{name: "proxy", addr: fmt.Sprintf("127.0.0.1:%d", pport), px: func() *proc {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.px
	}}

	conf := filepath.Join(work, "vsftpd.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`listen=YES
listen_address=127.0.0.1
listen_port=%d
background=NO
anonymous_enable=YES
anon_root=%s
no_anon_password=YES
anon_upload_enable=YES
anon_mkdir_write_enable=YES
anon_other_write_enable=YES
write_enable=YES
local_enable=NO
ftp_username=daemon
seccomp_sandbox=NO
secure_chroot_dir=%s
pasv_min_port=22000
pasv_max_port=22999
max_clients=0
max_per_ip=0
%s`, vport, b.root, empty, tlsConf)), 0o644); err != nil {
		return err
	}
	vs, err := startProc("vsftpd", filepath.Join(work, "vsftpd.log"), cfg.vsftpd, conf)
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.vs = vs
	b.mu.Unlock()
	if err := waitReady(vs, b.direct.addr, 10*time.Second); err != nil {
		return err
	}
	if err := b.startProxy(); err != nil {
		return err
	}
	if cfg.ftps {
		return b.startFTPSProxies(pki, vport, pport)
	}
	return nil
}

// startProxy starts (or restarts) ftpproxy in front of vsftpd.
func (b *bench) startProxy() error {
	b.mu.Lock()
	old := b.px
	b.mu.Unlock()
	if old != nil {
		old.stop(5 * time.Second)
		b.proxyWarnLines += countLines(old.log)
	}
	log := filepath.Join(b.work, fmt.Sprintf("ftpproxy-%d.log", time.Now().UnixNano()))
	px, err := startProc("ftpproxy", log, b.cfg.proxy,
		"--listen", b.proxy.addr, "--upstream", b.direct.addr,
		"--passive-ports", "21000-21999", "--log-level", "warn", "--drain-timeout", "1s")
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.px = px
	b.mu.Unlock()
	return waitReady(px, b.proxy.addr, 10*time.Second)
}

func countLines(path string) int {
	data, _ := os.ReadFile(path)
	return bytes.Count(data, []byte("\n"))
}

func fillRandom(p []byte) {
	r := rand.NewChaCha8([32]byte{'f', 't', 'p', 'b', 'e', 'n', 'c', 'h'})
	r.Read(p)
}

func (b *bench) printHeader() {
	cpu := "unknown"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Printf("ftpbench: %d CPUs (%s), kernel %s, %s\n", runtime.NumCPU(), cpu, strings.TrimSpace(string(kernel)), runtime.Version())
	fmt.Printf("direct: client -> vsftpd %s; proxy: client -> ftpproxy %s -> vsftpd\n", b.direct.addr, b.proxy.addr)
	if len(b.ftps) == 3 {
		fmt.Printf("FTPS: direct: client -> vsftpd %s over TLS; offload: client -> ftpproxy %s over TLS -> vsftpd;\n", b.direct.addr, b.ftps[1].addr)
		fmt.Printf("      re-encrypt: client -> ftpproxy %s over TLS -> vsftpd over TLS; certificates ECDSA P-256 from a CA made for the run\n", b.ftps[2].addr)
	}
	fmt.Printf("files in %s; RLIMIT_NOFILE %d; %d rounds, direct and proxy alternating\n\n", b.root, b.noFile, b.cfg.rounds)
}

// order returns the two modes, direct first in even rounds and the proxy
// first in odd ones, so that drift in the machine's load cancels out.
func (b *bench) order(round int) []mode {
	return rotate([]mode{b.direct, b.proxy}, round)
}

// rotate returns modes rotated left by round, so that each mode goes first
// in turn.
func rotate(modes []mode, round int) []mode {
	k := round % len(modes)
	return append(slices.Clone(modes[k:]), modes[:k]...)
}

func login(addr string) (*ftpConn, error) {
	c, err := dialFTP(addr, ctlTimeout)
	if err != nil {
		return nil, err
	}
	if err := c.login(); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// verify checks, before anything is timed, that the bytes are right
// through the proxy: the whole large file by SHA-256, an upload read back
// directly, and the small file both ways.
func (b *bench) verify() error {
	fmt.Println("verify: SHA-256 of the large download through the proxy, an upload read back, the 4 KiB file")
	c, err := login(b.proxy.addr)
	if err != nil {
		return err
	}
	defer c.close()
	c.setDeadline(xferTimeout)
	if _, err := c.expect("TYPE I", 200); err != nil {
		return err
	}
	h := sha256.New()
	n, err := c.retr("pub/big.bin", true, h, xferTimeout)
	if err != nil {
		return err
	}
	if want := b.cfg.downMiB << 20; n != want {
		return fmt.Errorf("downloaded %d bytes through the proxy, want %d", n, want)
	}
	if !bytes.Equal(h.Sum(nil), b.bigSHA[:]) {
		return errors.New("the large file arrived through the proxy with a different SHA-256")
	}
	up := make([]byte, verifyUpload)
	rand.NewChaCha8([32]byte{'u', 'p'}).Read(up)
	if _, err = c.stor("pub/verify.bin", false, bytes.NewReader(up), xferTimeout); err != nil {
		return err
	}
	data, err := os.ReadFile(filepath.Join(b.root, "pub", "verify.bin"))
	if err != nil {
		return err
	}
	if !bytes.Equal(data, up) {
		return fmt.Errorf("upload through the proxy stored %d bytes that differ from the %d sent", len(data), len(up))
	}
	if _, err := c.expect("DELE pub/verify.bin", 250); err != nil {
		return err
	}
	c.quit()
	for _, m := range []mode{b.direct, b.proxy} {
		if _, err := smallSession(m, newSmallBuf(), sha256.Sum256(b.small)); err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
	}
	return nil
}

// xferKind is one of the timed bulk transfers.
type xferKind int

const (
	downUser xferKind = iota // RETR, the client read(2)s into user memory
	downZero                 // RETR, the client splices into /dev/null
	upUser                   // STOR, the client write(2)s from user memory
)

func (k xferKind) String() string {
	return [...]string{"download", "download, zero-copy", "upload"}[k]
}

// throughput times the large download and the upload, alternating modes.
func (b *bench) throughput() error {
	b.res.xfer = map[xferKind]map[string][]xfer{}
	fmt.Printf("\n1. throughput: RETR %d MiB and STOR %d MiB, EPSV, binary\n", b.cfg.downMiB, b.cfg.upMiB)
	// Kind by kind, each after one untimed transfer of the same kind: the
	// first upload after a large download runs at half speed or less
	// (memory for the new tmpfs pages), whichever path it takes.
	for _, k := range []xferKind{downUser, downZero, upUser} {
		b.res.xfer[k] = map[string][]xfer{}
		if _, err := b.transfer(b.direct, k); err != nil {
			return fmt.Errorf("warm-up %s: %w", k, err)
		}
		for r := range b.cfg.rounds {
			for _, m := range b.order(r) {
				x, err := b.transfer(m, k)
				if err != nil {
					return fmt.Errorf("%s %s: %w", m.name, k, err)
				}
				b.res.xfer[k][m.name] = append(b.res.xfer[k][m.name], x)
				fmt.Printf("   round %d  %-19s %-6s %6.0f MB/s  %5.2f CPU s/GiB  (proxy process %.2f)\n", r+1, k, m.name, x.mbps, x.cpuPerGiB, x.proxyCPUPerGiB)
			}
		}
	}
	return nil
}

// transfer runs one timed RETR or STOR. The client is cheap on purpose:
// one 1 MiB buffer for read(2) or write(2), or, for the zero-copy download,
// splice(2) from the socket into /dev/null, which touches no data at all.
//
// On an FTPS mode the files are the FTPS ones (-tls-download-mib and
// -tls-upload-mib) and the client decrypts into, or encrypts from, the same
// buffers; there is no zero-copy download.
func (b *bench) transfer(m mode, kind xferKind) (xfer, error) {
	c, err := m.login()
	if err != nil {
		return xfer{}, err
	}
	defer c.close()
	c.setDeadline(xferTimeout)
	if _, err := c.expect("TYPE I", 200); err != nil {
		return xfer{}, err
	}
	size, down, up := b.cfg.downMiB<<20, "pub/big.bin", "pub/up.bin"
	if kind == upUser {
		size = b.cfg.upMiB << 20
	}
	if m.tls != nil {
		size, down, up = b.cfg.tlsDownMiB<<20, "pub/tls.bin", "pub/tlsup.bin"
		if kind == upUser {
			size = b.cfg.tlsUpMiB << 20
		}
		if kind == downZero {
			return xfer{}, errors.New("no zero-copy download over TLS")
		}
	}
	gen := &pattern{block: b.block, n: size}
	cpu0, err := cpuBusyTicks()
	if err != nil {
		return xfer{}, err
	}
	px0, err := m.proxyTicks()
	if err != nil {
		return xfer{}, err
	}
	t0 := time.Now()
	var n int64
	switch kind {
	case downUser:
		n, err = c.retr(down, true, b.sink, xferTimeout)
	case downZero:
		n, err = c.retr(down, true, b.devnull, xferTimeout)
	case upUser:
		n, err = c.stor(up, true, gen, xferTimeout)
	}
	el := time.Since(t0)
	cpu1, err1 := cpuBusyTicks()
	px1, err2 := m.proxyTicks()
	if err != nil {
		return xfer{}, err
	}
	if err := errors.Join(err1, err2); err != nil {
		return xfer{}, err
	}
	if n != size {
		return xfer{}, fmt.Errorf("moved %d bytes, want %d", n, size)
	}
	if m.tls != nil {
		b.res.tlsXferData[m.name] += c.dataTLS
		b.res.tlsXferResumed[m.name] += c.dataResumed
	}
	if kind == upUser {
		got, err := c.size(up)
		if err != nil {
			return xfer{}, err
		}
		if got != size {
			return xfer{}, fmt.Errorf("the server stored %d bytes, want %d", got, size)
		}
		// No DELE: the next STOR truncates the file and reuses the memory
		// at once. On a virtual machine that hands freed memory back to
		// its host, memory freed and allocated again seconds later is
		// slow to write to, which made uploads after a DELE vary 3x.
	}
	c.quit()
	gib := float64(size) / (1 << 30)
	return xfer{
		mbps:           float64(size) / el.Seconds() / 1e6,
		cpuPerGiB:      float64(cpu1-cpu0) / 100 / gib,
		proxyCPUPerGiB: float64(px1-px0) / 100 / gib,
	}, nil
}

// smallBuf receives the 4 KiB file into a fixed buffer.
type smallBuf struct {
	p []byte
	n int
}

func newSmallBuf() *smallBuf { return &smallBuf{p: make([]byte, 2*smallSize)} }

func (s *smallBuf) Write(p []byte) (int, error) {
	if s.n+len(p) > len(s.p) {
		return 0, errors.New("more data than the file holds")
	}
	s.n += copy(s.p[s.n:], p)
	return len(p), nil
}

// ReadFrom reads straight into the buffer, so io.Copy allocates nothing.
func (s *smallBuf) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		if s.n == len(s.p) {
			return total, errors.New("more data than the file holds")
		}
		k, err := r.Read(s.p[s.n:])
		s.n += k
		total += int64(k)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// smallSession is one whole session of the session test: connect, log in,
// PASV, RETR the 4 KiB file (checked by SHA-256), QUIT. On an FTPS mode
// that is connect, AUTH TLS, USER, PBSZ 0, PROT P, PASV, RETR over a TLS
// data connection that resumes the control connection's session, QUIT;
// it reports whether the data connection resumed.
func smallSession(m mode, buf *smallBuf, want [32]byte) (resumed bool, err error) {
	c, err := m.login()
	if err != nil {
		return false, err
	}
	defer c.close()
	buf.n = 0
	n, err := c.retr("pub/small.bin", false, buf, ctlTimeout)
	if err != nil {
		return false, err
	}
	if n != smallSize || sha256.Sum256(buf.p[:buf.n]) != want {
		return false, fmt.Errorf("the 4 KiB file arrived as %d bytes with a different SHA-256", n)
	}
	return c.dataResumed > 0, c.quit()
}

// sessionRate runs the session test for each concurrency.
func (b *bench) sessionRate() error {
	b.res.sess = map[int]map[string]*sessRes{}
	fmt.Printf("\n2. sessions: connect, login, PASV, RETR 4 KiB, QUIT; %v per mode and concurrency in %d slots\n", b.cfg.sessionTime, b.cfg.rounds)
	return b.sessions([]mode{b.direct, b.proxy}, b.cfg.sessionTime, b.res.sess)
}

// sessions runs the session test of the modes for each concurrency, for
// total per mode and concurrency, split over the rounds, and fills res.
func (b *bench) sessions(modes []mode, total time.Duration, res map[int]map[string]*sessRes) error {
	slot := total / time.Duration(b.cfg.rounds)
	want := sha256.Sum256(b.small)
	width := 0
	for _, m := range modes {
		width = max(width, len(m.name))
	}
	for _, conc := range b.cfg.concurrency {
		res[conc] = map[string]*sessRes{}
		for _, m := range modes {
			res[conc][m.name] = &sessRes{}
		}
		for r := range b.cfg.rounds {
			for _, m := range rotate(modes, r) {
				res := res[conc][m.name]
				px0, err := m.proxyTicks()
				if err != nil {
					return err
				}
				n, errs, resumed, lat, firstErr, el := runSessions(m, conc, slot, want)
				px1, err := m.proxyTicks()
				if err != nil {
					return err
				}
				res.proxyTicks += px1 - px0
				res.n += n
				res.resumed += resumed
				res.errs += errs
				res.lat = append(res.lat, lat...)
				if res.firstErr == nil {
					res.firstErr = firstErr
				}
				rate := float64(n) / el.Seconds()
				res.rates = append(res.rates, rate)
				fmt.Printf("   round %d  %2d clients  %-*s %7.0f sessions/s  p50 %6.2f ms  p99 %6.2f ms  errors %d\n",
					r+1, conc, width, m.name, rate, ms(percentile(lat, 0.5)), ms(percentile(lat, 0.99)), errs)
				if n == 0 {
					return fmt.Errorf("no session completed (%s, %d clients): %v", m.name, conc, firstErr)
				}
			}
		}
	}
	return nil
}

// runSessions runs conc clients doing back-to-back sessions of mode m for
// d; resumed counts the sessions whose TLS data connection resumed.
func runSessions(m mode, conc int, d time.Duration, want [32]byte) (n, errs, resumed int, lat []time.Duration, firstErr error, elapsed time.Duration) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := newSmallBuf()
			var my []time.Duration
			var myErrs, myResumed, inRow int
			var myErr error
			for time.Now().Before(end) {
				t0 := time.Now()
				r, err := smallSession(m, buf, want)
				if r {
					myResumed++
				}
				if err != nil {
					myErrs++
					inRow++
					if myErr == nil {
						myErr = err
					}
					if inRow == 10 {
						break
					}
					continue
				}
				inRow = 0
				my = append(my, time.Since(t0))
			}
			mu.Lock()
			n += len(my)
			errs += myErrs
			resumed += myResumed
			lat = append(lat, my...)
			if firstErr == nil {
				firstErr = myErr
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return n, errs, resumed, lat, firstErr, time.Since(start)
}

// noopRTT times NOOPs on one logged-in session per mode.
func (b *bench) noopRTT() error {
	b.res.noop = map[string][]time.Duration{}
	per := b.cfg.noops / b.cfg.rounds
	fmt.Printf("\n3. NOOP round trip: %d per mode on one logged-in session, in %d chunks\n", per*b.cfg.rounds, b.cfg.rounds)
	conns := map[string]*ftpConn{}
	for _, m := range []mode{b.direct, b.proxy} {
		c, err := login(m.addr)
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		defer c.close()
		conns[m.name] = c
		c.setDeadline(ctlTimeout)
		for range 100 { // warm up
			if err := c.noop(); err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
		}
	}
	for r := range b.cfg.rounds {
		for _, m := range b.order(r) {
			c := conns[m.name]
			c.setDeadline(time.Minute)
			lat := make([]time.Duration, 0, per)
			for range per {
				t0 := time.Now()
				if err := c.noop(); err != nil {
					return fmt.Errorf("%s: %w", m.name, err)
				}
				lat = append(lat, time.Since(t0))
			}
			b.res.noop[m.name] = append(b.res.noop[m.name], lat...)
			fmt.Printf("   round %d  %-6s p50 %6.1f us  p99 %6.1f us\n", r+1, m.name, us(percentile(lat, 0.5)), us(percentile(lat, 0.99)))
		}
	}
	for _, c := range conns {
		c.setDeadline(ctlTimeout)
		c.quit()
	}
	return nil
}

// idleMemory restarts the proxy, then measures its VmRSS before and after
// opening the idle logged-in sessions through it.
func (b *bench) idleMemory() error {
	n := b.cfg.idle
	fmt.Printf("\n4. memory: VmRSS of a freshly started ftpproxy before and after %d idle logged-in sessions\n", n)
	if err := b.startProxy(); err != nil {
		return err
	}
	want := sha256.Sum256(b.small)
	buf := newSmallBuf()
	for range 32 { // warm up: the first sessions set up what all share
		if _, err := smallSession(b.proxy, buf, want); err != nil {
			return err
		}
	}
	time.Sleep(time.Second)
	pid := b.px.pid()
	before, err := vmRSSKiB(pid)
	if err != nil {
		return err
	}
	conns := make([]*ftpConn, n)
	errs := parallel(n, 32, func(i int) error {
		c, err := login(b.proxy.addr)
		if err != nil {
			return err
		}
		c.setDeadline(time.Minute)
		conns[i] = c
		return nil
	})
	b.mu.Lock()
	for _, c := range conns {
		if c != nil {
			b.idleOpen = append(b.idleOpen, c)
		}
	}
	b.mu.Unlock()
	if errs != nil {
		return errs
	}
	time.Sleep(2 * time.Second)
	after, err := vmRSSKiB(pid)
	if err != nil {
		return err
	}
	// Every session must still be alive and answer.
	if err := parallel(n, 32, func(i int) error { return conns[i].noop() }); err != nil {
		return fmt.Errorf("an idle session did not answer NOOP: %w", err)
	}
	if err := parallel(n, 32, func(i int) error { return conns[i].quit() }); err != nil {
		return fmt.Errorf("QUIT of an idle session: %w", err)
	}
	b.mu.Lock()
	b.idleOpen = nil
	b.mu.Unlock()
	time.Sleep(time.Second)
	closed, _ := vmRSSKiB(pid)
	b.res.rssBefore, b.res.rssAfter, b.res.rssClosed, b.res.idle = before, after, closed, n
	fmt.Printf("   VmRSS %d KiB before, %d KiB with %d sessions, %d KiB 1 s after they ended\n", before, after, n, closed)
	return nil
}

// parallel runs f(0..n-1) on w workers and returns the first error.
func parallel(n, w int, f func(i int) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	next := make(chan int)
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("#%d: %w", i, err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

func passMiss(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// report prints the summary table and the goal lines.
func (b *bench) report() {
	r := b.res
	d, p := b.direct.name, b.proxy.name
	med := func(xs []xfer, f func(xfer) float64) float64 {
		v := make([]float64, len(xs))
		for i, x := range xs {
			v[i] = f(x)
		}
		return median(v)
	}
	mbps := func(x xfer) float64 { return x.mbps }
	cpu := func(x xfer) float64 { return x.cpuPerGiB }
	pcpu := func(x xfer) float64 { return x.proxyCPUPerGiB }

	fmt.Printf("\nSummary (medians over %d rounds; MB = 10^6 bytes; CPU = all processes, from /proc/stat)\n\n", b.cfg.rounds)
	fmt.Printf("%-40s %12s %12s %14s\n", "metric", "direct", "proxy", "proxy/direct")
	fmt.Printf("%s\n", strings.Repeat("-", 81))
	row := func(name string, dv, pv float64, prec int) {
		ratio := "-"
		if dv != 0 && !math.IsNaN(dv) {
			ratio = fmt.Sprintf("%.2f", pv/dv)
		}
		fmt.Printf("%-40s %12.*f %12.*f %14s\n", name, prec, dv, prec, pv, ratio)
	}
	for _, k := range []xferKind{downUser, downZero, upUser} {
		size := b.cfg.downMiB
		if k == upUser {
			size = b.cfg.upMiB
		}
		name := fmt.Sprintf("%s %d MiB", k, size)
		xd, xp := r.xfer[k][d], r.xfer[k][p]
		row(name+", MB/s", med(xd, mbps), med(xp, mbps), 0)
		row("  CPU s/GiB, machine", med(xd, cpu), med(xp, cpu), 2)
		fmt.Printf("%-40s %12s %12.2f\n", "  CPU s/GiB, the proxy process", "", med(xp, pcpu))
	}
	for _, c := range b.cfg.concurrency {
		sd, sp := r.sess[c][d], r.sess[c][p]
		row(fmt.Sprintf("sessions/s, %d client(s)", c), median(sd.rates), median(sp.rates), 0)
		row(fmt.Sprintf("  session latency p50, ms"), ms(percentile(sd.lat, 0.5)), ms(percentile(sp.lat, 0.5)), 2)
		row(fmt.Sprintf("  session latency p99, ms"), ms(percentile(sd.lat, 0.99)), ms(percentile(sp.lat, 0.99)), 2)
		if sp.n > 0 {
			fmt.Printf("%-40s %12s %12.3f\n", "  CPU ms per session, the proxy process", "", float64(sp.proxyTicks)*10/float64(sp.n))
		}
	}
	nd, np := r.noop[d], r.noop[p]
	n50d, n50p := us(percentile(nd, 0.5)), us(percentile(np, 0.5))
	n99d, n99p := us(percentile(nd, 0.99)), us(percentile(np, 0.99))
	row("NOOP round trip p50, us", n50d, n50p, 1)
	row("NOOP round trip p99, us", n99d, n99p, 1)
	fmt.Printf("%-40s %12s %12.1f\n", "  proxy - direct, p50 / p99, us", "", n50p-n50d)
	fmt.Printf("%-40s %12s %12.1f\n", "", "", n99p-n99d)
	perIdle := float64(r.rssAfter-r.rssBefore) / float64(r.idle)
	fmt.Printf("%-40s %12s %12.1f\n", fmt.Sprintf("proxy RSS per idle session (%d), KiB", r.idle), "", perIdle)
	fmt.Printf("%-40s %12s %12d\n", "  proxy VmRSS before / with them, KiB", "", r.rssBefore)
	fmt.Printf("%-40s %12s %12d\n", "", "", r.rssAfter)
	if b.cfg.ftps {
		b.reportFTPS()
	}

	fmt.Printf("\nGoals\n")
	goal := func(text string, ok bool) { fmt.Printf("  %-4s  %s\n", passMiss(ok), text) }
	ratio := func(k xferKind) float64 { return med(r.xfer[k][p], mbps) / med(r.xfer[k][d], mbps) }
	dr, ur := ratio(downUser), ratio(upUser)
	goal(fmt.Sprintf("download throughput >= %.1f of direct: %.3f", throughputGoal, dr), dr >= throughputGoal)
	goal(fmt.Sprintf("upload throughput >= %.1f of direct: %.3f", throughputGoal, ur), ur >= throughputGoal)
	for _, c := range b.cfg.concurrency {
		sr := median(r.sess[c][p].rates) / median(r.sess[c][d].rates)
		goal(fmt.Sprintf("sessions/s with %d client(s) >= %.1f of direct: %.3f", c, sessionGoal, sr), sr >= sessionGoal)
	}
	goal(fmt.Sprintf("NOOP p50 <= %.1f x direct: %.2f", noopGoalRatio, n50p/n50d), n50p <= noopGoalRatio*n50d)
	goal(fmt.Sprintf("RSS per idle session < %.0f KiB: %.1f KiB", idleGoalKiB, perIdle), perIdle < idleGoalKiB)
	if b.cfg.ftps {
		b.ftpsGoals(goal)
	}
	for _, px := range []*proc{b.px, b.pxOff, b.pxRe} {
		if px != nil {
			b.proxyWarnLines += countLines(px.log)
		}
	}
	if b.proxyWarnLines > 0 {
		fmt.Printf("\nnote: the proxy logged %d lines at warn level or above\n", b.proxyWarnLines)
	}
}
