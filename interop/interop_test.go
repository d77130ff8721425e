//go:build interop

package interop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	flagDirect    = flag.Bool("direct", false, "point the clients straight at the servers, without the proxy")
	flagIsolated  = flag.Bool("isolated", false, "the suite runs in run.sh's network namespace: check that its firewall rules hold")
	flagProxyBin  = flag.String("ftpproxy", "../bin/ftpproxy", "the ftpproxy binary")
	flagPeers     = flag.String("peers", ".peers", "directory the servers were unpacked into by install-peers.sh")
	flagScript    = flag.String("ftplib", "clients/ftplib_client.py", "the ftplib client script")
	flagServers   = flag.String("servers", "vsftpd,pure-ftpd,proftpd", "servers to test, comma separated")
	flagClients   = flag.String("clients", "curl,lftp,ftplib", "clients to test, comma separated")
	flagBigMiB    = flag.Int("big", 64, "size of the large test file in MiB")
	flagParallel  = flag.Int("combos", 3, "client/mode combinations run at once against a server")
	flagWork      = flag.String("work", "", "work directory (default: a new directory under $TMPDIR)")
	flagKeep      = flag.Bool("keep", false, "keep the work directory even when every case passed")
	flagProxyAddr = flag.String("proxy", "127.0.0.2:2121", "address the proxy listens on")
	flagServer    = flag.String("server", "127.0.0.3:2100", "address the servers listen on")
	flagClientIP  = flag.String("client-ip", "127.0.0.4", "source address of the clients")
	flagPorts     = flag.String("passive-ports", "21000-21099", "the proxy's passive port range")
	flagMirrorN   = flag.Int("mirror-files", 200, "files in each lftp mirror case")
	flagConcN     = flag.Int("sessions", 50, "sessions in each concurrency case")
)

// tally counts cases and prints one line per case.
type tally struct {
	mu             sync.Mutex
	passed, failed int
	failures       []string
}

func (tl *tally) record(lines *[]string, label, cse string, d time.Duration, err error) bool {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if err == nil {
		tl.passed++
		*lines = append(*lines, fmt.Sprintf("PASS %s %s %.2fs", label, cse, d.Seconds()))
		return true
	}
	tl.failed++
	msg := strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "\n    ")
	*lines = append(*lines, fmt.Sprintf("FAIL %s %s %.2fs\n    %s", label, cse, d.Seconds(), msg))
	tl.failures = append(tl.failures, label+" "+cse)
	return false
}

// group collects the lines of one block of cases and prints them together,
// so that blocks run in parallel do not interleave.
type group struct {
	tl    *tally
	label string
	lines []string
}

func (g *group) run(cse string, fn func() error) bool {
	start := time.Now()
	err := fn()
	return g.tl.record(&g.lines, g.label, cse, time.Since(start), err)
}

func (g *group) flush() {
	g.tl.mu.Lock()
	defer g.tl.mu.Unlock()
	for _, l := range g.lines {
		fmt.Println(l)
	}
	g.lines = nil
}

// testFile is a local file with known content.
type testFile struct {
	label string // case name suffix, e.g. 64MiB
	name  string // file name, locally and on the server
	path  string
	size  int64
	sum   string
}

func writeRandom(path string, size int64, seed uint64) (testFile, error) {
	f, err := os.Create(path)
	if err != nil {
		return testFile{}, err
	}
	defer f.Close()
	h := sha256.New()
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 'i', 'n', 't', 'e', 'r', 'o', 'p'}))
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(left, int64(len(buf)))
		for i := 0; i < int(n); i += 8 {
			v := r.Uint64()
			for j := 0; j < 8 && i+j < int(n); j++ {
				buf[i+j] = byte(v >> (8 * j))
			}
		}
		if _, err := f.Write(buf[:n]); err != nil {
			return testFile{}, err
		}
		h.Write(buf[:n])
		left -= n
	}
	return testFile{name: filepath.Base(path), path: path, size: size, sum: hex.EncodeToString(h.Sum(nil))}, f.Close()
}

