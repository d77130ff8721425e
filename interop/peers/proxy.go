package peers

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// ProxyConfig says how StartProxy runs ftpproxy.
type ProxyConfig struct {
	Bin          string // the ftpproxy binary
	Listen       string // --listen, host:port
	Upstream     string // --upstream, host:port
	PassivePorts string // --passive-ports, "lo-hi"
	LogPath      string // file that receives the proxy's JSON log (stdout and stderr)
	// Args are further flags, appended after the others, for instance
	// {"--upstream-data-mode", "passive"} or {"--proxy-protocol-from",
	// "127.0.0.5"}.
	Args []string
	// ProbeSource, if set, is the local IP the start-up check connects
	// from; pick one outside --proxy-protocol-from, whose sources must
	// send a PROXY header first.
	ProbeSource string
}

// Proxy is a running ftpproxy.
type Proxy struct {
	Listen  string // address it listens on
	LogPath string // its JSON log

	cmd     *exec.Cmd
	waitErr chan error
}

// StartProxy starts ftpproxy with a JSON log at debug level, in a process
// group of its own, and waits until it answers on cfg.Listen with a 220
// greeting (passed through from the upstream).
func StartProxy(ctx context.Context, cfg ProxyConfig) (*Proxy, error) {
	logf, err := os.Create(cfg.LogPath)
	if err != nil {
		return nil, err
	}
	args := []string{"--listen", cfg.Listen, "--upstream", cfg.Upstream, "--passive-ports", cfg.PassivePorts,
		"--log-format", "json", "--log-level", "debug"}
	cmd := exec.Command(cfg.Bin, append(args, cfg.Args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &Proxy{Listen: cfg.Listen, LogPath: cfg.LogPath, cmd: cmd, waitErr: make(chan error, 1)}
	go func() { p.waitErr <- cmd.Wait(); logf.Close() }()
	if err := waitGreeting(ctx, cfg.Listen, cfg.ProbeSource, 10*time.Second, p.waitErr); err != nil {
		p.Stop()
		out, _ := os.ReadFile(cfg.LogPath)
		return nil, fmt.Errorf("ftpproxy did not come up on %s: %v\n%s", cfg.Listen, err, Tail(string(out), 2000))
	}
	return p, nil
}

// PID returns the proxy's process ID, or 0 once stopped.
func (p *Proxy) PID() int {
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Stop sends SIGTERM and waits up to 40 s (the proxy drains sessions for
// up to 30 s by default), then kills it. It returns the process's exit
// error, or an error if it had to be killed; calling it again returns nil.
func (p *Proxy) Stop() error {
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

// Log returns the proxy's log so far.
func (p *Proxy) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// LogSize returns the length of the proxy's log now: where the lines of
// what follows start.
func (p *Proxy) LogSize() int64 {
	fi, err := os.Stat(p.LogPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// HealthGet sends GET path to a proxy's --health endpoint at addr, a bare
// HTTP/1.0 request from the namespace of the calling goroutine (the
// endpoint listens on the proxy's loopback, which no HTTP client outside
// reaches), and returns the body of the answer, whatever its status.
func HealthGet(addr, path string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.0\r\nHost: health\r\n\r\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return "", err
	}
	_, body, _ := strings.Cut(string(b), "\r\n\r\n")
	return body, nil
}

// ReadTransfers reads a proxy's JSON log and returns the "down" and "up"
// byte counts of its "transfer" lines, in log order. Lines that are not
// JSON or not "transfer" lines are skipped.
func ReadTransfers(logPath string) (downs, ups []int64, err error) {
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
