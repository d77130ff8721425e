//go:build interop

package probe

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
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
	ftpprobe "github.com/ftpproxy/ftpproxy/probe"
)

var (
	flagProxyBin = flag.String("ftpproxy", "../../bin/ftpproxy", "the ftpproxy binary (the proxy and the probe)")
	flagPeers    = flag.String("peers", "../.peers", "directory the servers were unpacked into by install-peers.sh")
	flagPrefix   = flag.String("prefix", "", "prefix of the network namespaces this run creates (default ftpprobe-<pid>)")
	flagWork     = flag.String("work", "", "work directory (default: a new directory under $TMPDIR)")
	flagKeep     = flag.Bool("keep", false, "keep the work directory even when every case passed")
	flagCases    = flag.String("cases", "", "run only the cases whose name matches this regular expression")
	// The probe's own default: proftpd with FTPS loads the system's CA
	// bundle for each session, which on a loaded machine (two probes
	// at once, each with two control connections) delays its greeting
	// past a second.
	flagTimeout = flag.Duration("probe-timeout", ftpprobe.DefaultTimeout, "the probe's --timeout: how long a step may take, and a filtered port takes to be called filtered")
	flagBudget  = flag.Duration("budget", 2*time.Minute, "time the whole suite may take")
)

// Ports and ranges, inside the run's own namespaces.
const (
	ftpPort      = 21
	implicitPort = 990
	proxyPort    = 2121
	// altPorts are the probe's --ports; nothing listens on 2222 anywhere,
	// so that port answers with a reset.
	altPorts = "21,2121,990,2222"

	ftpPasv      = "30000-30049" // vsftpd on ftpIP:21; routerRules' drop rules name it
	purePasv     = "30100-30149"
	proPasv      = "30200-30249"
	natPasv      = "30300-30349"
	implicitPasv = "30400-30449"
	proxyPasv    = "31000-31049"
	proxyActive  = "31050-31069"
)

// probeLimit bounds one run of the probe program; the probe's own
// --deadline is shorter.
const (
	probeDeadline = 40 * time.Second
	probeLimit    = 50 * time.Second
)

// --- suite -------------------------------------------------------------------

type suite struct {
	ctx   context.Context
	topo  *peers.Topology
	tl    *peers.Tally
	work  string
	peers string
	bin   string

	pki    *pki
	pwFile string

	servers []*peers.Server
	proxy   *peers.Proxy
	ssh     net.Listener
}

func TestProbe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), *flagBudget)
	defer cancel()
	tl := &peers.Tally{}
	start := time.Now()
	defer func() {
		if !tl.Summary("probe", start) {
			t.Fail()
		}
	}()
	s := &suite{ctx: ctx, topo: newTopo(peers.NetnsPrefix(*flagPrefix, "ftpprobe")), tl: tl}
	defer s.topo.Destroy()
	defer s.teardown() // before the namespaces go
	setupStart := time.Now()
	if err := s.setup(); err != nil {
		tl.Report("setup", time.Since(setupStart), err)
		return
	}
	fmt.Printf("probe: setup took %.1fs\n", time.Since(setupStart).Seconds())

	var only *regexp.Regexp
	if *flagCases != "" {
		var err error
		if only, err = regexp.Compile(*flagCases); err != nil {
			tl.Report("cases", 0, err)
			return
		}
	}
	rules := "unset"
	for _, c := range s.cases() {
		if only != nil && !only.MatchString(c.name) {
			continue
		}
		if c.rules != rules {
			if err := firewall(ctx, s.topo, c.rules); err != nil {
				tl.Report(c.name, 0, fmt.Errorf("the router's firewall: %w", err))
				continue
			}
			rules = c.rules
		}
		tl.Run(c.name, func() error { return s.run(c) })
	}
}