func fileSum(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// sameContent checks a file against the expected size and sha256.
func sameContent(path string, size int64, sum string) error {
	got, n, err := fileSum(path)
	if err != nil {
		return err
	}
	if n != size || got != sum {
		return fmt.Errorf("%s: %d bytes sha256 %s, want %d bytes sha256 %s", path, n, got[:16], size, sum[:16])
	}
	return nil
}

func sumBytes(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// proxy is a running ftpproxy.
type proxy struct {
	cmd     *exec.Cmd
	logPath string
	waitErr chan error
}

func startProxy(ctx context.Context, bin, listen, upstream, ports, logPath string) (*proxy, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--listen", listen, "--upstream", upstream, "--passive-ports", ports,
		"--log-format", "json", "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &proxy{cmd: cmd, logPath: logPath, waitErr: make(chan error, 1)}
	go func() { p.waitErr <- cmd.Wait(); logf.Close() }()
	if err := waitGreeting(ctx, listen, 10*time.Second, p.waitErr); err != nil {
		p.stop()
		out, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("ftpproxy did not come up on %s: %v\n%s", listen, err, tail(string(out), 2000))
	}
	return p, nil
}

// stop sends SIGTERM and waits up to 40 s (the proxy drains sessions for
// up to 30 s by default), then kills it.
func (p *proxy) stop() error {
	if p.cmd == nil {
		return nil
	}
	pid := p.cmd.Process.Pid
	p.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-p.waitErr:
	case <-time.After(40 * time.Second):
		syscall.Kill(pid, syscall.SIGKILL)
		<-p.waitErr
		err = fmt.Errorf("ftpproxy did not exit within 40 s of SIGTERM")
	}
	p.cmd = nil
	return err
}

// proxyTransfers reads the proxy's JSON log and returns the "down" and "up"
// byte counts of its "transfer" lines.
func proxyTransfers(logPath string) (downs, ups []int64, err error) {
	f, err := os.Open(logPath)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev struct {
			Message string `json:"message"`
			Down    *int64 `json:"down"`
			Up      *int64 `json:"up"`
		}
		if json.Unmarshal(sc.Bytes(), &ev) != nil || ev.Message != "transfer" {
			continue
		}
		if ev.Down != nil {
			downs = append(downs, *ev.Down)
		}
		if ev.Up != nil {
			ups = append(ups, *ev.Up)
		}
	}
	return downs, ups, sc.Err()
}

