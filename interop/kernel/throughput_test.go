//go:build interop

package kernel

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

// The goals the table is printed with. Speed is a goal, never a failure
// of the suite: the machines it runs on are shared and noisy. The kernel
// path's CPU bound fails the normal run (no process should be in the data
// path), and is a goal in -bench mode.
const (
	kernelSpeedGoal = 0.95 // kernel MB/s at least this share of direct, at the median
	kernelCPUGoal   = 0.05 // proxy CPU seconds per GiB carried, at most
)

// sample is one timed transfer.
type sample struct {
	bytes   int64
	elapsed time.Duration
	cpu     float64 // the proxy process's CPU seconds during it
}

func (x sample) mbps() float64 { return float64(x.bytes) / x.elapsed.Seconds() / 1e6 }

func (x sample) cpuPerGiB() float64 { return x.cpu / (float64(x.bytes) / (1 << 30)) }

// tpPath is one way to the server.
type tpPath struct {
	name string
	host string
	port int
	px   *proxyRun // nil for direct
}

// caseThroughput compares, round after round in the same run, direct
// transfers (routed through the proxy host, no proxy), the kernel path and
// the splice relay: a download of -download-mib streamed through sha256
// and an upload of -upload-mib checked on the server's disk, with curl.
func (s *suite) caseThroughput() {
	s.stopA() // its forward guard would drop the direct transfers
	rounds := *flagRounds
	if rounds <= 0 {
		rounds = 1
		if *flagBench {
			rounds = 5
		}
	}
	kern, err := s.startProxy(proxySpec{name: "kern", listen: hostPort(pxyWanIP, kernPort), upstream: hostPort(srvIP, serverPort),
		ports: rangeKern, health: healthKern,
		args: []string{"--data-path", "kernel", "--kernel-forward-guard=false", "--kernel-table", tableKern, "--log-level", "info"}})
	if err != nil {
		s.tl.Report("throughput/kernel-proxy", 0, err)
		return
	}
	defer kern.Stop()
	spl, err := s.startProxy(proxySpec{name: "splice", listen: hostPort(pxyWanIP, splicePort), upstream: hostPort(srvIP, serverPort),
		ports: rangeSplice, health: healthSplice, args: []string{"--data-path", "splice", "--log-level", "info"}})
	if err != nil {
		s.tl.Report("throughput/splice-proxy", 0, err)
		return
	}
	defer spl.Stop()
	paths := []tpPath{
		{"direct", srvIP, serverPort, nil},
		{"kernel", pxyWanIP, kernPort, kern},
		{"splice", pxyWanIP, splicePort, spl},
	}
	down := map[string][]sample{}
	up := map[string][]sample{}
	var errs []error
	off := kern.LogSize()
	start := time.Now()
	cpu := func(p tpPath) float64 {
		if p.px == nil {
			return 0
		}
		v, err := cpuSeconds(p.px.PID())
		if err != nil {
			errs = append(errs, err)
		}
		return v
	}
	if !*flagBench {
		fmt.Printf("    throughput: %d round(s) of RETR %d MiB and STOR %d MiB with curl, paths interleaved (direct, kernel, splice)\n", rounds, *flagDownMiB, *flagUpMiB)
	}
	for r := range rounds {
		for _, p := range paths {
			if s.ctx.Err() != nil {
				errs = append(errs, fmt.Errorf("round %d %s: the suite's budget is spent", r+1, p.name))
				break
			}
			c0 := cpu(p)
			res := s.curl(nsCli, cliIP, true, "--ftp-pasv", ftpURL(p.host, p.port, s.big.Name))
			c1 := cpu(p)
			if res.err != nil {
				errs = append(errs, p.px.withLog(res.failure(fmt.Sprintf("round %d %s download", r+1, p.name))))
			} else if err := sameSum(fmt.Sprintf("round %d %s download", r+1, p.name), res.n, res.sum, s.big); err != nil {
				errs = append(errs, err)
			} else {
				down[p.name] = append(down[p.name], sample{res.n, res.elapsed, c1 - c0})
			}
			remote := fmt.Sprintf("up-%s-%d.bin", p.name, r)
			c0 = cpu(p)
			res = s.curl(nsCli, cliIP, false, "--ftp-pasv", "-T", s.up.Path, ftpURL(p.host, p.port, remote))
			c1 = cpu(p)
			if res.err != nil {
				errs = append(errs, p.px.withLog(res.failure(fmt.Sprintf("round %d %s upload", r+1, p.name))))
			} else if err := peers.SameContent(s.srv.Path(remote), s.up.Size, s.up.Sum); err != nil {
				errs = append(errs, fmt.Errorf("round %d %s upload: %w", r+1, p.name, err))
			} else {
				up[p.name] = append(up[p.name], sample{s.up.Size, res.elapsed, c1 - c0})
			}
			os.Remove(s.srv.Path(remote))
			if !*flagBench {
				d, u := last(down[p.name]), last(up[p.name])
				fmt.Printf("    round %d  %-7s download %7.1f MB/s  upload %7.1f MB/s  proxy CPU %.3f / %.3f s\n", r+1, p.name, d.mbpsOr0(), u.mbpsOr0(), d.cpu, u.cpu)
			}
		}
	}
	elapsed := time.Since(start)
	s.printTable(paths, down, up, rounds)

	s.tl.Report("throughput/byte-exact", elapsed, errors.Join(errs...))
	cpuOK := true
	var cpuErr error
	if ks := append(slices.Clone(down["kernel"]), up["kernel"]...); len(ks) > 0 {
		var c float64
		var b int64
		for _, x := range ks {
			c += x.cpu
			b += x.bytes
		}
		per := c / (float64(b) / (1 << 30))
		cpuOK = per < kernelCPUGoal
		if !cpuOK {
			cpuErr = fmt.Errorf("the kernel path's proxy used %.3f s of CPU for %.2f GiB: %.3f s/GiB, want < %.2f", c, float64(b)/(1<<30), per, kernelCPUGoal)
		}
	} else {
		cpuErr = errors.New("no kernel-path transfer completed")
	}
	s.goals(down, up, cpuOK)
	if !*flagBench {
		s.tl.Report("throughput/kernel-proxy-cpu", 0, cpuErr)
	}
	s.tl.Run("throughput/kernel-log", func() error {
		want := len(down["kernel"]) + len(up["kernel"])
		var ts []logLine
		deadline := time.Now().Add(5 * time.Second)
		for {
			if ts = kern.transfers(off); len(ts) >= want || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		return kern.withLog(allKernel(ts, want))
	})
}

func last(xs []sample) sample {
	if len(xs) == 0 {
		return sample{}
	}
	return xs[len(xs)-1]
}

func (x sample) mbpsOr0() float64 {
	if x.elapsed == 0 {
		return 0
	}
	return x.mbps()
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	ys := slices.Clone(xs)
	slices.Sort(ys)
	if len(ys)%2 == 1 {
		return ys[len(ys)/2]
	}
	return (ys[len(ys)/2-1] + ys[len(ys)/2]) / 2
}

func medianOf(xs []sample, f func(sample) float64) float64 {
	var v []float64
	for _, x := range xs {
		v = append(v, f(x))
	}
	return median(v)
}

// printTable prints the medians per path and direction, the ratios to
// direct and the proxies' CPU per GiB.
func (s *suite) printTable(paths []tpPath, down, up map[string][]sample, rounds int) {
	fmt.Printf("\nKernel data path: RETR %d MiB (streamed through sha256) and STOR %d MiB with curl, EPSV;\n", *flagDownMiB, *flagUpMiB)
	fmt.Printf("client behind a NAT router -> proxy host -> vsftpd, each in a network namespace; medians over %d round(s),\n", rounds)
	fmt.Printf("paths interleaved; MB = 10^6 bytes; CPU = the proxy process (utime+stime from /proc/PID/stat)\n\n")
	fmt.Printf("%-8s %14s %14s %12s %12s %16s %16s\n", "path", "download MB/s", "upload MB/s", "down/direct", "up/direct", "CPU s/GiB down", "CPU s/GiB up")
	fmt.Printf("%s\n", strings.Repeat("-", 98))
	dd := medianOf(down["direct"], sample.mbps)
	du := medianOf(up["direct"], sample.mbps)
	for _, p := range paths {
		md := medianOf(down[p.name], sample.mbps)
		mu := medianOf(up[p.name], sample.mbps)
		ratio := func(v, base float64) string {
			if base == 0 || v == 0 {
				return "-"
			}
			return fmt.Sprintf("%.3f", v/base)
		}
		cpuD, cpuU := "-", "-"
		if p.px != nil {
			if len(down[p.name]) > 0 {
				cpuD = fmt.Sprintf("%.3f", medianOf(down[p.name], sample.cpuPerGiB))
			}
			if len(up[p.name]) > 0 {
				cpuU = fmt.Sprintf("%.3f", medianOf(up[p.name], sample.cpuPerGiB))
			}
		}
		fmt.Printf("%-8s %14.1f %14.1f %12s %12s %16s %16s\n", p.name, md, mu, ratio(md, dd), ratio(mu, du), cpuD, cpuU)
	}
}

// goals prints the goal lines: the kernel path's speed against direct
// (informational) and its proxy CPU.
func (s *suite) goals(down, up map[string][]sample, cpuOK bool) {
	passMiss := func(ok bool) string {
		if ok {
			return "PASS"
		}
		return "MISS"
	}
	ratio := func(m map[string][]sample) float64 {
		d := medianOf(m["direct"], sample.mbps)
		if d == 0 {
			return 0
		}
		return medianOf(m["kernel"], sample.mbps) / d
	}
	dr, ur := ratio(down), ratio(up)
	fmt.Printf("\nGoals (speed informational: shared machines are noisy)\n")
	fmt.Printf("  %-4s  kernel download >= %.2f of direct at the median: %.3f\n", passMiss(dr >= kernelSpeedGoal), kernelSpeedGoal, dr)
	fmt.Printf("  %-4s  kernel upload >= %.2f of direct at the median: %.3f\n", passMiss(ur >= kernelSpeedGoal), kernelSpeedGoal, ur)
	var c float64
	var b int64
	for _, x := range append(slices.Clone(down["kernel"]), up["kernel"]...) {
		c += x.cpu
		b += x.bytes
	}
	per := 0.0
	if b > 0 {
		per = c / (float64(b) / (1 << 30))
	}
	fmt.Printf("  %-4s  kernel path proxy CPU < %.2f s/GiB: %.3f (%.2f s for %.2f GiB)\n", passMiss(cpuOK), kernelCPUGoal, per, c, float64(b)/(1<<30))
	sp := 0.0
	var sc float64
	var sb int64
	for _, x := range append(slices.Clone(down["splice"]), up["splice"]...) {
		sc += x.cpu
		sb += x.bytes
	}
	if sb > 0 {
		sp = sc / (float64(sb) / (1 << 30))
	}
	fmt.Printf("        (splice relay proxy CPU: %.3f s/GiB)\n\n", sp)
}
