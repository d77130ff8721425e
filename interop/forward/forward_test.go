//go:build interop

package forward

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
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
	flagPrefix   = flag.String("prefix", "", "prefix of the network namespaces this run creates (default ftpfwd-<pid>)")
	flagWork     = flag.String("work", "", "work directory (default: a new directory under $TMPDIR)")
	flagKeep     = flag.Bool("keep", false, "keep the work directory even when every case passed")
	flagMiB      = flag.Int("size", 4, "size of the files moved each way, in MiB")
	flagBudget   = flag.Duration("budget", 2*time.Minute+45*time.Second, "time the whole suite may take")
	flagCases    = flag.String("cases", "", "regular expression: run only the cases whose name matches (default: all)")
	flagParallel = flag.Int("parallel", 4, "client cases run at once")
	flagDirect   = flag.Bool("direct", false, "no proxy: run the client cases without proxy login straight at the servers, from the proxy's namespace (to check the client command lines)")
)

// Ports and ranges; they live in the run's own namespaces and are picked
// apart from the other suites' anyway.
const (
	serverPort = 21   // both servers: in --forward-ports' default 21,990
	trapPort   = 2121 // outside --forward-ports
	openPort   = 2100 // proxy "open": no proxy login, --allow-dest 0.0.0.0/0
	authPort   = 2101 // proxy "auth": --forward-users, a short --allow-dest

	vsftpdPasv  = "21600-21649"
	proftpdPasv = "21650-21699"
	openPasv    = "21700-21749"
	openActive  = "21750-21799"
	authPasv    = "21800-21849"
	authActive  = "21850-21899"
)

// The proxy account in --forward-users (the servers' account is
// peers.User / peers.Password).
const (
	proxyUser = "fwdproxy"
	proxyPass = "pxpass-fwd"
)

// opLimit bounds one client program run.
const opLimit = 60 * time.Second

// --- suite -------------------------------------------------------------------

type suite struct {
	ctx    context.Context
	topo   *peers.Topology
	tl     *peers.Tally
	work   string
	peers  string
	script string
	bin    string

	vsftpd, proftpd *peers.Server
	down, up        peers.File // down.bin on both servers; up.bin local
	traps           []*trap    // every destination a refusal names (trapAddrs)
	open, auth      *proxyProc
	usersFile       string
}

func TestForward(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), *flagBudget)
	defer cancel()
	tl := &peers.Tally{}
	start := time.Now()
	defer func() {
		if !tl.Summary("forward", start) {
			t.Fail()
		}
	}()
	var filter *regexp.Regexp
	if *flagCases != "" {
		var err error
		if filter, err = regexp.Compile(*flagCases); err != nil {
			tl.Report("cases", 0, fmt.Errorf("-cases: %w", err))
			return
		}
	}
	s := &suite{ctx: ctx, topo: newTopo(peers.NetnsPrefix(*flagPrefix, "ftpfwd")), tl: tl}
	defer s.topo.Destroy()
	defer s.teardown() // before the namespaces go
	if err := s.setup(); err != nil {
		tl.Report("setup", time.Since(start), err)
		return
	}

	// Sequential cases first: the refusals compare the proxies' logs and
	// the traps before and after, which only works with nothing else
	// running. The client programs then run a few at a time.
	var sequential, parallel []tcase
	sequential = append(sequential, s.topologyCases()...)
	if !*flagDirect {
		sequential = append(sequential, s.rawCases()...)
		sequential = append(sequential, s.trapControlCase())
		sequential = append(sequential, s.pipelinedCases()...)
		sequential = append(sequential, s.denyCases()...)
		sequential = append(sequential, s.clientDenyCases()...)
	}
	parallel = s.clientCases()
	selected := func(cs []tcase) []tcase {
		var out []tcase
		for _, c := range cs {
			if filter == nil || filter.MatchString(c.name) {
				out = append(out, c)
			}
		}
		return out
	}
	for _, c := range selected(sequential) {
		tl.RunNote(c.name, c.run)
	}
	work := make(chan tcase)
	var wg sync.WaitGroup
	for range max(1, *flagParallel) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range work {
				tl.RunNote(c.name, c.run)
			}
		}()
	}
	for _, c := range selected(parallel) {
		work <- c
	}
	close(work)
	wg.Wait()
	if !*flagDirect {
		s.tl.RunNote("proxy/exit", s.stopProxies)
	}
}

// trapAt is where a trap listens: a namespace role and host:port.
type trapAt struct{ ns, addr string }

