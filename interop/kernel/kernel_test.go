//go:build interop

package kernel

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ti-mo/conntrack"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

var (
	flagProxyBin = flag.String("ftpproxy", "../../bin/ftpproxy", "the ftpproxy binary")
	flagPeers    = flag.String("peers", "../.peers", "directory the servers were unpacked into by install-peers.sh")
	flagPyClient = flag.String("proxyhdr-client", "proxyhdr_client.py", "the Python client that sends PROXY headers itself")
	flagPrefix   = flag.String("prefix", "", "prefix of the network namespaces this run creates (default ftpkrn-<pid>)")
	flagWork     = flag.String("work", "", "work directory (default: a new directory under /dev/shm, or $TMPDIR)")
	flagKeep     = flag.Bool("keep", false, "keep the work directory even when every case passed")
	flagBudget   = flag.Duration("budget", 4*time.Minute, "time the whole suite may take")
	flagCases    = flag.String("cases", "", "comma-separated cases to run, of guard,theft,kills,concurrency,fallbacks,throughput,unprivileged,lifecycle (default: all)")
	flagBench    = flag.Bool("bench", false, "run only the throughput comparison (direct, kernel, splice) and print its table and goals, as make bench's rows")
	flagRounds   = flag.Int("rounds", 0, "throughput rounds, each a download and an upload on every path (default 1, with -bench 5)")
	flagDownMiB  = flag.Int("download-mib", 1024, "size of the throughput download, MiB")
	flagUpMiB    = flag.Int("upload-mib", 256, "size of the throughput upload, MiB")
	flagSessions = flag.Int("sessions", 200, "sessions of the concurrency case: each holds a PASV, all download at once, then each once more")
)

// Ports and ranges, all inside the run's own namespaces.
const (
	serverPort = 21 // vsftpd on 10.20.0.2 and, IPv6 only, on fd00:20::2

	proxyPort    = 2141 // proxy A: --data-path kernel, guard on, table ftpproxy
	v6Port       = 2142 // a kernel proxy in front of the IPv6 vsftpd
	pphPort      = 2143 // a kernel proxy with --proxy-protocol-from
	lifePort     = 2144 // the lifecycle case's proxy, table ftpproxy
	kernPort     = 2145 // throughput: kernel, guard off
	splicePort   = 2146 // throughput: splice
	upgPort      = 2147 // the upgrade case's proxy, table ftpkrnupg
	life2Port    = 2148 // a second proxy given the lifecycle proxy's table
	unprivPort   = 30021
	healthA      = "127.0.0.1:2149"
	health6      = "127.0.0.1:2150"
	healthPPH    = "127.0.0.1:2151"
	healthKern   = "127.0.0.1:2152"
	healthSplice = "127.0.0.1:2153"
	healthLife   = "127.0.0.1:2154"
	healthUpg    = "127.0.0.1:2155"
	healthLife2  = "127.0.0.1:2156"
	healthUnpriv = "127.0.0.1:30155"

	rangeA      = "24000-24399" // 400 ports: 200 sessions at once, and more
	activeA     = "24400-24449"
	range6      = "24500-24549"
	rangePPH    = "24600-24649"
	rangeLife   = "24700-24749"
	rangeLife2  = "24750-24799"
	rangeUpg    = "24800-24849"
	rangeKern   = "25000-25049"
	rangeSplice = "25100-25149"
	rangeUnpriv = "31000-31049"

	defaultTable = "ftpproxy"
	table6       = "ftpkrn6"
	tablePPH     = "ftpkrnpph"
	tableKern    = "ftpkrnbench"
	tableUnpriv  = "ftpkrnunpriv"
	tableUpg     = "ftpkrnupg"

	// The address the PROXY-header client claims for itself.
	claimedIP = "10.77.0.5"
)

// The sets of the proxy's table, all of which must be empty when no
// transfer runs.
var tableSets = []string{"gate4", "gate6", "keys4", "keys6", "dnat4", "dnat6", "snat4", "snat6", "dead"}