func count(v []int64, want int64) int {
	n := 0
	for _, x := range v {
		if x == want {
			n++
		}
	}
	return n
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func absPath(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

// TestInterop runs every client in every mode against every server, through
// the proxy (or, with -direct, without it), and prints one line per case and
// the totals.
func TestInterop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 24*time.Minute)
	defer cancel()

	peers := absPath(*flagPeers)
	script := absPath(*flagScript)
	proxyBin := absPath(*flagProxyBin)
	for _, p := range []string{peers, script} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%v (run interop/install-peers.sh first)", err)
		}
	}
	if !*flagDirect {
		if _, err := os.Stat(proxyBin); err != nil {
			t.Fatalf("%v (build it: go build -o bin/ftpproxy ./cmd/ftpproxy)", err)
		}
	}
	serverHost, serverPortS, err := net.SplitHostPort(*flagServer)
	if err != nil {
		t.Fatal(err)
	}
	serverPort, _ := strconv.Atoi(serverPortS)

	work := *flagWork
	if work == "" {
		work, err = os.MkdirTemp("", "ftpproxy-interop-")
		if err != nil {
			t.Fatal(err)
		}
	} else if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(work, 0o755)
	tl := &tally{}
	defer func() {
		if tl.failed > 0 || *flagKeep || t.Failed() {
			fmt.Printf("interop: work directory kept: %s\n", work)
		} else {
			os.RemoveAll(work)
		}
	}()

	// Local test files.
	local := filepath.Join(work, "local")
	os.MkdirAll(local, 0o755)
	big := int64(*flagBigMiB) << 20
	specs := []struct {
		label string
		size  int64
	}{{"0B", 0}, {"1B", 1}, {"1MiB", 1 << 20}, {fmt.Sprintf("%dMiB", *flagBigMiB), big}}
	var files []testFile
	for i, s := range specs {
		f, err := writeRandom(filepath.Join(local, "f-"+s.label+".bin"), s.size, uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		f.label = s.label
		files = append(files, f)
	}
	chunk, err := writeRandom(filepath.Join(local, "chunk.bin"), 100_000, 99)
	if err != nil {
		t.Fatal(err)
	}
	f1M := files[2]

	clients := map[string]ftpClient{
		"curl":   curlClient{},
		"lftp":   lftpClient{},
		"ftplib": ftplibClient{script: script},
	}
	mode := "proxy"
	if *flagDirect {
		mode = "direct"
	}
	fmt.Printf("interop: mode %s, servers %s, clients %s, large file %d MiB, work %s\n", mode, *flagServers, *flagClients, *flagBigMiB, work)

	for _, sname := range splitList(*flagServers) {
		var kind serverKind
		for _, k := range serverKinds {
			if k.name == sname {
				kind = k
			}
		}
		if kind.name == "" {
			t.Fatalf("unknown server %q", sname)
		}
		top := &group{tl: tl, label: kind.name}
		var srv *server
		if !top.run("start", func() error {
			var err error
			srv, err = startServer(ctx, kind, peers, work, serverHost, serverPort)
			return err
		}) {
			top.flush()
			continue
		}
		if *flagIsolated {
			top.run("isolation", func() error { return checkIsolation(ctx, srv.addr(), *flagClientIP) })
		}
		tgtHost, tgtPort := serverHost, serverPort
		var px *proxy
		if !*flagDirect {
			ph, pp, _ := net.SplitHostPort(*flagProxyAddr)
			tgtHost = ph
			tgtPort, _ = strconv.Atoi(pp)
			if !top.run("proxy-start", func() error {
				var err error
				px, err = startProxy(ctx, proxyBin, *flagProxyAddr, srv.addr(), *flagPorts, filepath.Join(srv.dir, "ftpproxy.log"))
				return err
			}) {
				top.flush()
				srv.stop()
				continue
			}
		}
		top.flush()

		var (
			wg          sync.WaitGroup
			sem         = make(chan struct{}, max(1, *flagParallel))
			bigMu       sync.Mutex
			bigDown     int
			bigUp       int
			concurrentN int
		)
		noteBig := func(down bool) {
			bigMu.Lock()
			defer bigMu.Unlock()
			if down {
				bigDown++
			} else {
				bigUp++
			}
		}
		for _, cname := range splitList(*flagClients) {
			cl, ok := clients[cname]
			if !ok {
				t.Fatalf("unknown client %q", cname)
			}
			for _, m := range cl.modes() {
				wg.Add(1)
				go func() {
					defer wg.Done()
					sem <- struct{}{}
					defer func() { <-sem }()
					tg := target{host: tgtHost, port: tgtPort, src: *flagClientIP, mode: m}
					g := &group{tl: tl, label: kind.name + "/" + cl.name() + "/" + m}
					runCombo(ctx, g, srv, cl, tg, files, chunk, f1M, work, noteBig)
					if lc, ok := cl.(lftpClient); ok {
						runMirror(ctx, g, srv, lc, tg, work)
					}
					if fc, ok := cl.(ftplibClient); ok && (m == "pasv" || m == "port") {
						if runConcurrent(ctx, g, srv, fc, tg) {
							bigMu.Lock()
							concurrentN++
							bigMu.Unlock()
						}
					}
					g.flush()
				}()
			}
		}
		wg.Wait()

		end := &group{tl: tl, label: kind.name}
		if px != nil {
			end.run("proxy-stop", px.stop)
			end.run("proxy-log-bytes", func() error {
				downs, ups, err := proxyTransfers(px.logPath)
				if err != nil {
					return err
				}
				if len(downs) == 0 && len(ups) == 0 {
					return fmt.Errorf("no \"transfer\" lines in %s", px.logPath)
				}
				if got := count(downs, big); got < bigDown {
					return fmt.Errorf("%d transfer lines with down=%d in %s, want at least %d (one per %s download)", got, big, px.logPath, bigDown, specs[3].label)
				}
				if got := count(ups, big); got < bigUp {
					return fmt.Errorf("%d transfer lines with up=%d in %s, want at least %d (one per %s upload)", got, big, px.logPath, bigUp, specs[3].label)
				}
				if bigDown+bigUp == 0 {
					return fmt.Errorf("no %s transfer succeeded, nothing to compare", specs[3].label)
				}
				return nil
			})
		}
		srv.stop()
		end.flush()
	}

	fmt.Printf("interop: %d passed, %d failed\n", tl.passed, tl.failed)
	if tl.failed > 0 {
		sort.Strings(tl.failures)
		t.Errorf("%d cases failed:\n  %s", tl.failed, strings.Join(tl.failures, "\n  "))
	}
}