// trapAddrs are the traps: every destination a refusal names, where a
// proxy that dialled before (or instead of) refusing would be seen.
var trapAddrs = []trapAt{
	{nsPxy, net.JoinHostPort("127.0.0.1", "21")},              // loopback, and loop.fwd.test
	{nsPxy, net.JoinHostPort(pxySrvIP, "21")},                 // the proxy's own address
	{nsSrv, net.JoinHostPort(trapIP, "21")},                   // in --allow-dest: wrong proxy logins, --forward-from
	{nsSrv, net.JoinHostPort(unlistedIP, "21")},               // outside the auth proxy's --allow-dest
	{nsSrv, net.JoinHostPort(trapIP, strconv.Itoa(trapPort))}, // a port outside --forward-ports
	{nsSrv, net.JoinHostPort(metaIP, "21")},                   // link-local, the metadata address
	{nsSrv, net.JoinHostPort(proftpdIP, "990")},               // a port proftpd's --allow-dest entry does not name
}

// tcase is one named case.
type tcase struct {
	name string
	run  func() (string, error)
}

// setup builds the topology, starts the servers, the traps and the
// proxies and writes the files.
func (s *suite) setup() error {
	if err := peers.Preflight("network namespaces and the servers", "ip", "curl", "lftp", "python3"); err != nil {
		return err
	}
	s.peers, s.script = *flagPeers, *flagScript
	if err := peers.AbsPaths(&s.peers, &s.script); err != nil {
		return err
	}
	var err error
	if s.bin, err = peers.ProxyBinary(*flagProxyBin); err != nil {
		return err
	}
	if err := s.topo.Build(s.ctx); err != nil {
		return fmt.Errorf("topology: %w", err)
	}
	if s.work, err = peers.WorkDir(*flagWork, "", "ftpfwd-"); err != nil {
		return err
	}
	fmt.Printf("forward: namespaces %s-{cli,pxy,srv}, work directory %s\n", s.topo.Prefix, s.work)

	start := func(kind peers.Kind, host, pasv string) (*peers.Server, error) {
		lo, hi, _ := strings.Cut(pasv, "-")
		l, _ := strconv.Atoi(lo)
		h, _ := strconv.Atoi(hi)
		return peers.Within(s.topo, nsSrv, func() (*peers.Server, error) {
			return peers.StartServer(s.ctx, kind, s.peers, s.work, host, serverPort, peers.PassivePorts(l, h))
		})
	}
	if s.vsftpd, err = start(peers.Vsftpd, vsftpdIP, vsftpdPasv); err != nil {
		return fmt.Errorf("vsftpd on %s: %w", vsftpdIP, err)
	}
	if s.proftpd, err = start(peers.ProFTPd, proftpdIP, proftpdPasv); err != nil {
		return fmt.Errorf("proftpd on %s: %w", proftpdIP, err)
	}
	size := int64(*flagMiB) << 20
	for _, srv := range []*peers.Server{s.vsftpd, s.proftpd} {
		if s.down, err = peers.WriteRandom(srv.Path("down.bin"), size, 1); err != nil {
			return err
		}
		// Uploads land in the root as the session account.
		if err := os.Chown(srv.Root, srv.UID, srv.GID); err != nil {
			return err
		}
	}
	if s.up, err = peers.WriteRandom(filepath.Join(s.work, "up.bin"), size, 2); err != nil {
		return err
	}

	for _, tr := range trapAddrs {
		err := s.topo.In(tr.ns, func() error {
			t, err := listenTrap(s.topo.Name(tr.ns)+" "+tr.addr, tr.addr)
			if err == nil {
				s.traps = append(s.traps, t)
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("trap on %s in %s: %w", tr.addr, s.topo.Name(tr.ns), err)
		}
	}
	if *flagDirect {
		return nil
	}

	if s.usersFile, err = s.writeUsers(); err != nil {
		return err
	}
	common := []string{"--forward-from", cliIn + "/32"}
	s.open, err = s.startProxy("open", openPort, append(common,
		"--allow-dest", "0.0.0.0/0",
		"--passive-ports", openPasv, "--active-ports", openActive)...)
	if err != nil {
		return err
	}
	s.auth, err = s.startProxy("auth", authPort, append(common,
		"--allow-dest", vsftpdIP+","+proftpdIP+":21,"+trapIP,
		"--allow-dest", vsftpdName+","+loopName,
		"--forward-users", s.usersFile,
		"--passive-ports", authPasv, "--active-ports", authActive)...)
	return err
}

// writeUsers makes the --forward-users file with `ftpproxy passwd`.
func (s *suite) writeUsers() (string, error) {
	ctx, cancel := context.WithTimeout(s.ctx, 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.bin, "passwd", proxyUser)
	cmd.Stdin = strings.NewReader(proxyPass + "\n")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("ftpproxy passwd %s: %v: %s", proxyUser, err, errb.String())
	}
	line := strings.TrimSpace(out.String())
	if !strings.HasPrefix(line, proxyUser+":$2") {
		return "", fmt.Errorf("ftpproxy passwd %s printed %q, want %s:<bcrypt hash>", proxyUser, line, proxyUser)
	}
	path := filepath.Join(s.work, "forward-users")
	body := "# made by ftpproxy passwd\n" + line + "\n"
	return path, os.WriteFile(path, []byte(body), 0o600)
}

func (s *suite) teardown() {
	s.stopProxies()
	for _, t := range s.traps {
		t.close()
	}
	for _, srv := range []*peers.Server{s.vsftpd, s.proftpd} {
		if srv != nil {
			srv.Stop()
		}
	}
	peers.CleanWorkDir("forward", s.work, !*flagKeep && s.tl.Failed() == 0 && *flagWork == "")
}

// stopProxies stops both proxies; each must exit 0 on SIGTERM.
func (s *suite) stopProxies() (string, error) {
	var errs []error
	for _, p := range []*proxyProc{s.open, s.auth} {
		if p != nil {
			if err := p.stop(); err != nil {
				errs = append(errs, fmt.Errorf("proxy %s: %w", p.name, err))
			}
		}
	}
	return "", errors.Join(errs...)
}

// --- the proxy -----------------------------------------------------------------

// proxyProc is one ftpproxy in forward mode, run with ip netns exec in the
// proxy's namespace so that it reads that namespace's hosts file.
type proxyProc struct {
	name    string
	addr    string // host:port it listens on
	logPath string

	mu      sync.Mutex // guards cmd
	cmd     *exec.Cmd
	waitErr chan error
}

// startProxy starts ftpproxy --forward listening on the proxy's client-side
// address and port, with a JSON debug log, and waits for its own 220.
func (s *suite) startProxy(name string, port int, extra ...string) (*proxyProc, error) {
	p := &proxyProc{
		name:    name,
		addr:    net.JoinHostPort(pxyCliIP, strconv.Itoa(port)),
		logPath: filepath.Join(s.work, "ftpproxy-"+name+".log"),
	}
	logf, err := os.Create(p.logPath)
	if err != nil {
		return nil, err
	}
	argv := append([]string{"ip", "netns", "exec", s.topo.Name(nsPxy), s.bin,
		"--forward", "--listen", p.addr,
		"--log-format", "json", "--log-level", "debug",
		// The refusals are failed logins; a ban would turn the cases
		// after them into refusals of another kind.
		"--max-login-failures", "0",
		"--drain-timeout", "2s", "--dial-timeout", "5s", "--data-accept-timeout", "15s",
	}, extra...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p.cmd, p.waitErr = cmd, make(chan error, 1)
	go func() { p.waitErr <- cmd.Wait(); logf.Close() }()
	err = s.topo.In(nsPxy, func() error { return peers.WaitGreeting(s.ctx, p.addr, 10*time.Second, p.waitErr) })
	if err != nil {
		p.stop()
		return nil, fmt.Errorf("ftpproxy %s did not come up on %s: %v\n$ %s\n%s", name, p.addr, err, peers.ShellQuote(argv), peers.Tail(p.log(0), 2000))
	}
	fmt.Printf("forward: proxy %s: %s\n", name, peers.ShellQuote(argv[4:]))
	return p, nil
}

// stop sends SIGTERM and waits up to 15 s (the drain is 2 s), then kills
// the proxy. It returns the exit error; calling it again returns nil.
func (p *proxyProc) stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return nil
	}
	pid := p.cmd.Process.Pid
	p.cmd = nil
	syscall.Kill(pid, syscall.SIGTERM)
	select {
	case err := <-p.waitErr:
		return err
	case <-time.After(15 * time.Second):
		syscall.Kill(-pid, syscall.SIGKILL)
		<-p.waitErr
		return errors.New("did not exit within 15 s of SIGTERM")
	}
}