// opLimit bounds one client program run.
const opLimit = 60 * time.Second

// --- suite -------------------------------------------------------------------

type suite struct {
	ctx      context.Context
	topo     *peers.Topology
	tl       *peers.Tally
	work     string
	peers    string
	pyclient string

	srv, srv6 *peers.Server
	x         peers.File   // x.bin, 4 MiB, on both servers
	xup       peers.File   // xup.bin, 4 MiB, local: uploads
	mid       peers.File   // mid.bin, 64 MiB, on srv: slow and killed transfers
	small     []peers.File // s<i>.bin, 64 KiB to 1 MiB, on srv: the concurrency case
	big, up   peers.File   // throughput: big.bin on srv, up.bin local
	pki       *peers.PKI

	a       *proxyRun // proxy A, started by the first case that needs it
	aErr    error
	proxies []*proxyRun // every proxy started, stopped at the end
}

func TestKernel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), *flagBudget)
	defer cancel()
	tl := &peers.Tally{Quiet: *flagBench}
	start := time.Now()
	defer func() {
		if *flagBench {
			fmt.Printf("kernel bench: done in %.0f s\n", time.Since(start).Seconds())
			if tl.Failed() > 0 {
				t.Fail()
			}
			return
		}
		if !tl.Summary("kernel", start) {
			t.Fail()
		}
	}()
	s := &suite{ctx: ctx, topo: newTopo(peers.NetnsPrefix(*flagPrefix, "ftpkrn")), tl: tl}
	defer s.topo.Destroy()
	defer s.teardown() // before the namespaces go
	if err := s.setup(); err != nil {
		tl.Report("setup", 0, err)
		return
	}
	if *flagBench {
		s.caseThroughput()
		return
	}
	cases := []peers.Case{
		{Name: "guard", Run: s.caseGuard}, {Name: "theft", Run: s.caseTheft}, {Name: "kills", Run: s.caseKills},
		{Name: "concurrency", Run: s.caseConcurrency}, {Name: "fallbacks", Run: s.caseFallbacks},
		{Name: "throughput", Run: s.caseThroughput}, {Name: "unprivileged", Run: s.caseUnprivileged},
		{Name: "lifecycle", Run: s.caseLifecycle}, {Name: "upgrade", Run: s.caseUpgrade},
	}
	peers.RunCases(tl, *flagCases, cases, func() error {
		if s.ctx.Err() != nil {
			return fmt.Errorf("not run: the suite's -budget %s is spent", *flagBudget)
		}
		return nil
	})
}