// setup builds the topology and starts the servers, the SSH banner and the
// proxy.
func (s *suite) setup() error {
	if err := peers.Preflight("network namespaces and nftables", "ip", "nft", "openssl"); err != nil {
		return err
	}
	s.peers = *flagPeers
	if err := peers.AbsPaths(&s.peers); err != nil {
		return err
	}
	var err error
	if s.bin, err = peers.ProxyBinary(*flagProxyBin); err != nil {
		return err
	}
	if err := s.topo.Build(s.ctx); err != nil {
		return fmt.Errorf("topology: %w", err)
	}
	if err := firewall(s.ctx, s.topo, openPath); err != nil {
		return fmt.Errorf("the kernel refused the router's nftables ruleset: %w", err)
	}
	if s.work, err = peers.WorkDir(*flagWork, "", "ftpprobe-"); err != nil {
		return err
	}
	fmt.Printf("probe: namespaces %s-{cli,lan,rtr,srv}, work directory %s\n", s.topo.Prefix, s.work)

	if s.pki, err = makePKI(filepath.Join(s.work, "pki"), ftpName, ftpIP, pureIP, proIP, natSrvIP); err != nil {
		return err
	}
	s.pwFile = filepath.Join(s.work, "password")
	if err := os.WriteFile(s.pwFile, []byte(peers.Password+"\n"), 0o600); err != nil {
		return err
	}
	tlsOn := peers.TLS(peers.TLSOptions{CertFile: s.pki.CertFile, KeyFile: s.pki.KeyFile})
	servers := []struct {
		kind  peers.Kind
		host  string
		port  int
		pasv  string
		opts  []peers.ServerOption
		setup func(*peers.Server) error
	}{
		{peers.Vsftpd, ftpIP, ftpPort, ftpPasv, []peers.ServerOption{tlsOn}, nil},
		{peers.Vsftpd, ftpIP, implicitPort, implicitPasv, []peers.ServerOption{peers.TLS(peers.TLSOptions{CertFile: s.pki.CertFile, KeyFile: s.pki.KeyFile, Implicit: true})}, nil},
		{peers.PureFTPd, pureIP, ftpPort, purePasv, []peers.ServerOption{tlsOn}, nil},
		{peers.ProFTPd, proIP, ftpPort, proPasv, []peers.ServerOption{tlsOn}, nil},
		{peers.Vsftpd, natSrvIP, ftpPort, natPasv, []peers.ServerOption{tlsOn}, s.announceForeign},
	}
	for _, sv := range servers {
		lo, hi := portRange(sv.pasv)
		srv, err := peers.Within(s.topo, nsSrv, func() (*peers.Server, error) {
			return peers.StartServer(s.ctx, sv.kind, s.peers, s.work, sv.host, sv.port, append(sv.opts, peers.PassivePorts(lo, hi))...)
		})
		if err != nil {
			return fmt.Errorf("%s on %s:%d: %w", sv.kind.Name, sv.host, sv.port, err)
		}
		s.servers = append(s.servers, srv)
		// Something to list, so that a LIST moves bytes.
		if err := os.WriteFile(srv.Path("readme.txt"), []byte("served by "+sv.kind.Name+"\n"), 0o644); err != nil {
			return err
		}
		if sv.setup != nil {
			if err := sv.setup(srv); err != nil {
				return err
			}
		}
	}
	if err := s.startSSH(); err != nil {
		return fmt.Errorf("SSH banner on %s:%d: %w", sshIP, ftpPort, err)
	}
	return s.startProxy()
}

// portRange splits "lo-hi".
func portRange(r string) (int, int) {
	a, b, _ := strings.Cut(r, "-")
	lo, _ := strconv.Atoi(a)
	hi, _ := strconv.Atoi(b)
	return lo, hi
}

// announceForeign makes a vsftpd announce foreignIP, an address no route
// leads to, in its 227 replies, as a server behind NAT configured with
// another network's address does. vsftpd in standalone mode reads its
// configuration again on SIGHUP; the new setting is then checked with a
// PASV of the test's own.
func (s *suite) announceForeign(srv *peers.Server) error {
	conf := filepath.Join(srv.Dir, "vsftpd.conf")
	f, err := os.OpenFile(conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "pasv_address=%s\npasv_addr_resolve=NO\n", foreignIP)
	f.Close()
	if err != nil {
		return err
	}
	if err := syscall.Kill(srv.PID(), syscall.SIGHUP); err != nil {
		return fmt.Errorf("SIGHUP to vsftpd: %w", err)
	}
	want := "(" + strings.ReplaceAll(foreignIP, ".", ",") + ","
	var last string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		err := s.topo.In(nsSrv, func() error {
			var err error
			last, err = rawPASV(srv.Addr())
			return err
		})
		if err == nil && strings.Contains(last, want) {
			return nil
		}
		if err != nil {
			last = err.Error()
		}
	}
	return fmt.Errorf("vsftpd on %s does not announce %s after SIGHUP; last answer to PASV: %s", srv.Addr(), foreignIP, last)
}

// rawPASV logs in to addr as the test user and returns the reply to PASV.
func rawPASV(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	reply := func() (string, error) {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return line, err
			}
			if len(line) >= 4 && line[3] == ' ' {
				return strings.TrimSpace(line), nil
			}
		}
	}
	if _, err := reply(); err != nil {
		return "", err
	}
	for _, cmd := range []string{"USER " + peers.User, "PASS " + peers.Password, "PASV"} {
		if _, err := io.WriteString(c, cmd+"\r\n"); err != nil {
			return "", err
		}
		line, err := reply()
		if err != nil {
			return line, err
		}
		if strings.HasPrefix(cmd, "PASV") {
			io.WriteString(c, "QUIT\r\n")
			return line, nil
		}
	}
	return "", nil
}

