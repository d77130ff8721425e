//go:build interop

package interop

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
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

// testFile is a local test file and the case name suffix it goes by.
type testFile struct {
	peers.File
	label string // case name suffix, e.g. 64MiB
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
// suiteWork returns the work directory of the suite name: a new temporary
// one, or name under -work. Mode 0755: the servers' sessions run as
// "daemon" and must reach the files.
func suiteWork(t *testing.T, name string) string {
	t.Helper()
	work := *flagWork
	var err error
	if work == "" {
		work, err = os.MkdirTemp("", "ftpproxy-"+name+"-")
	} else {
		work = filepath.Join(work, name)
		err = os.MkdirAll(work, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(work, 0o755)
	return work
}

func TestInterop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 24*time.Minute)
	defer cancel()

	peersDir := absPath(*flagPeers)
	script := absPath(*flagScript)
	proxyBin := absPath(*flagProxyBin)
	for _, p := range []string{peersDir, script} {
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
		f, err := peers.WriteRandom(filepath.Join(local, "f-"+s.label+".bin"), s.size, uint64(i+1))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, testFile{File: f, label: s.label})
	}
	chunkFile, err := peers.WriteRandom(filepath.Join(local, "chunk.bin"), 100_000, 99)
	if err != nil {
		t.Fatal(err)
	}
	chunk := testFile{File: chunkFile}
	f1M := files[2]

	clients := map[string]peers.Client{}
	for _, c := range peers.Clients(script) {
		clients[c.Name()] = c
	}
	mode := "proxy"
	if *flagDirect {
		mode = "direct"
	}
	fmt.Printf("interop: mode %s, servers %s, clients %s, large file %d MiB, work %s\n", mode, *flagServers, *flagClients, *flagBigMiB, work)

	for _, sname := range splitList(*flagServers) {
		kind, ok := peers.KindByName(sname)
		if !ok {
			t.Fatalf("unknown server %q", sname)
		}
		top := &group{tl: tl, label: kind.Name}
		var srv *peers.Server
		if !top.run("start", func() error {
			var err error
			srv, err = peers.StartServer(ctx, kind, peersDir, work, serverHost, serverPort)
			return err
		}) {
			top.flush()
			continue
		}
		if *flagIsolated {
			top.run("isolation", func() error { return checkIsolation(ctx, srv.Addr(), *flagClientIP) })
		}
		tgtHost, tgtPort := serverHost, serverPort
		var px *peers.Proxy
		if !*flagDirect {
			ph, pp, _ := net.SplitHostPort(*flagProxyAddr)
			tgtHost = ph
			tgtPort, _ = strconv.Atoi(pp)
			if !top.run("proxy-start", func() error {
				var err error
				px, err = peers.StartProxy(ctx, peers.ProxyConfig{
					Bin:          proxyBin,
					Listen:       *flagProxyAddr,
					Upstream:     srv.Addr(),
					PassivePorts: *flagPorts,
					LogPath:      filepath.Join(srv.Dir, "ftpproxy.log"),
				})
				return err
			}) {
				top.flush()
				srv.Stop()
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
			for _, m := range cl.Modes() {
				wg.Add(1)
				go func() {
					defer wg.Done()
					sem <- struct{}{}
					defer func() { <-sem }()
					tg := peers.Target{Host: tgtHost, Port: tgtPort, User: peers.User, Password: peers.Password, Source: *flagClientIP, Mode: m}
					g := &group{tl: tl, label: kind.Name + "/" + cl.Name() + "/" + m}
					runCombo(ctx, g, srv, cl, tg, files, chunk, f1M, work, noteBig)
					if lc, ok := cl.(peers.Lftp); ok {
						runMirror(ctx, g, srv, lc, tg, work)
					}
					if fc, ok := cl.(peers.Ftplib); ok && (m == "pasv" || m == "port") {
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

		end := &group{tl: tl, label: kind.Name}
		if px != nil {
			end.run("proxy-stop", px.Stop)
			end.run("proxy-log-bytes", func() error {
				downs, ups, err := peers.ReadTransfers(px.LogPath)
				if err != nil {
					return err
				}
				if len(downs) == 0 && len(ups) == 0 {
					return fmt.Errorf("no \"transfer\" lines in %s", px.LogPath)
				}
				if got := count(downs, big); got < bigDown {
					return fmt.Errorf("%d transfer lines with down=%d in %s, want at least %d (one per %s download)", got, big, px.LogPath, bigDown, specs[3].label)
				}
				if got := count(ups, big); got < bigUp {
					return fmt.Errorf("%d transfer lines with up=%d in %s, want at least %d (one per %s upload)", got, big, px.LogPath, bigUp, specs[3].label)
				}
				if bigDown+bigUp == 0 {
					return fmt.Errorf("no %s transfer succeeded, nothing to compare", specs[3].label)
				}
				return nil
			})
		}
		srv.Stop()
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
func runCombo(ctx context.Context, g *group, srv *peers.Server, cl peers.Client, tg peers.Target, files []testFile, chunk, f1M testFile, work string, noteBig func(down bool)) {
	dir := cl.Name() + "-" + tg.Mode
	dl := filepath.Join(work, "dl", srv.Kind.Name, dir)
	os.MkdirAll(dl, 0o755)
	remote := func(name string) string { return dir + "/" + name }

	g.run("login-pwd", func() error {
		p, err := cl.PWD(ctx, tg)
		if err != nil {
			return err
		}
		if p != "/" {
			return fmt.Errorf("PWD %q, want \"/\"", p)
		}
		return nil
	})
	if !g.run("mkd", func() error {
		if err := cl.MKD(ctx, tg, dir); err != nil {
			return err
		}
		if fi, err := os.Stat(srv.Path(dir)); err != nil || !fi.IsDir() {
			return fmt.Errorf("no directory %s on the server side: %v", srv.Path(dir), err)
		}
		return nil
	}) {
		return
	}
	g.run("cwd", func() error {
		p, err := cl.CWD(ctx, tg, dir)
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
		stored[f.Name] = g.run("stor-"+f.label, func() error {
			if err := cl.Put(ctx, tg, f.Path, remote(f.Name), 0); err != nil {
				return err
			}
			if err := peers.SameContent(srv.Path(remote(f.Name)), f.Size, f.Sum); err != nil {
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
			if stored[f.Name] && !strings.Contains(out, f.Name) {
				return fmt.Errorf("%s missing from listing:\n%s", f.Name, peers.Tail(out, 800))
			}
		}
		return nil
	}
	g.run("list", func() error {
		out, err := cl.List(ctx, tg, dir)
		if err != nil {
			return err
		}
		return names(out)
	})
	g.run("nlst", func() error {
		out, err := cl.NLST(ctx, tg, dir)
		if err != nil {
			return err
		}
		return names(out)
	})
	if cl.Has("mlsd") && srv.Kind.MLSD {
		g.run("mlsd", func() error {
			out, err := cl.MLSD(ctx, tg, dir)
			if err != nil {
				return err
			}
			return names(out)
		})
	}
	for _, f := range files {
		if !stored[f.Name] {
			continue
		}
		g.run("retr-"+f.label, func() error {
			dst := filepath.Join(dl, f.Name)
			os.Remove(dst)
			if err := cl.Get(ctx, tg, remote(f.Name), dst, 0); err != nil {
				return err
			}
			if f.Size == 0 {
				// Some clients create no file for an empty download.
				if _, err := os.Stat(dst); os.IsNotExist(err) {
					os.WriteFile(dst, nil, 0o644)
				}
			}
			if err := peers.SameContent(dst, f.Size, f.Sum); err != nil {
				return err
			}
			if f.label == files[len(files)-1].label {
				noteBig(true)
			}
			return nil
		})
	}
	if stored[f1M.Name] {
		g.run("size", func() error {
			n, err := cl.Size(ctx, tg, remote(f1M.Name))
			if err != nil {
				return err
			}
			if n != f1M.Size {
				return fmt.Errorf("SIZE %d, want %d", n, f1M.Size)
			}
			return nil
		})
		g.run("mdtm", func() error {
			ts, err := cl.MDTM(ctx, tg, remote(f1M.Name))
			if err != nil {
				return err
			}
			fi, err := os.Stat(srv.Path(remote(f1M.Name)))
			if err != nil {
				return err
			}
			if d := ts.Sub(fi.ModTime().UTC().Truncate(time.Second)); d < -2*time.Second || d > 2*time.Second {
				return fmt.Errorf("MDTM %s, file modified %s", ts.UTC(), fi.ModTime().UTC())
			}
			return nil
		})
		const partial = 300_000
		data, _ := os.ReadFile(f1M.Path)
		g.run("rest-retr", func() error {
			dst := filepath.Join(dl, "partial-down.bin")
			if err := os.WriteFile(dst, data[:partial], 0o644); err != nil {
				return err
			}
			if err := cl.Get(ctx, tg, remote(f1M.Name), dst, partial); err != nil {
				return err
			}
			return peers.SameContent(dst, f1M.Size, f1M.Sum)
		})
		g.run("rest-stor", func() error {
			name := remote("partial-up.bin")
			p := srv.Path(name)
			if err := os.WriteFile(p, data[:partial], 0o644); err != nil {
				return err
			}
			os.Chown(p, srv.UID, srv.GID)
			if err := cl.Put(ctx, tg, f1M.Path, name, partial); err != nil {
				return err
			}
			if err := peers.SameContent(p, f1M.Size, f1M.Sum); err != nil {
				return fmt.Errorf("server side: %w", err)
			}
			return nil
		})
		if cl.Has("appe") {
			g.run("appe", func() error {
				if err := cl.APPE(ctx, tg, chunk.Path, remote(f1M.Name)); err != nil {
					return err
				}
				c, _ := os.ReadFile(chunk.Path)
				want := append(bytes.Clone(data), c...)
				if err := peers.SameContent(srv.Path(remote(f1M.Name)), int64(len(want)), peers.SumBytes(want)); err != nil {
					return fmt.Errorf("server side: %w", err)
				}
				return nil
			})
		}
	}
	f1B := files[1]
	if stored[f1B.Name] {
		g.run("rnfr-rnto", func() error {
			if err := cl.Rename(ctx, tg, remote(f1B.Name), remote("renamed.bin")); err != nil {
				return err
			}
			if _, err := os.Stat(srv.Path(remote(f1B.Name))); !os.IsNotExist(err) {
				return fmt.Errorf("%s still there after the rename", remote(f1B.Name))
			}
			return peers.SameContent(srv.Path(remote("renamed.bin")), f1B.Size, f1B.Sum)
		})
		g.run("dele", func() error {
			if err := cl.DELE(ctx, tg, remote("renamed.bin")); err != nil {
				return err
			}
			if _, err := os.Stat(srv.Path(remote("renamed.bin"))); !os.IsNotExist(err) {
				return fmt.Errorf("renamed.bin still there after DELE")
			}
			return nil
		})
	}
	g.run("mkd-rmd", func() error {
		sub := remote("sub")
		if err := cl.MKD(ctx, tg, sub); err != nil {
			return err
		}
		if fi, err := os.Stat(srv.Path(sub)); err != nil || !fi.IsDir() {
			return fmt.Errorf("no directory %s after MKD", sub)
		}
		if err := cl.RMD(ctx, tg, sub); err != nil {
			return err
		}
		if _, err := os.Stat(srv.Path(sub)); !os.IsNotExist(err) {
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
		sums[name] = peers.SumBytes(b)
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
		if peers.SumBytes(b) != sum {
			return fmt.Errorf("%s/%s differs", dir, name)
		}
	}
	return nil
}

// runMirror copies a tree of small files down with lftp mirror and up with
// mirror -R, comparing every file.
func runMirror(ctx context.Context, g *group, srv *peers.Server, lc peers.Lftp, tg peers.Target, work string) {
	n := *flagMirrorN
	remoteSrc := "mirror-src-" + tg.Mode
	sums, err := makeTree(srv.Path(remoteSrc), n, 1, srv.UID, srv.GID)
	label := fmt.Sprintf("mirror-%d", n)
	g.run(label, func() error {
		if err != nil {
			return err
		}
		dst := filepath.Join(work, "dl", srv.Kind.Name, "mirror-"+tg.Mode)
		os.RemoveAll(dst)
		if err := lc.Mirror(ctx, tg, remoteSrc, dst, false); err != nil {
			return err
		}
		return checkTree(dst, sums)
	})
	g.run(label+"-R", func() error {
		src := filepath.Join(work, "local", "mirror-up-"+srv.Kind.Name+"-"+tg.Mode)
		sums, err := makeTree(src, n, 2, os.Getuid(), os.Getgid())
		if err != nil {
			return err
		}
		remoteDst := "mirror-dst-" + tg.Mode
		if err := lc.Mirror(ctx, tg, src, remoteDst, true); err != nil {
			return err
		}
		return checkTree(srv.Path(remoteDst), sums)
	})
}

// runConcurrent runs -sessions parallel ftplib sessions that each store and
// read back 1 MiB, and checks the files on the server side too.
func runConcurrent(ctx context.Context, g *group, srv *peers.Server, fc peers.Ftplib, tg peers.Target) bool {
	n := *flagConcN
	dir := "concurrent-" + tg.Mode
	return g.run(fmt.Sprintf("concurrent-%dx1MiB", n), func() error {
		p := srv.Path(dir)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		os.Chown(p, srv.UID, srv.GID)
		out, err := fc.Concurrent(ctx, tg, n, 1<<20, dir)
		if err != nil {
			return err
		}
		return srv.CheckConcurrent(out, n, 1<<20)
	})
}

// checkIsolation proves that run.sh's firewall rules are in force: the
// client address cannot reach the server, and only the proxy address may
// open connections to the client address.
func checkIsolation(ctx context.Context, serverAddr, clientIP string) error {
	host, port, _ := net.SplitHostPort(serverAddr)
	out, err := peers.RunTool(ctx, 30*time.Second, "curl", "-sS", "--max-time", "10", "--interface", clientIP,
		"--user", peers.User+":"+peers.Password, "ftp://"+net.JoinHostPort(host, port)+"/")
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