// setup builds the topology, loads the router's NAT, starts the servers
// and writes the files.
func (s *suite) setup() error {
	if err := peers.Preflight("network namespaces and nftables", "ip", "nft", "curl", "python3", "setpriv", "getconf"); err != nil {
		return err
	}
	s.peers, s.pyclient = *flagPeers, *flagPyClient
	if err := peers.AbsPaths(&s.peers, &s.pyclient); err != nil {
		return err
	}
	var err error
	if *flagProxyBin, err = peers.ProxyBinary(*flagProxyBin); err != nil {
		return err
	}
	if err := s.topo.Build(s.ctx); err != nil {
		return fmt.Errorf("topology: %w", err)
	}
	if err := s.topo.Nft(s.ctx, nsRtr, routerRules); err != nil {
		return fmt.Errorf("the kernel refused the router's nftables NAT (masquerade): %w", err)
	}
	if s.work, err = workDir(); err != nil {
		return err
	}
	if !*flagBench {
		fmt.Printf("kernel: namespaces %s-{cli,rtr,pxy,srv,in,thief}, work directory %s\n", s.topo.Prefix, s.work)
	}
	start := func(host string, lo, hi int) (*peers.Server, error) {
		return peers.Within(s.topo, nsSrv, func() (*peers.Server, error) {
			return peers.StartServer(s.ctx, peers.Vsftpd, s.peers, s.work, host, serverPort, peers.PassivePorts(lo, hi))
		})
	}
	if s.srv, err = start(srvIP, 20000, 20499); err != nil {
		return fmt.Errorf("vsftpd on %s: %w", srvIP, err)
	}
	if *flagBench || peers.ParseCaseList(*flagCases).Selects("throughput") {
		if s.big, err = writeRandom(s.srv.Path("big.bin"), int64(*flagDownMiB)<<20, 10); err != nil {
			return err
		}
		if s.up, err = writeRandom(filepath.Join(s.work, "up.bin"), int64(*flagUpMiB)<<20, 11); err != nil {
			return err
		}
	}
	if *flagBench {
		return nil
	}
	if s.srv6, err = start(srv6, 20500, 20549); err != nil {
		return fmt.Errorf("IPv6-only vsftpd on %s: %w", srv6, err)
	}
	if s.x, err = writeRandom(s.srv.Path("x.bin"), 4<<20, 1); err != nil {
		return err
	}
	if _, err = writeRandom(s.srv6.Path("x.bin"), 4<<20, 1); err != nil {
		return err
	}
	if s.xup, err = writeRandom(filepath.Join(s.work, "xup.bin"), 4<<20, 2); err != nil {
		return err
	}
	if s.mid, err = writeRandom(s.srv.Path("mid.bin"), 64<<20, 3); err != nil {
		return err
	}
	for i := range 8 {
		size := int64(64<<10) << (i % 5) // 64 KiB to 1 MiB
		size += int64(i) * 4099          // and lengths that are not round
		f, err := writeRandom(s.srv.Path(fmt.Sprintf("s%d.bin", i)), size, uint64(20+i))
		if err != nil {
			return err
		}
		s.small = append(s.small, f)
	}
	if s.pki, err = peers.MakeTestPKI(filepath.Join(s.work, "pki"), pxyWanIP, pxyInIP); err != nil {
		return fmt.Errorf("test CA: %w", err)
	}
	return nil
}

// workDir makes the work directory: on /dev/shm when it has room, so
// that the throughput files live in memory and no disk is measured.
func workDir() (string, error) {
	base := ""
	need := uint64(*flagDownMiB+3**flagUpMiB+512) << 20
	var st syscall.Statfs_t
	if *flagWork == "" && syscall.Statfs("/dev/shm", &st) == nil && st.Bavail*uint64(st.Bsize) > need {
		base = "/dev/shm"
	}
	return peers.WorkDir(*flagWork, base, "ftpkrn-")
}

func (s *suite) teardown() {
	for i := len(s.proxies) - 1; i >= 0; i-- {
		s.proxies[i].Stop()
	}
	for _, srv := range []*peers.Server{s.srv, s.srv6} {
		if srv != nil {
			srv.Stop()
		}
	}
	if !*flagKeep {
		// The throughput files go even when the rest stays for a look:
		// a failed run must not leave a GiB in /dev/shm.
		for _, f := range []peers.File{s.big, s.up} {
			if f.Path != "" {
				os.Remove(f.Path)
			}
		}
	}
	peers.CleanWorkDir("kernel", s.work, !*flagKeep && s.tl.Failed() == 0 && *flagWork == "")
}

// writeRandom writes size pseudo-random bytes (ChaCha8 from seed) to path
// and returns the file with its sha256.
func writeRandom(path string, size int64, seed uint64) (peers.File, error) {
	f, err := os.Create(path)
	if err != nil {
		return peers.File{}, err
	}
	defer f.Close()
	var key [32]byte
	copy(key[:], fmt.Sprintf("ftpkrn-%d", seed))
	r := rand.NewChaCha8(key)
	h := sha256.New()
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := min(left, int64(len(buf)))
		r.Read(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			return peers.File{}, err
		}
		h.Write(buf[:n])
		left -= n
	}
	if err := f.Chmod(0o644); err != nil {
		return peers.File{}, err
	}
	return peers.File{Name: filepath.Base(path), Path: path, Size: size, Sum: hex.EncodeToString(h.Sum(nil))}, f.Close()
}

