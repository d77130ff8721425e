//go:build interop

package faults

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

var (
	flagSoakDuration = flag.Duration("soak-duration", 150*time.Second, "how long the soak starts new sessions")
	flagSoakClients  = flag.Int("soak-clients", 200, "concurrent soak clients")
	flagSoakServer   = flag.String("soak-server", "vsftpd", "the server behind the proxy in the soak: vsftpd or proftpd")
	flagSoakSubprocs = flag.Int("soak-subprocs", 16, "curl/ftplib processes running at once at most (the rest are Go clients)")
	flagSoakUpKill   = flag.Duration("soak-upkill", 2*time.Second, "how often an upstream session process is killed (0: never)")
	flagSoakFault    = flag.Float64("soak-fault", 0.15, "fraction of transfers with a client-side fault")
	flagSoakSeed     = flag.Uint64("soak-seed", 0, "random seed (0: from the clock)")
	flagSoakGOGC     = flag.String("soak-gogc", "10", "GOGC for the soak's proxy (empty: unset): low enough that the runtime's cached splice pipes are freed within the final settle time")
)

// Ports of the soak (inside soak.sh's own network namespace).
const (
	soakHealth  = proxyIP + ":2170"
	soakListen  = proxyIP + ":2171"
	soakServer  = 2172
	soakPassive = "25000-25099"
)

// soakStats counts transfers by verdict and detail.
type soakStats struct {
	mu        sync.Mutex
	verdicts  map[verdict]int
	reasons   map[string]int
	examples  map[verdict][]string
	sessions  map[string]int
	attempted int
}

func (st *soakStats) add(v verdict, reason, example string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.attempted++
	st.verdicts[v]++
	st.reasons[string(v)+": "+reason]++
	if len(st.examples[v]) < 5 && v != vOK {
		st.examples[v] = append(st.examples[v], example)
	}
}

func (st *soakStats) session(what string) {
	st.mu.Lock()
	st.sessions[what]++
	st.mu.Unlock()
}

// reasonOf names the outcome of a transfer for the summary.
func reasonOf(x xferResult) string {
	switch {
	case x.code != 0 && x.fault != "":
		return fmt.Sprintf("%d after %s", x.code, x.fault)
	case x.code != 0:
		return fmt.Sprint(x.code)
	case x.fault != "":
		return x.fault
	}
	return "no reply"
}

type soak struct {
	srv    *peers.Server
	px     *proxyProc
	files  []peers.File
	work   string
	stats  *soakStats
	subSem chan struct{}
	upload atomic.Int64
	clKill atomic.Int64
	upKill atomic.Int64
	// What the upstream killer saw: session process trees summed over its
	// ticks.
	upSeen, upTicks atomic.Int64
}