// offset returns the length of the proxy's log now, to read what follows.
func (p *proxyProc) offset() int64 {
	fi, err := os.Stat(p.logPath)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// log returns the proxy's log from byte off on.
func (p *proxyProc) log(off int64) string {
	b, _ := os.ReadFile(p.logPath)
	if off > int64(len(b)) {
		return ""
	}
	return string(b[off:])
}

// event is one JSON line of the proxy's log.
type event map[string]any

func (e event) str(key string) string {
	v, ok := e[key]
	if !ok {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// events returns the JSON lines of the log from byte off on; other lines
// are skipped.
func (p *proxyProc) events(off int64) []event {
	var out []event
	sc := bufio.NewScanner(strings.NewReader(p.log(off)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e event
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			out = append(out, e)
		}
	}
	return out
}

// withLog adds the proxy's log from off on to a failure.
func (p *proxyProc) withLog(err error, off int64) error {
	if err == nil || p == nil {
		return err
	}
	return fmt.Errorf("%w\nproxy %s log %s from this case on (tail):\n%s", err, p.name, p.logPath, peers.Tail(p.log(off), 2500))
}

// --- topology ------------------------------------------------------------------

// topologyCases check that the clients cannot reach the servers except
// through the proxy (so a pass below means the proxy carried the data),
// and that every trap counts a connection made to it.
func (s *suite) topologyCases() []tcase {
	return []tcase{
		{"topology/client-cannot-reach-servers", func() (string, error) {
			type probe struct{ source, addr string }
			var probes []probe
			for _, src := range []string{cliIn, cliOut} {
				for _, host := range []string{vsftpdIP, proftpdIP, trapIP, metaIP} {
					probes = append(probes, probe{src, net.JoinHostPort(host, "21")})
				}
				// A passive port of each server, where the server
				// listens only after a PASV: no route must lead there.
				probes = append(probes, probe{src, net.JoinHostPort(vsftpdIP, "21600")})
			}
			errc := make(chan error, len(probes))
			for _, p := range probes {
				go func() {
					errc <- s.topo.In(nsCli, func() error {
						d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(p.source)}}
						c, err := d.Dial("tcp", p.addr)
						if err == nil {
							c.Close()
							return fmt.Errorf("%s reached %s from %s: the topology lets the client bypass the proxy", p.source, p.addr, s.topo.Name(nsCli))
						}
						return nil
					})
				}()
			}
			var errs []error
			for range probes {
				if err := <-errc; err != nil {
					errs = append(errs, err)
				}
			}
			return fmt.Sprintf("%d connect attempts from the client namespace failed", len(probes)), errors.Join(errs...)
		}},
		{"topology/proxy-reaches-servers-and-traps", func() (string, error) {
			for _, srv := range []*peers.Server{s.vsftpd, s.proftpd} {
				err := s.topo.In(nsPxy, func() error { return peers.WaitGreeting(s.ctx, srv.Addr(), 5*time.Second, nil) })
				if err != nil {
					return "", fmt.Errorf("%s on %s from the proxy's namespace: %w", srv.Kind.Name, srv.Addr(), err)
				}
			}
			for _, t := range s.traps {
				before := t.count()
				err := s.topo.In(nsPxy, func() error {
					c, err := net.DialTimeout("tcp", t.l.Addr().String(), dialLimit)
					if err != nil {
						return err
					}
					return c.Close()
				})
				if err != nil {
					return "", fmt.Errorf("trap %s from the proxy's namespace: %w", t.name, err)
				}
				if !waitFor(2*time.Second, func() bool { return t.count() > before }) {
					return "", fmt.Errorf("trap %s did not count a connection made to it", t.name)
				}
			}
			return "", nil
		}},
	}
}

// waitFor polls cond every 20 ms until it holds or limit passes.
func waitFor(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// --- raw logins ----------------------------------------------------------------

// step is one command of a raw session and the class of reply it must get
// (2 for 2xx, 3 for 3xx).
type step struct {
	cmd   string
	class int
}

// login steps: the server's account through each style the proxy takes.
func userAtHost(host string) []step {
	return []step{{"USER " + peers.User + "@" + host, 3}, {"PASS " + peers.Password, 2}}
}

func proxyLogin() []step {
	return []step{{"USER " + proxyUser, 3}, {"PASS " + proxyPass, 2}}
}

// rawCases log in through the proxy with a raw client in the styles no
// client program below sends (OPEN and SITE without proxy login,
// user@host:port, a name from the proxy's hosts file) and check that the
// server answers PWD.
func (s *suite) rawCases() []tcase {
	cases := []struct {
		name  string
		px    **proxyProc
		steps []step
	}{
		{"raw/open/OPEN-then-USER/vsftpd", &s.open, []step{{"OPEN " + vsftpdIP, 2}, {"USER " + peers.User, 3}, {"PASS " + peers.Password, 2}}},
		{"raw/open/SITE-then-USER/proftpd", &s.open, []step{{"SITE " + proftpdIP, 2}, {"USER " + peers.User, 3}, {"PASS " + peers.Password, 2}}},
		{"raw/open/user@host:port/proftpd", &s.open, userAtHost(proftpdIP + ":21")},
		{"raw/open/user@name-from-hosts-file/vsftpd", &s.open, userAtHost(vsftpdName)},
		{"raw/auth/user@listed-name/vsftpd", &s.auth, append(proxyLogin(), userAtHost(vsftpdName)...)},
		{"raw/auth/OPEN-after-proxy-login/proftpd", &s.auth, append(proxyLogin(), step{"OPEN " + proftpdIP, 2}, step{"USER " + peers.User, 3}, step{"PASS " + peers.Password, 2})},
	}
	var out []tcase
	for _, c := range cases {
		out = append(out, tcase{c.name, func() (string, error) {
			px := *c.px
			off := px.offset()
			f, err := s.dialFrom(cliIn, px.addr)
			if err != nil {
				return "", px.withLog(err, off)
			}
			defer f.Close()
			steps := slices.Concat(c.steps, []step{{"PWD", 2}, {"QUIT", 2}})
			for _, st := range steps {
				code, text, err := f.Cmd(st.cmd)
				if err != nil || code/100 != st.class {
					return "", px.withLog(fmt.Errorf("%s: got %d %q (%v), want %dxx\ntranscript:\n%s", st.cmd, code, text, err, st.class, f.Transcript.String()), off)
				}
				if st.cmd == "PWD" && !strings.Contains(text, `"/"`) {
					return "", fmt.Errorf("PWD: %q, want the server's chroot \"/\"\ntranscript:\n%s", text, f.Transcript.String())
				}
			}
			return "", nil
		}})
	}
	return out
}

// trapControlCase logs in through the auth proxy, with the right proxy
// password, to the trap on 10.71.2.23:21, which --allow-dest lists: the
// trap must count the proxy's connection. So the refusals of wrong proxy
// passwords aimed at that trap, which must leave it untouched, would have
// been seen had the proxy dialled.
func (s *suite) trapControlCase() tcase {
	return tcase{"raw/auth/control-right-password-reaches-trap", func() (string, error) {
		t := s.traps[slices.Index(trapAddrs, trapAt{nsSrv, net.JoinHostPort(trapIP, "21")})]
		before := t.count()
		off := s.auth.offset()
		f, err := s.dialFrom(cliIn, s.auth.addr)
		if err != nil {
			return "", s.auth.withLog(err, off)
		}
		defer f.Close()
		for _, st := range append(proxyLogin(), userAtHost(trapIP)...) {
			code, text, err := f.Cmd(st.cmd)
			if err != nil || code/100 != st.class {
				return "", s.auth.withLog(fmt.Errorf("%s: got %d %q (%v), want %dxx\ntranscript:\n%s", st.cmd, code, text, err, st.class, f.Transcript.String()), off)
			}
		}
		if !waitFor(2*time.Second, func() bool { return t.count() > before }) {
			return "", s.auth.withLog(fmt.Errorf("the trap %s counted no connection\ntranscript:\n%s", t.name, f.Transcript.String()), off)
		}
		return "", nil
	}}
}

// dialFrom opens a control connection to addr from the client namespace's
// address source.
func (s *suite) dialFrom(source, addr string) (*peers.Ctrl, error) {
	return peers.Within(s.topo, nsCli, func() (*peers.Ctrl, error) { return dialCtrl(addr, source) })
}

// --- refusals ------------------------------------------------------------------

// denyCase is a login the proxy must refuse with 530 before it dials
// anything.
type denyCase struct {
	name   string
	px     *proxyProc
	source string
	// steps are sent in order until one gets 530; any other 4xx or 5xx
	// fails the case, and so does running out of steps.
	steps []string
	// want is a fragment the 530 must hold (compared without case).
	want string
	// logWant is a fragment of the message of the log line that must
	// record the refusal (default "forward refused"; noLog: none is
	// looked for, the proxy logs no refusal before its own login).
	logWant string
	// retry, sent if the proxy keeps the session open after the 530,
	// must end in 230: the session is still usable. With retryRefused
	// it must get 530 again instead.
	retry        []string
	retryRefused bool
	// connected: the steps log in to a real server before the refused
	// one, so "upstream connected" in the log is that server's.
	connected bool
}

// noLog as denyCase.logWant: no log line is required.
const noLog = "-"

func (s *suite) denyCases() []tcase {
	user := func(host string) []string {
		return []string{"USER " + peers.User + "@" + host, "PASS " + peers.Password}
	}
	proxied := func(rest ...string) []string {
		return append([]string{"USER " + proxyUser, "PASS " + proxyPass}, rest...)
	}
	okOpen := user(vsftpdIP)
	okAuth := proxied(user(vsftpdIP)...)
	// A refused destination leaves the proxy login in place: the next
	// USER names a server straight away (USER proxyuser again would
	// read as a server user with no server).
	okAfterProxyLogin := user(vsftpdIP)
	cases := []denyCase{
		{name: "deny/open/loopback-127.0.0.1", px: s.open, source: cliIn, steps: user("127.0.0.1"), want: "loopback", retry: okOpen},
		{name: "deny/open/hosts-name-resolving-to-loopback", px: s.open, source: cliIn, steps: user(loopName), want: "loopback", retry: okOpen},
		{name: "deny/open/OPEN-loopback", px: s.open, source: cliIn, steps: []string{"OPEN 127.0.0.1", "USER " + peers.User, "PASS " + peers.Password}, want: "loopback", retry: okOpen},
		{name: "deny/open/link-local-169.254.169.254", px: s.open, source: cliIn, steps: user(metaIP), want: "link-local", retry: okOpen},
		{name: "deny/open/proxy-own-address", px: s.open, source: cliIn, steps: user(pxySrvIP), want: "own address", retry: okOpen},
		{name: "deny/open/port-outside-forward-ports", px: s.open, source: cliIn, steps: user(trapIP + ":" + strconv.Itoa(trapPort)), want: "port " + strconv.Itoa(trapPort), retry: okOpen},
		{name: "deny/open/unresolvable-name", px: s.open, source: cliIn, steps: user("nosuch.fwd.test"), want: "nosuch.fwd.test", retry: okOpen},
		// A session stays with the server its USER named: a USER naming
		// another is refused, so its password never reaches the first.
		{name: "deny/open/USER-naming-another-server-after-connecting", px: s.open, source: cliIn,
			steps: []string{"USER " + peers.User + "@" + vsftpdIP, "USER " + peers.User + "@" + trapIP, "PASS " + peers.Password},
			want:  "connected to " + vsftpdIP, logWant: "names another server", retry: user(vsftpdIP), connected: true},
		{name: "deny/open/client-outside-forward-from", px: s.open, source: cliOut, steps: user(trapIP), want: "not allowed", retry: user(vsftpdIP), retryRefused: true},
		// Without a proxy login, user@host reads as lftp's
		// proxy-user@host style: "ftptest" is taken for a proxy user.
		{name: "deny/auth/no-proxy-login", px: s.auth, source: cliIn, steps: user(trapIP), want: "incorrect", logWant: "proxy login failed", retry: okAuth},
		{name: "deny/auth/OPEN-before-proxy-login", px: s.auth, source: cliIn, steps: []string{"OPEN " + trapIP}, want: "proxy", logWant: noLog, retry: okAuth},
		{name: "deny/auth/wrong-proxy-password", px: s.auth, source: cliIn, steps: []string{"USER " + proxyUser, "PASS wrong-" + proxyPass, "USER " + peers.User + "@" + trapIP, "PASS " + peers.Password}, want: "incorrect", logWant: "proxy login failed", retry: okAuth},
		{name: "deny/auth/wrong-proxy-password-joined", px: s.auth, source: cliIn, steps: []string{"USER " + peers.User + "@" + proxyUser + "@" + trapIP, "PASS " + peers.Password + "@wrong-" + proxyPass}, want: "incorrect", logWant: "proxy login failed", retry: okAuth},
		{name: "deny/auth/wrong-proxy-password-proxy-user@host", px: s.auth, source: cliIn, steps: []string{"USER " + proxyUser + "@" + trapIP, "PASS wrong-" + proxyPass, "USER " + peers.User, "PASS " + peers.Password}, want: "incorrect", logWant: "proxy login failed", retry: okAuth},
		{name: "deny/auth/wrong-proxy-password-joined-acct", px: s.auth, source: cliIn, steps: []string{"USER " + peers.User + "@" + trapIP + " " + proxyUser, "PASS " + peers.Password, "ACCT wrong-" + proxyPass}, want: "incorrect", logWant: "proxy login failed", retry: okAuth},
		{name: "deny/auth/client-outside-forward-from", px: s.auth, source: cliOut, steps: proxied(user(trapIP)...), want: "not allowed", retry: user(vsftpdIP), retryRefused: true},
		{name: "deny/auth/unknown-proxy-user", px: s.auth, source: cliIn, steps: []string{"USER nobody-" + proxyUser, "PASS " + proxyPass, "USER " + peers.User + "@" + trapIP, "PASS " + peers.Password}, want: "incorrect", logWant: "proxy login failed", retry: okAuth},
		{name: "deny/auth/not-in-allow-dest", px: s.auth, source: cliIn, steps: proxied(user(unlistedIP)...), want: "allow-dest", retry: okAfterProxyLogin},
		{name: "deny/auth/port-other-than-the-entry's", px: s.auth, source: cliIn, steps: proxied(user(proftpdIP + ":990")...), want: "port 990", retry: okAfterProxyLogin},
		{name: "deny/auth/listed-name-resolving-to-loopback", px: s.auth, source: cliIn, steps: proxied(user(loopName)...), want: "loopback", retry: okAfterProxyLogin},
	}
	var out []tcase
	for _, c := range cases {
		if c.logWant == "" {
			c.logWant = "forward refused"
		}
		out = append(out, tcase{c.name, func() (string, error) { return s.deny(c) }})
	}
	return out
}

// deny runs one refusal: the 530, the log line, no connection at any trap
// and no upstream connection in the log, then what the session does.
func (s *suite) deny(c denyCase) (string, error) {
	counts := make([]int, len(s.traps))
	for i, t := range s.traps {
		counts[i] = t.count()
	}
	off := c.px.offset()
	f, err := s.dialFrom(c.source, c.px.addr)
	if err != nil {
		return "", c.px.withLog(err, off)
	}
	defer f.Close()
	fail := func(format string, args ...any) (string, error) {
		err := fmt.Errorf(format, args...)
		return "", c.px.withLog(fmt.Errorf("%w\ntranscript:\n%s", err, f.Transcript.String()), off)
	}
	var refusal string
	for i, line := range c.steps {
		code, text, err := f.Cmd(line)
		if err != nil {
			return fail("%s: %v", line, err)
		}
		if code == 530 {
			refusal = text
			break
		}
		if code >= 400 {
			return fail("%s: got %d, want 530", line, code)
		}
		if i == len(c.steps)-1 {
			return fail("no 530 after the last command")
		}
	}
	if !strings.Contains(strings.ToLower(refusal), strings.ToLower(c.want)) {
		return fail("the 530 does not say %q", c.want)
	}
	// The log line may follow the reply by a moment.
	logged := event{"message": "(none looked for)"}
	waitFor(3*time.Second, func() bool {
		if c.logWant == noLog {
			return true
		}
		logged = nil
		for _, e := range c.px.events(off) {
			if strings.Contains(e.str("message"), c.logWant) {
				logged = e
				return true
			}
		}
		return false
	})
	if logged == nil {
		return fail("no log line with %q in its message", c.logWant)
	}
	// A proxy that dialled before refusing would have reached a trap by
	// now; wait a moment anyway for one that dials and refuses at once.
	time.Sleep(200 * time.Millisecond)
	for i, t := range s.traps {
		if from := t.from(counts[i]); len(from) > 0 {
			return fail("trap %s was dialled from %v", t.name, from)
		}
	}
	for _, e := range c.px.events(off) {
		if e.str("message") == "upstream connected" && !c.connected {
			return fail("the proxy's log has \"upstream connected\" for this refusal")
		}
	}
	note := fmt.Sprintf("%s | log: %s reason=%s dest=%s resolved=%s", firstLine(refusal), logged.str("message"),
		logged.str("reason"), logged.str("dest"), logged.str("resolved"))

	// Then: closed, or usable (or, for a client the proxy refuses
	// altogether, refused again).
	if f.Closed(500 * time.Millisecond) {
		return note + " | then: the proxy closed the session", nil
	}
	for i, line := range c.retry {
		code, text, err := f.Cmd(line)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "EOF") || strings.Contains(err.Error(), "reset") {
				return note + fmt.Sprintf(" | then: the proxy closed the session at %q", line), nil
			}
			return fail("after the refusal, %s: %v", line, err)
		}
		if c.retryRefused {
			if code == 530 {
				return note + " | then: refused again: " + firstLine(text), nil
			}
			if code >= 400 {
				return fail("after the refusal, %s: got %d, want 530 again", line, code)
			}
			continue
		}
		if code >= 400 {
			return fail("after the refusal, %s: got %d, want the session to be usable", line, code)
		}
		if i == len(c.retry)-1 {
			if code != 230 {
				return fail("after the refusal, %s: got %d, want 230", line, code)
			}
			f.Cmd("QUIT")
			return note + " | then: the session logged in to the real server", nil
		}
	}
	if c.retryRefused {
		return fail("after the refusal the client was let through")
	}
	return note, nil
}