// --- proxies -----------------------------------------------------------------

// proxySpec is how to start one ftpproxy in the proxy's namespace.
type proxySpec struct {
	name     string
	bin      string // default -ftpproxy
	listen   string // the first --listen, which the start-up check dials
	more     []string
	upstream string
	ports    string
	health   string
	probe    string // the start-up check's source address
	args     []string
}

// proxyRun is one ftpproxy started by the suite.
type proxyRun struct {
	*peers.Proxy
	name   string
	health string
}

// startProxy starts ftpproxy in the proxy's namespace with a JSON debug
// log in the work directory.
func (s *suite) startProxy(sp proxySpec) (*proxyRun, error) {
	var args []string
	for _, l := range sp.more {
		args = append(args, "--listen", l)
	}
	if sp.health != "" {
		args = append(args, "--health", sp.health)
	}
	args = append(args, "--drain-timeout", "2s", "--dial-timeout", "5s", "--data-accept-timeout", "15s")
	bin := sp.bin
	if bin == "" {
		bin = *flagProxyBin
	}
	cfg := peers.ProxyConfig{
		Bin:          bin,
		Listen:       sp.listen,
		Upstream:     sp.upstream,
		PassivePorts: sp.ports,
		LogPath:      filepath.Join(s.work, "ftpproxy-"+sp.name+".log"),
		Args:         append(args, sp.args...),
		ProbeSource:  sp.probe,
	}
	px, err := peers.Within(s.topo, nsPxy, func() (*peers.Proxy, error) { return peers.StartProxy(s.ctx, cfg) })
	if err != nil {
		return nil, err
	}
	p := &proxyRun{Proxy: px, name: sp.name, health: sp.health}
	s.proxies = append(s.proxies, p)
	return p, nil
}

// proxyA returns proxy A for the case called name, started by the first
// case that needs it (a failure to start is kept, not retried). When A
// does not run, it reports that as the failure "<name>/proxy" and returns
// nil: the case has nothing to check.
func (s *suite) proxyA(name string) *proxyRun {
	if s.a == nil && s.aErr == nil {
		s.a, s.aErr = s.startA()
	}
	if s.aErr != nil {
		s.tl.Report(name+"/proxy", 0, s.aErr)
		return nil
	}
	return s.a
}

// startA starts proxy A: --data-path kernel with the forward guard on and
// the default table, on the public address, the inside net and the
// inside net's IPv6 address, in front of the IPv4 vsftpd, with a
// certificate for FTPS (--client-tls allow) and an active range.
func (s *suite) startA() (*proxyRun, error) {
	cert, key, err := s.pki.Issue("proxy-a", pxyWanIP, pxyInIP)
	if err != nil {
		return nil, err
	}
	return s.startProxy(proxySpec{
		name:     "a",
		listen:   hostPort(pxyWanIP, proxyPort),
		more:     []string{hostPort(pxyInIP, proxyPort), hostPort(pxyIn6, proxyPort)},
		upstream: hostPort(srvIP, serverPort),
		ports:    rangeA,
		health:   healthA,
		args: []string{"--data-path", "kernel", "--active-ports", activeA,
			"--tls-cert", cert, "--tls-key", key, "--client-tls", "allow"},
	})
}

// stopA stops proxy A, if it runs: its forward guard would keep the
// direct comparison from reaching the server.
func (s *suite) stopA() {
	if s.a != nil {
		s.a.Stop()
		s.a, s.aErr = nil, nil
	}
}

func hostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

// withLog adds the tail of the proxy's log to a failure.
func (p *proxyRun) withLog(err error) error {
	if err == nil || p == nil {
		return err
	}
	return fmt.Errorf("%w\nproxy log %s (tail):\n%s", err, p.LogPath, peers.Tail(p.Log(), 2500))
}

// logLine is one JSON line of a proxy's log.
type logLine map[string]any