// runCombo runs the command and transfer cases of one client in one mode,
// in a directory of its own.
func runCombo(ctx context.Context, g *group, srv *server, cl ftpClient, tg target, files []testFile, chunk, f1M testFile, work string, noteBig func(down bool)) {
	dir := cl.name() + "-" + tg.mode
	dl := filepath.Join(work, "dl", srv.kind.name, dir)
	os.MkdirAll(dl, 0o755)
	remote := func(name string) string { return dir + "/" + name }

	g.run("login-pwd", func() error {
		p, err := cl.pwd(ctx, tg)
		if err != nil {
			return err
		}
		if p != "/" {
			return fmt.Errorf("PWD %q, want \"/\"", p)
		}
		return nil
	})
	if !g.run("mkd", func() error {
		if err := cl.mkd(ctx, tg, dir); err != nil {
			return err
		}
		if fi, err := os.Stat(srv.path(dir)); err != nil || !fi.IsDir() {
			return fmt.Errorf("no directory %s on the server side: %v", srv.path(dir), err)
		}
		return nil
	}) {
		return
	}
	g.run("cwd", func() error {
		p, err := cl.cwd(ctx, tg, dir)
		if err != nil {
			return err
		}
		if p != "/"+dir {
			return fmt.Errorf("PWD after CWD %q, want %q", p, "/"+dir)
		}
		return nil
	})
	stored := map[string]bool{}
	for _, f := range files {
		stored[f.name] = g.run("stor-"+f.label, func() error {
			if err := cl.put(ctx, tg, f.path, remote(f.name), 0); err != nil {
				return err
			}
			if err := sameContent(srv.path(remote(f.name)), f.size, f.sum); err != nil {
				return fmt.Errorf("server side: %w", err)
			}
			if f.label == files[len(files)-1].label {
				noteBig(false)
			}
			return nil
		})
	}
	names := func(out string) error {
		for _, f := range files {
			if stored[f.name] && !strings.Contains(out, f.name) {
				return fmt.Errorf("%s missing from listing:\n%s", f.name, tail(out, 800))
			}
		}
		return nil
	}
	g.run("list", func() error {
		out, err := cl.list(ctx, tg, dir)
		if err != nil {
			return err
		}
		return names(out)
	})
	g.run("nlst", func() error {
		out, err := cl.nlst(ctx, tg, dir)
		if err != nil {
			return err
		}
		return names(out)
	})
	if cl.has("mlsd") && srv.kind.mlsd {
		g.run("mlsd", func() error {
			out, err := cl.mlsd(ctx, tg, dir)
			if err != nil {
				return err
			}
			return names(out)
		})
	}
	for _, f := range files {
		if !stored[f.name] {
			continue
		}
		g.run("retr-"+f.label, func() error {
			dst := filepath.Join(dl, f.name)
			os.Remove(dst)
			if err := cl.get(ctx, tg, remote(f.name), dst, 0); err != nil {
				return err
			}
			if f.size == 0 {
				// Some clients create no file for an empty download.
				if _, err := os.Stat(dst); os.IsNotExist(err) {
					os.WriteFile(dst, nil, 0o644)
				}
			}
			if err := sameContent(dst, f.size, f.sum); err != nil {
				return err
			}
			if f.label == files[len(files)-1].label {
				noteBig(true)
			}
			return nil
		})
	}
	if stored[f1M.name] {
		g.run("size", func() error {
			n, err := cl.size(ctx, tg, remote(f1M.name))
			if err != nil {
				return err
			}
			if n != f1M.size {
				return fmt.Errorf("SIZE %d, want %d", n, f1M.size)
			}
			return nil
		})
		g.run("mdtm", func() error {
			ts, err := cl.mdtm(ctx, tg, remote(f1M.name))
			if err != nil {
				return err
			}
			fi, err := os.Stat(srv.path(remote(f1M.name)))
			if err != nil {
				return err
			}
			if d := ts.Sub(fi.ModTime().UTC().Truncate(time.Second)); d < -2*time.Second || d > 2*time.Second {
				return fmt.Errorf("MDTM %s, file modified %s", ts.UTC(), fi.ModTime().UTC())
			}
			return nil
		})
		const partial = 300_000
		data, _ := os.ReadFile(f1M.path)
		g.run("rest-retr", func() error {
			dst := filepath.Join(dl, "partial-down.bin")
			if err := os.WriteFile(dst, data[:partial], 0o644); err != nil {
				return err
			}
			if err := cl.get(ctx, tg, remote(f1M.name), dst, partial); err != nil {
				return err
			}
			return sameContent(dst, f1M.size, f1M.sum)
		})
		g.run("rest-stor", func() error {
			name := remote("partial-up.bin")
			p := srv.path(name)
			if err := os.WriteFile(p, data[:partial], 0o644); err != nil {
				return err
			}
			os.Chown(p, srv.uid, srv.gid)
			if err := cl.put(ctx, tg, f1M.path, name, partial); err != nil {
				return err
			}
			if err := sameContent(p, f1M.size, f1M.sum); err != nil {
				return fmt.Errorf("server side: %w", err)
			}
			return nil
		})
		if cl.has("appe") {
			g.run("appe", func() error {
				if err := cl.appe(ctx, tg, chunk.path, remote(f1M.name)); err != nil {
					return err
				}
				c, _ := os.ReadFile(chunk.path)
				want := append(bytes.Clone(data), c...)
				if err := sameContent(srv.path(remote(f1M.name)), int64(len(want)), sumBytes(want)); err != nil {
					return fmt.Errorf("server side: %w", err)
				}
				return nil
			})
		}
	}
	f1B := files[1]
	if stored[f1B.name] {
		g.run("rnfr-rnto", func() error {
			if err := cl.rename(ctx, tg, remote(f1B.name), remote("renamed.bin")); err != nil {
				return err
			}
			if _, err := os.Stat(srv.path(remote(f1B.name))); !os.IsNotExist(err) {
				return fmt.Errorf("%s still there after the rename", remote(f1B.name))
			}
			return sameContent(srv.path(remote("renamed.bin")), f1B.size, f1B.sum)
		})
		g.run("dele", func() error {
			if err := cl.dele(ctx, tg, remote("renamed.bin")); err != nil {
				return err
			}
			if _, err := os.Stat(srv.path(remote("renamed.bin"))); !os.IsNotExist(err) {
				return fmt.Errorf("renamed.bin still there after DELE")
			}
			return nil
		})
	}
	g.run("mkd-rmd", func() error {
		sub := remote("sub")
		if err := cl.mkd(ctx, tg, sub); err != nil {
			return err
		}
		if fi, err := os.Stat(srv.path(sub)); err != nil || !fi.IsDir() {
			return fmt.Errorf("no directory %s after MKD", sub)
		}
		if err := cl.rmd(ctx, tg, sub); err != nil {
			return err
		}
		if _, err := os.Stat(srv.path(sub)); !os.IsNotExist(err) {
			return fmt.Errorf("%s still there after RMD", sub)
		}
		return nil
	})
}