func TestSoak(t *testing.T) {
	ctx := context.Background()
	proxyGOGC = *flagSoakGOGC
	work := newWork(t, "ftpproxy-soak-")
	seed := *flagSoakSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	kind, ok := peers.KindByName(*flagSoakServer)
	if !ok {
		t.Fatalf("-soak-server %q: want vsftpd or proftpd", *flagSoakServer)
	}
	s := &soak{work: work, subSem: make(chan struct{}, *flagSoakSubprocs), stats: &soakStats{
		verdicts: map[verdict]int{}, reasons: map[string]int{}, examples: map[verdict][]string{}, sessions: map[string]int{}}}
	sizes := []int64{0, 1, 1000, 65536, 300000, 1 << 20, 3 << 20, 8 << 20, 16 << 20}
	for i, n := range sizes {
		f, err := peers.WriteRandom(filepath.Join(work, fmt.Sprintf("s%d.bin", i)), n, uint64(100+i))
		if err != nil {
			t.Fatal(err)
		}
		s.files = append(s.files, f)
	}
	var err error
	if s.srv, err = peers.StartServer(ctx, kind, *flagPeers, work, serverIP, soakServer, peers.PassivePorts(25100, 25399)); err != nil {
		t.Fatal(err)
	}
	defer s.srv.Stop()
	for _, f := range s.files {
		if err := os.Link(f.Path, s.srv.Path(f.Name)); err != nil {
			t.Fatal(err)
		}
	}
	if s.px, err = startProxy(ctx, "soak", work, soakListen, soakHealth, s.srv.Addr(), soakPassive,
		"--log-level", "info", "--data-accept-timeout", "20s", "--dial-timeout", "10s"); err != nil {
		t.Fatal(err)
	}
	defer s.px.kill()
	base, err := s.px.idle(15 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("soak: %d clients for %v against %s, seed %d, client faults %.0f%%, an upstream session killed every %v\n",
		*flagSoakClients, *flagSoakDuration, kind.Name, seed, 100**flagSoakFault, *flagSoakUpKill)
	fmt.Printf("soak: proxy at start: %s\n", base)

	deadline := time.Now().Add(*flagSoakDuration)
	stopKill := make(chan struct{})
	var killer sync.WaitGroup
	if *flagSoakUpKill > 0 {
		killer.Go(func() {
			rng := rand.New(rand.NewPCG(seed, 7))
			tick := time.NewTicker(*flagSoakUpKill)
			defer tick.Stop()
			for {
				select {
				case <-stopKill:
					return
				case <-tick.C:
				}
				trees := sessionTrees(s.srv.PID())
				s.upSeen.Add(int64(len(trees)))
				s.upTicks.Add(1)
				if len(trees) == 0 {
					continue
				}
				for _, pid := range trees[rng.IntN(len(trees))] {
					syscall.Kill(pid, syscall.SIGKILL)
				}
				s.upKill.Add(1)
			}
		})
	}
	var peak atomic.Int64
	stopPeek := make(chan struct{})
	var peeker sync.WaitGroup
	peeker.Go(func() {
		for {
			select {
			case <-stopPeek:
				return
			case <-time.After(2 * time.Second):
			}
			if h, err := s.px.readHealth(); err == nil && int64(h.sessions) > peak.Load() {
				peak.Store(int64(h.sessions))
			}
		}
	})
	var wg sync.WaitGroup
	for i := range *flagSoakClients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(i)+1000))
			for time.Now().Before(deadline) {
				if rng.Float64() < 0.2 {
					select {
					case s.subSem <- struct{}{}:
						s.subprocess(rng)
						<-s.subSem
						continue
					default:
					}
				}
				s.goSession(rng, deadline)
			}
		})
	}
	wg.Wait()
	close(stopKill)
	killer.Wait()
	close(stopPeek)
	peeker.Wait()
	end, settleErr := s.px.settle(base, 60*time.Second)

	st := s.stats
	lost, unclear := st.verdicts[vLost], st.verdicts[vUnclear]
	passed := st.verdicts[vOK] + st.verdicts[vFailed] + st.verdicts[vAborted] + st.verdicts[vDiscarded]
	fmt.Printf("soak: transfers attempted %d: succeeded byte-exact %d, failed with a clear error %d, aborted by the client's own fault %d, reset by the client after its TCP had every byte %d, lost %d, unclear %d\n",
		st.attempted, st.verdicts[vOK], st.verdicts[vFailed], st.verdicts[vAborted], st.verdicts[vDiscarded], lost, unclear)
	var keys []string
	for k := range st.reasons {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("soak:   %-40s %d\n", k, st.reasons[k])
	}
	fmt.Printf("soak: sessions: %v; peak sessions seen %d\n", st.sessions, peak.Load())
	fmt.Printf("soak: faults injected: %d upstream sessions killed (the server had %.0f sessions on average when one was picked), %d client processes killed\n",
		s.upKill.Load(), float64(s.upSeen.Load())/float64(max(s.upTicks.Load(), 1)), s.clKill.Load())
	for _, v := range []verdict{vLost, vUnclear, vFailed} {
		for _, ex := range st.examples[v] {
			fmt.Printf("soak: example %s: %s\n", v, ex)
		}
	}
	fmt.Printf("soak: proxy at start: %s\n", base)
	fmt.Printf("soak: proxy at end:   %s\n", end)
	if settleErr != nil {
		fmt.Printf("soak: LEAK: %v\n", settleErr)
	}
	if s.px.exited() {
		fmt.Printf("soak: the proxy exited: %v\n", s.px.exitErr)
	}
	fmt.Printf("soak: %d passed, %d failed\n", passed, lost+unclear)
	if lost > 0 || unclear > 0 || settleErr != nil || s.px.exited() {
		fmt.Printf("work directory kept: %s\n", work)
		t.Fail()
	} else if !*flagKeep && *flagWork == "" {
		defer os.RemoveAll(work)
	}
}

var modes = []string{"pasv", "epsv", "port", "eprt"}