func (l logLine) str(k string) string {
	v, _ := l[k].(string)
	return v
}

func (l logLine) num(k string) int64 {
	v, _ := l[k].(float64)
	return int64(v)
}

// lines returns the JSON lines of the proxy's log from offset on.
func (p *proxyRun) lines(from int64) []logLine {
	b, err := os.ReadFile(p.LogPath)
	if err != nil || from > int64(len(b)) {
		return nil
	}
	var out []logLine
	sc := bufio.NewScanner(bytes.NewReader(b[from:]))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l logLine
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			out = append(out, l)
		}
	}
	return out
}

// transfers returns the "transfer" lines from offset on.
func (p *proxyRun) transfers(from int64) []logLine {
	var out []logLine
	for _, l := range p.lines(from) {
		if l.str("message") == "transfer" && l.str("cmd") != "" {
			out = append(out, l)
		}
	}
	return out
}

// failedKernelTransfer waits for the next transfer line after offset from
// and checks that it is of a kernel transfer that failed with an error
// containing want (any error if want is empty); what names such a
// transfer in the error ("an aborted").
func (p *proxyRun) failedKernelTransfer(from int64, want, what string) (logLine, error) {
	l, err := p.waitLine(from, 10*time.Second, "transfer line", func(l logLine) bool { return l.str("message") == "transfer" })
	if err != nil {
		return l, err
	}
	if l.str("data_path") != "kernel" || l.str("error") == "" || !strings.Contains(l.str("error"), want) {
		b, _ := json.Marshal(l)
		return l, fmt.Errorf("the transfer line does not show %s kernel transfer: %s", what, b)
	}
	return l, nil
}