// firstLine returns the first line of s.
func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// clientDenyCases run real clients at refused destinations: each must
// fail soon, show the proxy's 530 to its user, and dial nothing.
func (s *suite) clientDenyCases() []tcase {
	proxyAddr := s.open.addr
	host, port, _ := net.SplitHostPort(proxyAddr)
	lftp := func(dest string) []string {
		return []string{"lftp", "-c", strings.Join([]string{
			"set net:socket-bind-ipv4 " + cliIn,
			"set net:max-retries 1",
			"set net:timeout 10",
			"set cmd:fail-exit yes",
			"set ftp:proxy ftp://" + proxyAddr,
			fmt.Sprintf("open -u %s,%s %s", peers.User, peers.Password, dest),
			"ls",
		}, "; ")}
	}
	curl := func(dest string) []string {
		return []string{"curl", "-sS", "-v", "--max-time", "20", "--interface", cliIn,
			"-u", peers.User + "@" + dest + ":" + peers.Password, "ftp://" + net.JoinHostPort(host, port) + "/"}
	}
	ftplib := func(dest string) []string {
		return []string{"python3", s.script, "--host", host, "--port", port, "--user", peers.User + "@" + dest,
			"--password", peers.Password, "--source", cliIn, "--mode", "pasv", "--timeout", "20", "pwd"}
	}
	cases := []struct {
		name string
		argv []string
		want string
	}{
		{"deny/open/lftp-loopback", lftp("127.0.0.1"), "loopback"},
		{"deny/open/lftp-hosts-name-resolving-to-loopback", lftp(loopName), "loopback"},
		{"deny/open/curl-link-local-169.254.169.254", curl(metaIP), "link-local"},
		{"deny/open/ftplib-port-outside-forward-ports", ftplib(trapIP + ":" + strconv.Itoa(trapPort)), "port 2121"},
	}
	var out []tcase
	for _, c := range cases {
		out = append(out, tcase{c.name, func() (string, error) {
			counts := make([]int, len(s.traps))
			for i, t := range s.traps {
				counts[i] = t.count()
			}
			off := s.open.offset()
			start := time.Now()
			r := s.run(nsCli, c.argv...)
			took := time.Since(start)
			if r.err == nil {
				return "", s.open.withLog(r.failure("the client reported success"), off)
			}
			if !strings.Contains(r.out, "530") || !strings.Contains(r.out, c.want) {
				return "", s.open.withLog(r.failure(fmt.Sprintf("the client's output lacks the proxy's 530 with %q", c.want)), off)
			}
			if took > 15*time.Second {
				return "", r.failure(fmt.Sprintf("the client took %s to give up", took.Round(time.Millisecond)))
			}
			time.Sleep(200 * time.Millisecond)
			for i, t := range s.traps {
				if from := t.from(counts[i]); len(from) > 0 {
					return "", s.open.withLog(r.failure(fmt.Sprintf("trap %s was dialled from %v", t.name, from)), off)
				}
			}
			for _, line := range strings.Split(r.out, "\n") {
				if strings.Contains(line, "530") {
					return fmt.Sprintf("gave up after %s: %s", took.Round(time.Millisecond), strings.TrimSpace(line)), nil
				}
			}
			return "", nil
		}})
	}
	return out
}

