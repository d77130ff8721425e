package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a child process the benchmark started and must stop.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	log  string
}

// startProc starts argv with stdout and stderr in logPath; the child gets
// SIGKILL if the benchmark dies.
func startProc(name, logPath string, argv ...string) (*proc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = lf
	cmd.Stderr = lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail returns the end of the process's log, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// stop sends SIGTERM, waits up to grace, then SIGKILL.
func (p *proc) stop(grace time.Duration) {
	if p == nil || p.exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(grace):
	}
	p.cmd.Process.Kill()
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
}

// descendants lists the pids of every process below pid whose command is
// comm: vsftpd's session processes, which run in sessions of their own.
func descendants(pid int, comm string) []int {
	ents, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		f := statFields(b)
		if len(f) < 5 || f[2] != comm {
			continue
		}
		if pp, err := strconv.Atoi(f[4]); err == nil {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// reapPIDs stops the given processes one pid at a time: SIGTERM, then
// SIGKILL for those still alive after grace. It returns how many needed it.
func reapPIDs(pids []int, grace time.Duration) int {
	for _, p := range pids {
		syscall.Kill(p, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	alive := func() []int {
		var left []int
		for _, p := range pids {
			if syscall.Kill(p, 0) == nil {
				left = append(left, p)
			}
		}
		return left
	}
	left := alive()
	for len(left) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		left = alive()
	}
	for _, p := range left {
		syscall.Kill(p, syscall.SIGKILL)
	}
	return len(pids)
}

// statFields splits /proc/PID/stat so that f[n] is field n as proc(5)
// numbers them (1-based): f[1] pid, f[2] comm without its parentheses,
// f[4] ppid, f[14] utime, f[15] stime.
func statFields(b []byte) []string {
	i := bytes.IndexByte(b, '(')
	j := bytes.LastIndexByte(b, ')')
	if i < 0 || j < i {
		return nil
	}
	head := []string{"", strings.TrimSpace(string(b[:i])), string(b[i+1 : j])}
	return append(head, strings.Fields(string(b[j+1:]))...)
}

// waitReady waits until addr answers with a 220 greeting, or p exits.
func waitReady(p *proc, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if p.exited() {
			return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, p.tail())
		}
		c, err := dialFTP(addr, time.Second)
		if err == nil {
			c.quit()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready on %s after %v: %v\n%s", p.name, addr, timeout, err, p.tail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pickPort returns want if 127.0.0.1:want can be bound, else a free port
// the kernel chooses.
func pickPort(want int) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(want)))
	if err == nil {
		l.Close()
		return want, nil
	}
	l, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// cpuBusyTicks returns the machine's busy time from /proc/stat in USER_HZ
// ticks (1/100 s): user, nice, system, irq, softirq and steal, all CPUs.
func cpuBusyTicks() (uint64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return 0, errors.New("unexpected /proc/stat")
	}
	var busy uint64
	for _, k := range []int{1, 2, 3, 6, 7, 8} { // user nice system irq softirq steal
		v, err := strconv.ParseUint(f[k], 10, 64)
		if err != nil {
			return 0, err
		}
		busy += v
	}
	return busy, nil
}

// procCPUTicks returns a process's utime+stime in USER_HZ ticks.
func procCPUTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	f := statFields(b)
	if len(f) < 16 {
		return 0, errors.New("unexpected /proc/PID/stat")
	}
	u, err1 := strconv.ParseUint(f[14], 10, 64)
	s, err2 := strconv.ParseUint(f[15], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("unexpected /proc/PID/stat")
	}
	return u + s, nil
}

// vmRSSKiB returns VmRSS of a process in KiB.
func vmRSSKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, errors.New("no VmRSS")
}

// raiseNoFile lifts RLIMIT_NOFILE as far as the hard limit allows (65536
// at most) and returns the soft limit in force.
func raiseNoFile() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	want := uint64(65536)
	if rl.Max < want {
		// Raising the hard limit needs CAP_SYS_RESOURCE; try, then settle.
		try := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &try) == nil {
			return want
		}
		want = rl.Max
	}
	rl.Cur = want
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
	return rl.Cur
}