// makeTree writes n small random files into dir and returns name -> sha256.
func makeTree(dir string, n int, seed uint64, uid, gid int) (map[string]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	os.Chown(dir, uid, gid)
	r := rand.New(rand.NewPCG(seed, 7))
	sums := map[string]string{}
	for i := 0; i < n; i++ {
		b := make([]byte, r.IntN(4096))
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		name := fmt.Sprintf("file-%03d.dat", i)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return nil, err
		}
		os.Chown(p, uid, gid)
		sums[name] = sumBytes(b)
	}
	return sums, nil
}

func checkTree(dir string, sums map[string]string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(ents) != len(sums) {
		return fmt.Errorf("%s holds %d entries, want %d", dir, len(ents), len(sums))
	}
	for name, sum := range sums {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if sumBytes(b) != sum {
			return fmt.Errorf("%s/%s differs", dir, name)
		}
	}
	return nil
}

// runMirror copies a tree of small files down with lftp mirror and up with
// mirror -R, comparing every file.
func runMirror(ctx context.Context, g *group, srv *server, lc lftpClient, tg target, work string) {
	n := *flagMirrorN
	remoteSrc := "mirror-src-" + tg.mode
	sums, err := makeTree(srv.path(remoteSrc), n, 1, srv.uid, srv.gid)
	label := fmt.Sprintf("mirror-%d", n)
	g.run(label, func() error {
		if err != nil {
			return err
		}
		dst := filepath.Join(work, "dl", srv.kind.name, "mirror-"+tg.mode)
		os.RemoveAll(dst)
		if err := lc.mirror(ctx, tg, remoteSrc, dst, false); err != nil {
			return err
		}
		return checkTree(dst, sums)
	})
	g.run(label+"-R", func() error {
		src := filepath.Join(work, "local", "mirror-up-"+srv.kind.name+"-"+tg.mode)
		sums, err := makeTree(src, n, 2, os.Getuid(), os.Getgid())
		if err != nil {
			return err
		}
		remoteDst := "mirror-dst-" + tg.mode
		if err := lc.mirror(ctx, tg, src, remoteDst, true); err != nil {
			return err
		}
		return checkTree(srv.path(remoteDst), sums)
	})
}