// sshBanner is what the SSH server on sshIP sends first.
const sshBanner = "SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13"

// startSSH listens on sshIP:21 and greets every connection as an SSH
// server does, then waits up to 10 s for the client to go.
func (s *suite) startSSH() error {
	err := s.topo.In(nsSrv, func() error {
		var err error
		s.ssh, err = net.Listen("tcp", net.JoinHostPort(sshIP, strconv.Itoa(ftpPort)))
		return err
	})
	if err != nil {
		return err
	}
	go func() {
		for {
			c, err := s.ssh.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.WriteString(c, sshBanner+"\r\n")
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return nil
}

// startProxy starts ftpproxy on ftpIP:2121, in front of the vsftpd on
// ftpIP:21, with a passive range of its own and FTPS offered with the same
// certificate as the server.
func (s *suite) startProxy() error {
	cfg := peers.ProxyConfig{
		Bin:          s.bin,
		Listen:       net.JoinHostPort(ftpIP, strconv.Itoa(proxyPort)),
		Upstream:     net.JoinHostPort(ftpIP, strconv.Itoa(ftpPort)),
		PassivePorts: proxyPasv,
		LogPath:      filepath.Join(s.work, "ftpproxy.log"),
		Args: []string{"--active-ports", proxyActive, "--tls-cert", s.pki.CertFile, "--tls-key", s.pki.KeyFile,
			"--drain-timeout", "1s", "--dial-timeout", "5s", "--data-accept-timeout", "10s"},
	}
	return s.topo.In(nsSrv, func() error {
		var err error
		s.proxy, err = peers.StartProxy(s.ctx, cfg)
		if err != nil {
			return fmt.Errorf("ftpproxy on %s: %w", cfg.Listen, err)
		}
		return nil
	})
}

func (s *suite) teardown() {
	if s.proxy != nil {
		s.proxy.Stop()
	}
	if s.ssh != nil {
		s.ssh.Close()
	}
	for _, srv := range s.servers {
		srv.Stop()
	}
	peers.CleanWorkDir("probe", s.work, !*flagKeep && s.tl.Failed() == 0 && *flagWork == "")
}

// --- running the probe -------------------------------------------------------

// probeCase is one topology and what the probe must say about it.
type probeCase struct {
	name   string
	ns     string // the client's namespace: nsCli or nsLan
	rules  string // the router's blocks (routerRules)
	target string // HOST[:PORT]
	args   []string

	exit int
	// checks is every result, in order, as "check=STATUS" separated by
	// spaces: nothing more, nothing less.
	checks string
	// words are what each check's line (finding and fix) must contain.
	words map[string][]string
	// steps must appear in the transcript in this order, each as
	// "conn" + ">" (sent), "<" (received) or "." (note) + text the entry
	// contains, e.g. "control>USER ftptest".
	steps []string
	// absent must not appear in the check's line.
	absent map[string][]string
	// before and after, if set, run around the two probes; after's error
	// fails the case.
	before func() error
	after  func() error
}

// output is one run of the probe program.
type output struct {
	argv           []string
	stdout, stderr string
	exit           int
	err            error // the program could not run, or ran out of time
	elapsed        time.Duration
}

func (o output) describe() string {
	return fmt.Sprintf("$ %s\nexit %d after %s\n%s\nstderr: %s", peers.ShellQuote(o.argv), o.exit, o.elapsed.Round(time.Millisecond),
		peers.Tail(o.stdout, 6000), peers.Tail(o.stderr, 500))
}

// probe runs `ftpproxy probe` in the client's namespace with ip netns exec,
// which also gives it the namespace's hosts file.
func (s *suite) probe(ns string, args ...string) output {
	argv := slices.Concat([]string{"ip", "netns", "exec", s.topo.Name(ns), s.bin, "probe"}, args)
	ctx, cancel := context.WithTimeout(s.ctx, probeLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = 2 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	o := output{argv: argv, stdout: stdout.String(), stderr: stderr.String(), elapsed: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		o.err = fmt.Errorf("the probe did not end within %s", probeLimit)
	case errors.As(err, &ee):
		o.exit = ee.ExitCode()
	case err != nil:
		o.err = err
	}
	return o
}

// result is one check's result as either output gives it.
type result struct {
	check, status, line string
}

// entry is one transcript entry as either output gives it.
type entry struct {
	conn, dir, text string
}

func (e entry) String() string { return e.conn + e.dir + e.text }

var (
	resultRe     = regexp.MustCompile(`^(OK|WARN|FAIL) ([a-z0-9/]+): (.*)$`)
	transcriptRe = regexp.MustCompile(`^ *\d+ms (.{7}) (->|<-|  ) (.*)$`)
)

// parseText reads the result lines and the transcript of the text output.
func parseText(out string) ([]result, []entry) {
	var rs []result
	var es []entry
	for _, line := range strings.Split(out, "\n") {
		if m := resultRe.FindStringSubmatch(line); m != nil {
			rs = append(rs, result{m[2], m[1], line})
			continue
		}
		if m := transcriptRe.FindStringSubmatch(line); m != nil {
			dir := map[string]string{"->": ">", "<-": "<", "  ": "."}[m[2]]
			es = append(es, entry{strings.TrimSpace(m[1]), dir, m[3]})
		}
	}
	return rs, es
}

// jsonReport is the documented JSON schema (docs/probe.md), decoded as a
// consumer of it would.
type jsonReport struct {
	Schema    *int   `json:"schema"`
	Target    string `json:"target"`
	Through   string `json:"through"`
	Status    string `json:"status"`
	ExitCode  *int   `json:"exit_code"`
	ElapsedMS *int64 `json:"elapsed_ms"`
	Results   []struct {
		Check   string `json:"check"`
		Status  string `json:"status"`
		Finding string `json:"finding"`
		Fix     string `json:"fix"`
	} `json:"results"`
	Transcript []struct {
		MS   *int64 `json:"ms"`
		Conn string `json:"conn"`
		Dir  string `json:"dir"`
		Text string `json:"text"`
	} `json:"transcript"`
}

// parseJSON decodes the JSON output and checks its summary fields against
// the results and the program's exit code.
func parseJSON(o output, target, through string) ([]result, []entry, error) {
	var rep jsonReport
	dec := json.NewDecoder(strings.NewReader(o.stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rep); err != nil {
		return nil, nil, fmt.Errorf("--json output: %v", err)
	}
	if dec.More() {
		return nil, nil, errors.New("--json output: more than one document")
	}
	switch {
	case rep.Schema == nil || *rep.Schema != 1:
		return nil, nil, errors.New("--json: schema is not 1")
	case rep.ExitCode == nil || *rep.ExitCode != o.exit:
		return nil, nil, fmt.Errorf("--json: exit_code %v, but the program exited %d", rep.ExitCode, o.exit)
	case rep.ElapsedMS == nil || *rep.ElapsedMS < 0:
		return nil, nil, errors.New("--json: no elapsed_ms")
	case rep.Target != target:
		return nil, nil, fmt.Errorf("--json: target %q, want %q", rep.Target, target)
	case rep.Through != through:
		return nil, nil, fmt.Errorf("--json: through %q, want %q", rep.Through, through)
	}
	worst := "OK"
	rank := map[string]int{"OK": 0, "WARN": 1, "FAIL": 2}
	var rs []result
	for _, r := range rep.Results {
		rk, ok := rank[r.Status]
		if !ok {
			return nil, nil, fmt.Errorf("--json: check %s has status %q", r.Check, r.Status)
		}
		if rk > rank[worst] {
			worst = r.Status
		}
		rs = append(rs, result{r.Check, r.Status, r.Finding + " " + r.Fix})
	}
	if rep.Status != worst {
		return nil, nil, fmt.Errorf("--json: status %q, but the worst result is %q", rep.Status, worst)
	}
	if rank[worst] != o.exit {
		return nil, nil, fmt.Errorf("--json: the worst result is %s, but the program exited %d", worst, o.exit)
	}
	var es []entry
	for _, e := range rep.Transcript {
		dir, ok := map[string]string{"sent": ">", "recv": "<", "note": "."}[e.Dir]
		if !ok || e.MS == nil {
			return nil, nil, fmt.Errorf("--json: transcript entry %+v: bad dir or no ms", e)
		}
		es = append(es, entry{e.Conn, dir, e.Text})
	}
	return rs, es, nil
}

// checkResults compares results with the case's expectations.
func checkResults(c probeCase, rs []result) error {
	var got []string
	for _, r := range rs {
		got = append(got, r.check+"="+r.status)
	}
	if g, w := strings.Join(got, " "), strings.Join(strings.Fields(c.checks), " "); g != w {
		return fmt.Errorf("checks:\n got  %s\n want %s", g, w)
	}
	for check, words := range c.words {
		var line string
		for _, r := range rs {
			if r.check == check {
				line = r.line
			}
		}
		for _, w := range words {
			if !strings.Contains(line, w) {
				return fmt.Errorf("the %s line does not say %q:\n %s", check, w, line)
			}
		}
	}
	for check, words := range c.absent {
		for _, r := range rs {
			for _, w := range words {
				if r.check == check && strings.Contains(r.line, w) {
					return fmt.Errorf("the %s line says %q:\n %s", check, w, r.line)
				}
			}
		}
	}
	return nil
}

// checkSteps looks for the case's steps in the transcript, in order.
func checkSteps(steps []string, es []entry) error {
	if len(es) == 0 {
		return errors.New("the transcript is empty")
	}
	i := 0
	for _, st := range steps {
		k := strings.IndexAny(st, "<>.")
		conn, dir, text := st[:k], st[k:k+1], st[k+1:]
		for i < len(es) && !(es[i].conn == conn && es[i].dir == dir && strings.Contains(es[i].text, text)) {
			i++
		}
		if i == len(es) {
			var all []string
			for _, e := range es {
				all = append(all, e.String())
			}
			return fmt.Errorf("the transcript has no %q after the steps before it:\n %s", st, strings.Join(all, "\n "))
		}
		i++
	}
	return nil
}

// run probes as the case says, once with --transcript and once with
// --json, at the same time, and checks both.
func (s *suite) run(c probeCase) error {
	args := append([]string{c.target, "--user", peers.User, "--password-file", s.pwFile, "--ca", s.pki.CAFile,
		"--timeout", flagTimeout.String(), "--deadline", probeDeadline.String(), "--ports", altPorts}, c.args...)
	if c.before != nil {
		if err := c.before(); err != nil {
			return err
		}
	}
	var text, js output
	var wg sync.WaitGroup
	wg.Go(func() { text = s.probe(c.ns, slices.Concat(args, []string{"--transcript"})...) })
	wg.Go(func() { js = s.probe(c.ns, slices.Concat(args, []string{"--json"})...) })
	wg.Wait()

	host, port, err := net.SplitHostPort(c.target)
	if err != nil {
		host, port = c.target, strconv.Itoa(ftpPort)
	}
	target := net.JoinHostPort(host, port)
	through := ""
	for i, a := range c.args {
		if a == "--through" && i+1 < len(c.args) {
			through = c.args[i+1]
		}
	}

	for _, o := range []output{text, js} {
		if o.err != nil {
			return fmt.Errorf("%v\n%s", o.err, o.describe())
		}
		if o.exit != c.exit {
			return fmt.Errorf("exit code %d, want %d\n%s", o.exit, c.exit, o.describe())
		}
		if strings.Contains(o.stdout+o.stderr, peers.Password) {
			return fmt.Errorf("the output shows the password\n%s", o.describe())
		}
	}
	rs, es := parseText(text.stdout)
	if err := checkResults(c, rs); err != nil {
		return fmt.Errorf("text: %v\n%s", err, text.describe())
	}
	if err := checkSteps(c.steps, es); err != nil {
		return fmt.Errorf("text --transcript: %v\n%s", err, text.describe())
	}
	rs, es, err = parseJSON(js, target, through)
	if err != nil {
		return fmt.Errorf("%v\n%s", err, js.describe())
	}
	if err := checkResults(c, rs); err != nil {
		return fmt.Errorf("--json: %v\n%s", err, js.describe())
	}
	if err := checkSteps(c.steps, es); err != nil {
		return fmt.Errorf("--json transcript: %v\n%s", err, js.describe())
	}
	if c.after != nil {
		return c.after()
	}
	return nil
}

// --- the cases ---------------------------------------------------------------

// ftpAddr is ftpIP:21 as the findings write it.
var ftpAddr = net.JoinHostPort(ftpIP, strconv.Itoa(ftpPort))

// session is the transcript of a whole session from client with a working
// server at server (host:port), whose passive data connections go to
// addresses that start with data: greeting, FEAT, AUTH TLS on the second
// connection, the login, PASV, EPSV, a LIST over PASV, PORT and a LIST over
// it, QUIT.
func session(server, client, data string) []string {
	return []string{
		"control.connected to " + server + " from " + client + ":",
		"control<220",
		"control>FEAT",
		"control<211",
		"tls.connected to " + server,
		"tls>AUTH TLS",
		"tls<234",
		"tls.TLS handshake done",
		"control>USER " + peers.User,
		"control<331",
		"control>PASS ****",
		"control<230",
		"control>PASV",
		"control<227",
		"data.connected to " + data,
		"control>EPSV",
		"control<229",
		"control>PASV",
		"control>LIST",
		"control<150",
		"data.bytes, then the end",
		"control<226",
		"data.listening on " + client + ":",
		"control>PORT " + strings.ReplaceAll(client, ".", ",") + ",",
		"control<200",
		"control>LIST",
		"data.connection from ",
		"control<226",
		"control>QUIT",
	}
}

// working is the expectation for a server that works from cliIP.
func working(kind, ip, greeting string) probeCase {
	addr := net.JoinHostPort(ip, strconv.Itoa(ftpPort))
	return probeCase{
		name: "working/" + kind, ns: nsCli, rules: openPath, target: ip,
		exit:   0,
		checks: "tcp=OK tcp/2121=OK tcp/990=OK tcp/2222=OK greeting=OK feat=OK tls=OK login=OK pasv=OK epsv=OK list=OK active=OK",
		words: map[string][]string{
			"tcp":      {ip + " port 21 is open"},
			"tcp/2222": {"refused"},
			"greeting": {"220", greeting},
			"feat":     {"features: ", "AUTH TLS"},
			"tls":      {"AUTH TLS works", "for " + ftpName, ip, "it verifies against "},
			"login":    {"logged in as " + peers.User, "230"},
			"pasv":     {"227 names the control address", "the data connection opens"},
			"epsv":     {"229 names port", "the data connection to the control address opens"},
			"list":     {"LIST over PASV", "bytes, then \"226"},
			"active":   {"PORT: the server connected from " + ip, "to the probe's listener " + cliIP + ":", "bytes, then \"226"},
		},
		steps: session(addr, cliIP, ip+":"),
	}
}

func (s *suite) cases() []probeCase {
	vs := working("vsftpd", ftpIP, "vsFTPd")
	// By name: the client's hosts file has ftp.example.net, IPv4 only.
	vs.target = ftpName
	vs.checks = "dns4=OK dns6=OK " + vs.checks
	vs.words["dns4"] = []string{ftpName + " has A " + ftpIP}
	vs.words["dns6"] = []string{ftpName + " has no AAAA record: it is reached over IPv4"}
	vs.words["tcp"] = []string{ftpName + " (" + ftpIP + ") port 21 is open"}
	vs.words["tcp/2121"] = []string{"port 2121: open"}
	vs.words["tcp/990"] = []string{"port 990: open"}

	pure := working("pure-ftpd", pureIP, "Pure-FTPd")
	pro := working("proftpd", proIP, "ProFTPD")
	for _, c := range []*probeCase{&pure, &pro} {
		c.words["tcp/2121"] = []string{"port 2121: refused"}
	}

	return []probeCase{
		vs, pure, pro,
		s.caseForeign227(),
		s.caseNotFTP(),
		s.caseImplicit(),
		s.caseNATActive(),
		s.casePassiveDropped(),
		s.casePort21Reset(),
		s.casePort21Prohibited(),
		s.casePort21Dropped(),
		s.caseThrough(),
	}
}

// caseForeign227: vsftpd announces 10.99.0.5 (routed nowhere) in its 227;
// the control address with the port works, so clients that fall back to
// it work: a warning with the masquerade settings of each server.
func (s *suite) caseForeign227() probeCase {
	addr := net.JoinHostPort(natSrvIP, strconv.Itoa(ftpPort))
	return probeCase{
		name: "foreign-227/vsftpd-pasv_address", ns: nsCli, rules: openPath, target: natSrvIP,
		exit:   1,
		checks: "tcp=OK tcp/2121=OK tcp/990=OK tcp/2222=OK greeting=OK feat=OK tls=OK login=OK pasv=WARN epsv=OK list=OK active=OK",
		words: map[string][]string{
			"pasv": {"227 names " + foreignIP + ":", "(private), not the control address " + natSrvIP,
				"is unreachable", "the control address with the port of the next 227 (" + natSrvIP + ":", ") opens",
				"a server behind NAT without its masquerade setting",
				"vsftpd pasv_address=" + natSrvIP, "proftpd MasqueradeAddress " + natSrvIP, "pure-ftpd -P " + natSrvIP},
			"list": {"LIST over PASV to the control address", "bytes, then \"226"},
		},
		steps: []string{
			"control.connected to " + addr,
			"control>PASV",
			"control<227 Entering Passive Mode (" + strings.ReplaceAll(foreignIP, ".", ",") + ",",
			"data.connect to " + foreignIP + ":",
			"control>PASV",
			"data.connected to " + natSrvIP + ":",
			"control>EPSV",
			"control>PASV",
			"control>LIST",
			"control<226",
			"control>QUIT",
		},
	}
}

// caseNotFTP: an SSH server on port 21.
func (s *suite) caseNotFTP() probeCase {
	return probeCase{
		name: "not-ftp/ssh-banner", ns: nsCli, rules: openPath, target: sshIP,
		exit:   2,
		checks: "tcp=OK tcp/2121=OK tcp/990=OK tcp/2222=OK greeting=FAIL",
		words: map[string][]string{
			"greeting": {"an SSH server answers on port 21, not FTP", sshBanner, "SFTP on this port"},
		},
		steps: []string{
			"control.connected to " + net.JoinHostPort(sshIP, "21"),
			"control<" + strconv.Quote(sshBanner+"\r\n"),
		},
	}
}

// caseImplicit: vsftpd with implicit_ssl=YES on port 990 says nothing
// until a TLS handshake.
func (s *suite) caseImplicit() probeCase {
	addr := net.JoinHostPort(ftpIP, strconv.Itoa(implicitPort))
	return probeCase{
		name: "implicit-tls/vsftpd-990", ns: nsCli, rules: openPath, target: addr,
		exit:   2,
		checks: "tcp=OK tcp/21=OK tcp/2121=OK tcp/2222=OK greeting=FAIL",
		words: map[string][]string{
			"tcp":      {ftpIP + " port 990 is open"},
			"greeting": {"port 990 accepted the connection but sent no greeting within", "answers a TLS handshake", "for " + ftpName, "an implicit-FTPS port", "implicit FTPS", "ftps://"},
		},
		steps: []string{
			"control.connected to " + addr,
			"control.nothing received within",
			"tls.connected to " + addr + "; trying a TLS handshake (implicit FTPS)",
			"tls.TLS handshake done",
		},
	}
}

// caseNATActive: the client behind the masquerading router; passive works,
// active cannot: the server is sent the client's private address.
func (s *suite) caseNATActive() probeCase {
	return probeCase{
		name: "nat-client/active", ns: nsLan, rules: openPath, target: ftpIP,
		exit:   1,
		checks: "tcp=OK tcp/2121=OK tcp/990=OK tcp/2222=OK greeting=OK feat=OK tls=OK login=OK pasv=OK epsv=OK list=OK active=WARN",
		words: map[string][]string{
			"pasv":   {"227 names the control address"},
			"list":   {"bytes, then \"226"},
			"active": {"The probe's address " + lanIP + " is private and the server's " + ftpIP + " is public", "Active mode is unlikely to work from behind NAT", "passive mode (PASV or EPSV)"},
		},
		steps: []string{
			"control.connected to " + ftpAddr + " from " + lanIP + ":",
			"control>PASS ****",
			"control<230",
			"data.listening on " + lanIP + ":",
			"control>PORT " + strings.ReplaceAll(lanIP, ".", ",") + ",",
		},
	}
}

// casePassiveDropped: port 21 gets through, the server's passive range is
// dropped on the way.
func (s *suite) casePassiveDropped() probeCase {
	return probeCase{
		name: "passive-range-dropped/vsftpd", ns: nsCli, rules: dropPasv, target: ftpIP,
		exit:   2,
		checks: "tcp=OK tcp/2121=OK tcp/990=OK tcp/2222=OK greeting=OK feat=OK tls=OK login=OK pasv=FAIL epsv=FAIL active=OK",
		words: map[string][]string{
			"pasv": {"the control connection works but the data connection to " + ftpIP + ":300", "timed out",
				"a firewall opens 21 but not the passive range: port 300", "server's passive port range (it includes 300", "--through"},
			"epsv":   {"the control connection works but the data connection to " + ftpIP + ":300", "a firewall opens 21 but not the passive range"},
			"active": {"PORT: the server connected from " + ftpIP},
		},
		steps: []string{
			"control.connected to " + ftpAddr,
			"control>PASV",
			"control<227 Entering Passive Mode (198,51,100,10,",
			"data.connect to " + ftpIP + ":300",
			"control>EPSV",
			"data.connect to " + ftpIP + ":300",
			"control>PORT",
			"control<226",
		},
	}
}

// casePort21Reset: the router answers port 21 with a TCP reset.
func (s *suite) casePort21Reset() probeCase {
	return probeCase{
		name: "port21-rejected/tcp-reset", ns: nsCli, rules: reset21, target: ftpIP,
		exit:   2,
		checks: "tcp=FAIL tcp/2121=OK tcp/990=OK tcp/2222=OK",
		words: map[string][]string{
			"tcp": {ftpIP + " port 21 refused the connection: the host answered, nothing listens", "FTP server is down or listens on another port"},
		},
		steps: []string{"control.connect to " + ftpAddr + ": connection refused"},
	}
}

// casePort21Prohibited: the router answers port 21 with an ICMP
// administratively-prohibited error.
func (s *suite) casePort21Prohibited() probeCase {
	return probeCase{
		name: "port21-rejected/icmp-prohibited", ns: nsCli, rules: prohibit21, target: ftpIP,
		exit:   2,
		checks: "tcp=FAIL tcp/2121=OK tcp/990=OK tcp/2222=OK",
		words: map[string][]string{
			"tcp": {ftpIP + " is unreachable", "a firewall rejects it", "ports 2121 and 990 are open on " + ftpIP},
		},
		steps: []string{"control.connect to " + ftpAddr + ": no route to host"},
	}
}

// casePort21Dropped: the router drops port 21 (and the passive range): a
// timeout, with the alternate-port advice.
func (s *suite) casePort21Dropped() probeCase {
	return probeCase{
		name: "port21-dropped/timeout", ns: nsCli, rules: drop21, target: ftpName,
		exit:   2,
		checks: "dns4=OK dns6=OK tcp=FAIL tcp/2121=OK tcp/990=OK tcp/2222=OK",
		words: map[string][]string{
			"tcp": {ftpName + " (" + ftpIP + ") port 21 timed out: the connection is filtered",
				"port 2222 answered, so the host is reachable and only port 21 is blocked",
				"firewall or your ISP is likely dropping port 21", "use an alternate port the server listens on",
				"run ftpproxy on a port that gets through", "--through",
				"ports 2121 and 990 are open on " + ftpIP, "probe " + ftpIP + ":2121"},
			"tcp/2121": {"port 2121: open"},
			"tcp/2222": {"port 2222: refused"},
		},
		steps: []string{"control.connect to " + ftpAddr + ": timed out"},
	}
}

// caseThrough: the same blocked path (port 21 and the passive range
// dropped) through the ftpproxy on port 2121 of the far side: fixed.
func (s *suite) caseThrough() probeCase {
	proxy := net.JoinHostPort(ftpName, strconv.Itoa(proxyPort))
	proxyAddr := net.JoinHostPort(ftpIP, strconv.Itoa(proxyPort))
	// The proxy's log must show the probes' transfers, from the client's
	// own address: two LISTs (PASV and PORT) for each of the two probes.
	var seen int
	transfers := func() (int, error) {
		downs, _, err := peers.ReadTransfers(s.proxy.LogPath)
		return len(downs), err
	}
	proxyLog := func(err error) error {
		log, _ := os.ReadFile(s.proxy.LogPath)
		return fmt.Errorf("%w\nproxy log %s (tail):\n%s", err, s.proxy.LogPath, peers.Tail(string(log), 1500))
	}
	return probeCase{
		name: "through-proxy/port21-dropped-fixed", ns: nsCli, rules: drop21, target: ftpName,
		args:   []string{"--through", proxy},
		exit:   0,
		checks: "dns4=OK dns6=OK tcp=OK greeting=OK feat=OK tls=OK login=OK pasv=OK epsv=OK list=OK active=OK",
		words: map[string][]string{
			"dns4":     {"the proxy " + ftpName + " has A " + ftpIP},
			"tcp":      {"the proxy " + ftpName + " (" + ftpIP + ") port 2121 is open, in front of " + ftpName + ":21"},
			"greeting": {"vsFTPd"},
			"tls":      {"AUTH TLS works", "it verifies against"},
			"login":    {"logged in as " + peers.User},
			"pasv":     {"227 names the control address, port 310"},
			"epsv":     {"229 names port 310"},
			"list":     {"LIST over PASV", "bytes, then \"226"},
			"active":   {"PORT: the server connected from " + ftpIP, "to the probe's listener " + cliIP + ":"},
		},
		steps: session(proxyAddr, cliIP, ftpIP+":310"),
		before: func() error {
			var err error
			seen, err = transfers()
			return err
		},
		after: func() error {
			n, err := transfers()
			if err != nil {
				return proxyLog(err)
			}
			if n-seen < 4 {
				return proxyLog(fmt.Errorf("the proxy logged %d transfers during the case, want 4 (two LISTs for each probe)", n-seen))
			}
			log, err := os.ReadFile(s.proxy.LogPath)
			if err != nil {
				return err
			}
			if !strings.Contains(string(log), `"client":"`+cliIP+`:`) {
				return proxyLog(fmt.Errorf("the proxy's log has no session from %s", cliIP))
			}
			return nil
		},
	}
}