// waitLine waits up to limit for a line from offset on that match
// accepts, and returns it.
func (p *proxyRun) waitLine(from int64, limit time.Duration, what string, match func(logLine) bool) (logLine, error) {
	deadline := time.Now().Add(limit)
	for {
		for _, l := range p.lines(from) {
			if match(l) {
				return l, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no %s in the proxy's log within %s", what, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// count is how many lines of the whole log have the message.
func (p *proxyRun) count(message string) int {
	n := 0
	for _, l := range p.lines(0) {
		if strings.Contains(l.str("message"), message) {
			n++
		}
	}
	return n
}

// allKernel checks that each transfer line says the kernel carried it,
// with conntrack's counts, and that there are want of them (want < 0: any
// number but none).
func allKernel(ts []logLine, want int) error {
	if want >= 0 && len(ts) != want {
		return fmt.Errorf("%d transfer lines in the proxy's log, want %d", len(ts), want)
	}
	if len(ts) == 0 {
		return errors.New("no transfer line in the proxy's log")
	}
	for _, l := range ts {
		if l.str("data_path") != "kernel" || l.str("counted_by") != "conntrack" {
			b, _ := json.Marshal(l)
			return fmt.Errorf("a transfer line without \"data_path\":\"kernel\",\"counted_by\":\"conntrack\": %s", b)
		}
		if e := l.str("error"); e != "" {
			b, _ := json.Marshal(l)
			return fmt.Errorf("a transfer line with an error: %s", b)
		}
	}
	return nil
}

// metrics reads a health endpoint's /metrics from the proxy's namespace:
// every sample, keyed by its name and labels as written.
func (s *suite) metrics(health string) (map[string]float64, error) {
	body, err := peers.Within(s.topo, nsPxy, func() (string, error) { return peers.HealthGet(health, "/metrics") })
	if err != nil {
		return nil, fmt.Errorf("metrics from %s: %w", health, err)
	}
	m := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m, nil
}

// dataPaths reads ftpproxy_data_path_total by path.
func (s *suite) dataPaths(health string) (map[string]float64, error) {
	m, err := s.metrics(health)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for k, v := range m {
		if rest, ok := strings.CutPrefix(k, `ftpproxy_data_path_total{path="`); ok {
			out[strings.TrimSuffix(rest, `"}`)] = v
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no ftpproxy_data_path_total on %s/metrics", health)
	}
	return out, nil
}

// grew checks that ftpproxy_data_path_total grew by want for path and
// stayed for every other path.
func grew(before, after map[string]float64, path string, want float64) error {
	var diffs []string
	ok := true
	for k, v := range after {
		d := v - before[k]
		if d != 0 {
			diffs = append(diffs, fmt.Sprintf("%s +%g", k, d))
		}
		if (k == path && d != want) || (k != path && d != 0) {
			ok = false
		}
	}
	sort.Strings(diffs)
	if !ok {
		return fmt.Errorf("ftpproxy_data_path_total changed by {%s}, want %s +%g alone", strings.Join(diffs, ", "), path, want)
	}
	return nil
}

// --- nftables and conntrack in the proxy's namespace -------------------------

// nftState is what nft shows of a table: whether it exists, its chains,
// and the elements of each of its sets and maps. It is read with `nft -j
// list chains`, `list sets`, `list maps` and `list map`/`list set` for
// each: `nft list tables`, `list table` and `list ruleset` abort (nft
// 1.0.6, "netlink_parse_concat_expr: Assertion `consumed > 0' failed")
// on the rules of the proxy's prerouting chain; caseGuard reports that.
type nftState struct {
	exists bool
	elems  map[string]int
	chains []string
	owners []int // the owner set's process IDs
	raw    string
}

// nftTable reads the table inet NAME in the proxy's namespace: the chains,
// sets and maps of the family (the table exists if it has one), then each
// set and map with its elements.
func (s *suite) nftTable(table string) (nftState, error) {
	script := "nft -j list chains inet && nft -j list sets inet && nft -j list maps inet"
	out, err := s.topo.Exec(s.ctx, 10*time.Second, nsPxy, "sh", "-c", script)
	if err != nil {
		return nftState{}, err
	}
	st := nftState{elems: map[string]int{}}
	var kinds = map[string]string{}
	if err := decodeNft(out, func(kind string, v nftObject) {
		if v.Table != table {
			return
		}
		st.exists = true
		switch kind {
		case "chain":
			st.chains = append(st.chains, v.Name)
		case "set", "map":
			kinds[v.Name] = kind
		}
	}); err != nil {
		return nftState{}, err
	}
	if !st.exists {
		return st, nil
	}
	var cmds []string
	for name, kind := range kinds {
		cmds = append(cmds, fmt.Sprintf("nft -j list %s inet %s %s", kind, table, name))
	}
	sort.Strings(cmds)
	out, err = s.topo.Exec(s.ctx, 10*time.Second, nsPxy, "sh", "-c", strings.Join(cmds, " && "))
	if err != nil {
		return nftState{}, err
	}
	st.raw = out
	err = decodeNft(out, func(kind string, v nftObject) {
		if v.Table == table && (kind == "set" || kind == "map") {
			st.elems[v.Name] = len(v.Elem)
		}
		if v.Table == table && kind == "set" && v.Name == "owner" {
			for _, e := range v.Elem {
				var pid int
				if json.Unmarshal(e, &pid) == nil {
					st.owners = append(st.owners, pid)
				}
			}
			slices.Sort(st.owners)
		}
	})
	return st, err
}

// nftObject is the part of a set, map, chain or table object of nft's
// JSON output the suite reads.
type nftObject struct {
	Name  string            `json:"name"`
	Table string            `json:"table"`
	Elem  []json.RawMessage `json:"elem"`
}

// decodeNft calls fn for each object of the JSON documents in out (one
// per nft command).
func decodeNft(out string, fn func(kind string, v nftObject)) error {
	dec := json.NewDecoder(strings.NewReader(out))
	for {
		var doc struct {
			Nftables []map[string]json.RawMessage `json:"nftables"`
		}
		if err := dec.Decode(&doc); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("nft -j: %w: %s", err, peers.Tail(out, 300))
		}
		for _, obj := range doc.Nftables {
			for kind, body := range obj {
				var v nftObject
				if json.Unmarshal(body, &v) == nil {
					fn(kind, v)
				}
			}
		}
	}
}

// describe lists the sets that hold elements.
func (st nftState) describe() string {
	var parts []string
	for _, name := range tableSets {
		parts = append(parts, fmt.Sprintf("%s %d", name, st.elems[name]))
	}
	return strings.Join(parts, ", ")
}

// empty reports whether the sets of redirects and dead marks are empty
// (the owner set holds the proxy's process ID for as long as it runs).
func (st nftState) empty() bool {
	for _, name := range tableSets {
		if st.elems[name] != 0 {
			return false
		}
	}
	return true
}

// waitEmpty waits up to limit for every set and map of the table to be
// empty (gate4 gate6 keys4 keys6 dnat4 dnat6 snat4 snat6 dead).
func (s *suite) waitEmpty(table string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	start := time.Now()
	for {
		st, err := s.nftTable(table)
		if err != nil {
			return err
		}
		if !st.exists {
			return fmt.Errorf("table inet %s does not exist", table)
		}
		for _, name := range tableSets {
			if _, ok := st.elems[name]; !ok {
				return fmt.Errorf("table inet %s has no set %s", table, name)
			}
		}
		if st.empty() {
			s.tl.Note("table inet %s empty after %s", table, time.Since(start).Round(10*time.Millisecond))
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("table inet %s still holds elements %s after the transfer ended: %s\n%s", table, limit, st.describe(), peers.Tail(st.raw, 1500))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ctFlow is a conntrack entry of a flow the kernel data path redirected.
type ctFlow struct {
	mark                        uint32
	orig, reply                 string
	origDst, replySrc, replyDst string
	state                       uint8
	origBytes                   uint64
	replyBytes                  uint64
}

func (f ctFlow) String() string {
	return fmt.Sprintf("mark %#x %s / reply %s, TCP state %d, %d bytes orig, %d bytes reply", f.mark, f.orig, f.reply, f.state, f.origBytes, f.replyBytes)
}

// ctKernelFlows dumps the conntrack table of the proxy's namespace (what
// `conntrack -L` shows) and returns the flows with the kernel path's
// marks, 0x465xxxxx.
func (s *suite) ctKernelFlows() ([]ctFlow, error) {
	var out []ctFlow
	err := s.topo.In(nsPxy, func() error {
		c, err := conntrack.Dial(nil)
		if err != nil {
			return err
		}
		defer c.Close()
		flows, err := c.Dump(nil)
		if err != nil {
			return err
		}
		for _, f := range flows {
			if f.Mark&0xfff00000 != 0x46500000 {
				continue
			}
			cf := ctFlow{mark: f.Mark,
				orig: fmt.Sprintf("%s:%d -> %s:%d", f.TupleOrig.IP.SourceAddress, f.TupleOrig.Proto.SourcePort,
					f.TupleOrig.IP.DestinationAddress, f.TupleOrig.Proto.DestinationPort),
				reply: fmt.Sprintf("%s:%d -> %s:%d", f.TupleReply.IP.SourceAddress, f.TupleReply.Proto.SourcePort,
					f.TupleReply.IP.DestinationAddress, f.TupleReply.Proto.DestinationPort),
				origDst:   f.TupleOrig.IP.DestinationAddress.Unmap().String(),
				replySrc:  f.TupleReply.IP.SourceAddress.Unmap().String(),
				replyDst:  f.TupleReply.IP.DestinationAddress.Unmap().String(),
				origBytes: f.CountersOrig.Bytes, replyBytes: f.CountersReply.Bytes}
			if f.ProtoInfo.TCP != nil {
				cf.state = f.ProtoInfo.TCP.State
			}
			out = append(out, cf)
		}
		return nil
	})
	return out, err
}

// --- processes ---------------------------------------------------------------

var (
	clkTckOnce sync.Once
	clkTck     float64
)

// cpuSeconds is the user and system time of a process so far.
func cpuSeconds(pid int) (float64, error) {
	clkTckOnce.Do(func() {
		clkTck = 100
		if out, err := exec.Command("getconf", "CLK_TCK").Output(); err == nil {
			if v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64); err == nil && v > 0 {
				clkTck = v
			}
		}
	})
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name, which is in parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	// utime and stime: fields 14 and 15 of the line, 12 and 13 here.
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, b)
	}
	return (ut + st) / clkTck, nil
}

// descendants returns the PIDs of every process below pid.
func descendants(pid int) map[int]bool {
	parent := map[int]int{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		me, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		pp, _ := strconv.Atoi(f[1])
		parent[me] = pp
	}
	out := map[int]bool{}
	for me := range parent {
		for p := parent[me]; p > 1; p = parent[p] {
			if p == pid {
				out[me] = true
				break
			}
		}
	}
	return out
}

// --- clients -----------------------------------------------------------------

// curlResult is one curl run.
type curlResult struct {
	out     string // stdout and stderr, or stderr alone when stdout was hashed
	n       int64  // bytes curl wrote to stdout, when hashed
	sum     string // their sha256
	err     error
	elapsed time.Duration
	argv    []string
}

func (r curlResult) failure(what string) error {
	return fmt.Errorf("%s\n$ %s\nexit: %v after %s\n%s", what, peers.ShellQuote(r.argv), r.err, r.elapsed.Round(time.Millisecond), peers.Tail(r.out, 2000))
}

// curl runs curl in ns with the test user's login and bounded time; with
// hash its stdout is hashed (the download's bytes) instead of kept.
func (s *suite) curl(ns, source string, hash bool, args ...string) curlResult {
	argv := append([]string{"curl", "-sS", "--max-time", "120", "--connect-timeout", "10",
		"--interface", source, "--user", peers.User + ":" + peers.Password}, args...)
	var r curlResult
	r.argv = argv
	s.topo.In(ns, func() error {
		ctx, cancel := context.WithTimeout(s.ctx, 150*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.WaitDelay = 3 * time.Second
		var errb bytes.Buffer
		h := sha256.New()
		cw := &countWriter{w: h}
		if hash {
			cmd.Stdout, cmd.Stderr = cw, &errb
		} else {
			cmd.Stdout, cmd.Stderr = &errb, &errb
		}
		start := time.Now()
		r.err = cmd.Run()
		r.elapsed = time.Since(start)
		r.out = errb.String()
		r.n, r.sum = cw.n, hex.EncodeToString(h.Sum(nil))
		if ctx.Err() == context.DeadlineExceeded {
			r.err = fmt.Errorf("timed out (%v)", r.err)
		}
		return nil
	})
	return r
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// ftpURL is the URL of path on host:port.
func ftpURL(host string, port int, path string) string {
	return "ftp://" + hostPort(host, port) + "/" + path
}

// roundTrip downloads down.Name and uploads up (as remote) with curl in
// ns, with extra options, and checks both byte for byte: the download's
// sha256 as it streams out of curl, the upload's on the server's disk.
func (s *suite) roundTrip(ns, source, host string, port int, srv *peers.Server, down peers.File, up peers.File, remote string, extra ...string) error {
	args := append(append([]string{}, extra...), ftpURL(host, port, down.Name))
	r := s.curl(ns, source, true, args...)
	if r.err != nil {
		return r.failure("download failed")
	}
	if err := sameSum("download "+down.Name, r.n, r.sum, down); err != nil {
		return r.failure(err.Error())
	}
	args = append(append([]string{}, extra...), "-T", up.Path, ftpURL(host, port, remote))
	r = s.curl(ns, source, false, args...)
	if r.err != nil {
		return r.failure("upload failed")
	}
	defer os.Remove(srv.Path(remote))
	if err := peers.SameContent(srv.Path(remote), up.Size, up.Sum); err != nil {
		return r.failure("upload: " + err.Error())
	}
	return nil
}