// goSession runs one session of the Go client: login and one to three
// transfers, some with a client-side fault.
func (s *soak) goSession(rng *rand.Rand, deadline time.Time) {
	f, greet, err := dialFTP(soakListen, clientIP, 30*time.Second)
	if err != nil {
		s.stats.session("connect failed: " + firstLine(err.Error()))
		return
	}
	defer f.close()
	if greet.code != 220 {
		s.stats.session(fmt.Sprintf("greeting %d", greet.code))
		return
	}
	if err := f.login(peers.User, peers.Password); err != nil {
		s.stats.session("login failed: " + firstLine(err.Error()))
		return
	}
	s.stats.session("logged in")
	for n := 1 + rng.IntN(3); n > 0 && time.Now().Before(deadline); n-- {
		file := s.files[rng.IntN(len(s.files))]
		o := xferOpts{mode: modes[rng.IntN(len(modes))]}
		if file.Size > 0 && rng.Float64() < *flagSoakFault {
			o.fault = []string{faultKill, faultResetData, faultResetCtl}[rng.IntN(3)]
			o.faultAt = rng.Int64N(file.Size)
		}
		var x xferResult
		var v verdict
		if rng.IntN(2) == 0 {
			x = f.retr(file.Name, o)
			v = judgeRetr(x, file)
		} else {
			name := fmt.Sprintf("u%d.bin", s.upload.Add(1))
			x = f.stor(name, file.Path, o)
			v = judgeStor(x, s.srv.Path(name), file)
			os.Remove(s.srv.Path(name))
		}
		s.stats.add(v, "go "+reasonOf(x), x.String())
		if x.fault != "" || x.code == 0 || x.code == 421 {
			return // the session is gone
		}
	}
	f.quit()
}

// subprocess runs one curl or paced-ftplib transfer, killed mid-way now
// and then.
func (s *soak) subprocess(rng *rand.Rand) {
	file := s.files[rng.IntN(len(s.files))]
	mode := modes[rng.IntN(len(modes))]
	client := []string{"curl", "ftplib"}[rng.IntN(2)]
	down := rng.IntN(2) == 0
	n := s.upload.Add(1)
	local := filepath.Join(s.work, fmt.Sprintf("l%d.bin", n))
	remote := fmt.Sprintf("p%d.bin", n)
	url := "ftp://" + soakListen + "/"
	var argv []string
	switch {
	case client == "curl" && down:
		argv = curlArgv(soakListen, mode, "", "-o", local, url+file.Name)
	case client == "curl":
		argv = curlArgv(soakListen, mode, "", "-T", file.Path, url+remote)
	case down:
		argv = slowPyArgv(soakListen, mode, "get", file.Name, local, 0)
	default:
		argv = slowPyArgv(soakListen, mode, "put", file.Path, remote, 0)
	}
	defer os.Remove(local)
	defer os.Remove(s.srv.Path(remote))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	logPath := local + ".out"
	defer os.Remove(logPath)
	cmd, err := startGroup(ctx, logPath, argv...)
	if err != nil {
		s.stats.add(vUnclear, client+" start failed", err.Error())
		return
	}
	kill := file.Size > 0 && rng.Float64() < *flagSoakFault
	if kill {
		time.AfterFunc(time.Duration(rng.IntN(300))*time.Millisecond, func() {
			if syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) == nil {
				s.clKill.Add(1)
			}
		})
	}
	werr := cmd.Wait()
	out, _ := os.ReadFile(logPath)
	desc := fmt.Sprintf("%s %s %s %s: %v: %s", client, map[bool]string{true: "get", false: "put"}[down], file.Name, mode, werr, peers.Tail(string(out), 300))
	var ee *exec.ExitError
	switch {
	case werr == nil:
		path := local
		if !down {
			path = s.srv.Path(remote)
		}
		if peers.SameContent(path, file.Size, file.Sum) == nil {
			s.stats.add(vOK, client+" exit 0", desc)
		} else {
			s.stats.add(vLost, client+" exit 0, bytes differ", desc)
		}
	case ctx.Err() != nil:
		s.stats.add(vUnclear, client+" timed out", desc)
	case kill && errorsAs(werr, &ee) && ee.ProcessState.Sys().(syscall.WaitStatus).Signaled():
		s.stats.add(vAborted, client+" killed", desc)
	case strings.Contains(string(out), "final 4") || strings.Contains(string(out), "final 5") || strings.Contains(string(out), "curl: ("):
		s.stats.add(vFailed, client+" "+clientError(string(out)), desc)
	default:
		s.stats.add(vUnclear, client+" failed without a reply", desc)
	}
}

// clientError picks the gist of a failed client's output.
func clientError(out string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "curl: (") {
			if i := strings.IndexByte(l, ')'); i > 0 {
				return l[:i+1]
			}
		}
		if strings.HasPrefix(l, "final ") {
			return l
		}
	}
	return "error"
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}