// pipelinedCases send a whole login in one write, before the proxy has
// answered any of it (RFC 959 section 4.1 asks a server to queue such
// commands): the commands after the one that names the server must wait
// for the connection to it, and every reply must come, in order.
func (s *suite) pipelinedCases() []tcase {
	cases := []struct {
		name  string
		px    **proxyProc
		lines []string
		codes []int
	}{
		{"raw/open/pipelined-user@host/vsftpd", &s.open,
			[]string{"USER " + peers.User + "@" + vsftpdIP, "PASS " + peers.Password, "PWD", "QUIT"},
			[]int{331, 230, 257, 221}},
		{"raw/open/pipelined-refused-then-user@host/proftpd", &s.open,
			[]string{"USER " + peers.User + "@127.0.0.1", "USER " + peers.User + "@" + proftpdIP, "PASS " + peers.Password, "PWD", "QUIT"},
			[]int{530, 331, 230, 257, 221}},
		{"raw/auth/pipelined-proxy-user@host/vsftpd", &s.auth,
			[]string{"USER " + proxyUser + "@" + vsftpdIP, "PASS " + proxyPass, "USER " + peers.User, "PASS " + peers.Password, "PWD", "QUIT"},
			[]int{331, 230, 331, 230, 257, 221}},
		{"raw/auth/pipelined-joined-acct/proftpd", &s.auth,
			[]string{"USER " + peers.User + "@" + proftpdIP + " " + proxyUser, "PASS " + peers.Password, "ACCT " + proxyPass, "PWD", "QUIT"},
			[]int{331, 332, 230, 257, 221}},
		{"raw/auth/pipelined-joined/vsftpd", &s.auth,
			[]string{"USER " + peers.User + "@" + proxyUser + "@" + vsftpdIP, "PASS " + peers.Password + "@" + proxyPass, "PWD", "QUIT"},
			[]int{331, 230, 257, 221}},
	}
	var out []tcase
	for _, c := range cases {
		out = append(out, tcase{c.name, func() (string, error) {
			px := *c.px
			off := px.offset()
			f, err := s.dialFrom(cliIn, px.addr)
			if err != nil {
				return "", px.withLog(err, off)
			}
			defer f.Close()
			batch := strings.Join(c.lines, "\r\n") + "\r\n"
			fmt.Fprintf(&f.Transcript, "-> (one write) %q\n", batch)
			f.Conn.SetWriteDeadline(time.Now().Add(writeLimit))
			if _, err := f.Conn.Write([]byte(batch)); err != nil {
				return "", px.withLog(err, off)
			}
			for i, want := range c.codes {
				code, _, err := f.Reply()
				if err != nil || code != want {
					return "", px.withLog(fmt.Errorf("reply %d (to %s): got %d (%v), want %d\ntranscript:\n%s", i+1, firstWord(c.lines[i]), code, err, want, f.Transcript.String()), off)
				}
			}
			return "", nil
		}})
	}
	return out
}

// firstWord returns the verb of a command line.
func firstWord(line string) string {
	w, _, _ := strings.Cut(line, " ")
	return w
}