// runConcurrent runs -sessions parallel ftplib sessions that each store and
// read back 1 MiB, and checks the files on the server side too.
func runConcurrent(ctx context.Context, g *group, srv *server, fc ftplibClient, tg target) bool {
	n := *flagConcN
	dir := "concurrent-" + tg.mode
	return g.run(fmt.Sprintf("concurrent-%dx1MiB", n), func() error {
		p := srv.path(dir)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		os.Chown(p, srv.uid, srv.gid)
		out, err := fc.concurrent(ctx, tg, n, 1<<20, dir)
		if err != nil {
			return err
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != n {
			return fmt.Errorf("%d sessions reported, want %d", len(lines), n)
		}
		for _, l := range lines {
			name, sum, ok := strings.Cut(l, " ")
			if !ok {
				return fmt.Errorf("bad line %q", l)
			}
			if err := sameContent(srv.path(name), 1<<20, sum); err != nil {
				return fmt.Errorf("server side: %w", err)
			}
		}
		return nil
	})
}

// checkIsolation proves that run.sh's firewall rules are in force: the
// client address cannot reach the server, and only the proxy address may
// open connections to the client address.
func checkIsolation(ctx context.Context, serverAddr, clientIP string) error {
	host, port, _ := net.SplitHostPort(serverAddr)
	out, err := runTool(ctx, 30*time.Second, "curl", "-sS", "--max-time", "10", "--interface", clientIP,
		"--user", ftpUser+":"+ftpPass, "ftp://"+net.JoinHostPort(host, port)+"/")
	if err == nil {
		return fmt.Errorf("curl from %s reached the server %s directly: %q", clientIP, serverAddr, out)
	}
	if !strings.Contains(err.Error(), "exit status 7") {
		return fmt.Errorf("direct curl failed, but not with \"could not connect\" (exit 7): %v", err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(clientIP, "0"))
	if err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	dial := func(from string) error {
		d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(host); err == nil {
		return fmt.Errorf("%s could open a connection to the client address %s", host, ln.Addr())
	}
	proxyHost, _, _ := net.SplitHostPort(*flagProxyAddr)
	if err := dial(proxyHost); err != nil {
		return fmt.Errorf("the proxy address %s cannot reach the client address: %v", proxyHost, err)
	}
	return nil
}
