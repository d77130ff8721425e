//go:build interop

package nat

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
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
	flagProxyBin  = flag.String("ftpproxy", "../../bin/ftpproxy", "the ftpproxy binary")
	flagPeers     = flag.String("peers", "../.peers", "directory the servers were unpacked into by install-peers.sh")
	flagScript    = flag.String("ftplib", "../clients/ftplib_client.py", "the ftplib client script")
	flagPrefix    = flag.String("prefix", "", "prefix of the network namespaces this run creates (default ftpnat-<pid>)")
	flagWork      = flag.String("work", "", "work directory (default: a new directory under $TMPDIR)")
	flagKeep      = flag.Bool("keep", false, "keep the work directory even when every case passed")
	flagMiB       = flag.Int("size", 4, "size of the files moved each way, in MiB")
	flagClients   = flag.Int("clients", 20, "concurrent clients against the 4-port passive range")
	flagReplyWait = flag.Duration("reply-wait", 20*time.Second, "how long a client waits for the reply to a transfer the proxy could not connect upstream")
	flagBudget    = flag.Duration("budget", 4*time.Minute+30*time.Second, "time the whole suite may take")
	flagCases     = flag.String("cases", "", "comma-separated cases to run, of topology,a,b,c,d,e,f,g,h (default: all)")
)

// Ports: the proxy and the servers, and the ranges each uses. They live in
// the run's own namespaces, and are picked apart from the other suites'
// anyway.
const (
	proxyPort    = 2141
	serverPort   = 2142 // vsftpd on 10.20.0.2 and, IPv6 only, on fd00:20::2
	legacyPort   = 2143 // vsftpd on 10.20.0.2 announcing 10.99.0.5
	passiveRange = "24000-24079"
	activeRange  = "24080-24099"
	smallRange   = "24100-24103"
	smallSize    = 4
	healthAddr   = "127.0.0.1:2149"
	legacyPasvIP = "10.99.0.5"
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

	srv, legacy, srv6 *peers.Server
	down, up          peers.File // down.bin on every server; up.bin local
	legacyErr         error      // the legacy server does not announce 10.99.0.5
}

func TestNAT(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), *flagBudget)
	defer cancel()
	tl := &peers.Tally{}
	start := time.Now()
	defer func() {
		if !tl.Summary("nat", start) {
			t.Fail()
		}
	}()
	s := &suite{ctx: ctx, topo: newTopo(peers.NetnsPrefix(*flagPrefix, "ftpnat")), tl: tl}
	defer s.topo.Destroy()
	defer s.teardown() // before the namespaces go
	if err := s.setup(); err != nil {
		tl.Report("setup", 0, err)
		return
	}

	peers.RunCases(tl, *flagCases, []peers.Case{
		{Name: "topology", Run: s.caseTopology}, {Name: "a", Run: s.caseA}, {Name: "b", Run: s.caseB},
		{Name: "c", Run: s.caseC}, {Name: "d", Run: s.caseD}, {Name: "e", Run: s.caseE},
		{Name: "f", Run: s.caseF}, {Name: "g", Run: s.caseG}, {Name: "h", Run: s.caseH},
	}, nil)
}

// setup builds the topology, loads the router's plain NAT, starts the
// servers and writes the files.
func (s *suite) setup() error {
	if err := peers.Preflight("network namespaces and nftables", "ip", "nft", "curl", "lftp", "python3"); err != nil {
		return err
	}
	s.peers, s.script = *flagPeers, *flagScript
	if err := peers.AbsPaths(&s.peers, &s.script); err != nil {
		return err
	}
	var err error
	if *flagProxyBin, err = peers.ProxyBinary(*flagProxyBin); err != nil {
		return err
	}
	if err := s.topo.Build(s.ctx); err != nil {
		return fmt.Errorf("topology: %w", err)
	}
	if err := s.topo.Nft(s.ctx, nsRtr, routerRules(false, proxyPort)); err != nil {
		return fmt.Errorf("the kernel refused the router's nftables NAT (masquerade): %w", err)
	}
	if s.work, err = peers.WorkDir(*flagWork, "", "ftpnat-"); err != nil {
		return err
	}
	fmt.Printf("nat: namespaces %s-{cli,rtr,pxy,srv,in}, work directory %s\n", s.topo.Prefix, s.work)
	fmt.Printf("nat: kernel: %s\n", kernelNotes())

	start := func(host string, port, lo, hi int) (*peers.Server, error) {
		return peers.Within(s.topo, nsSrv, func() (*peers.Server, error) {
			return peers.StartServer(s.ctx, peers.Vsftpd, s.peers, s.work, host, port, peers.PassivePorts(lo, hi))
		})
	}
	if s.srv, err = start(srvIP, serverPort, 24200, 24299); err != nil {
		return fmt.Errorf("vsftpd on %s: %w", srvIP, err)
	}
	if s.legacy, err = start(srvIP, legacyPort, 24300, 24349); err != nil {
		return fmt.Errorf("legacy vsftpd: %w", err)
	}
	if s.srv6, err = start(srv6, serverPort, 24350, 24399); err != nil {
		return fmt.Errorf("IPv6-only vsftpd on %s: %w", srv6, err)
	}
	size := int64(*flagMiB) << 20
	for i, srv := range []*peers.Server{s.srv, s.legacy, s.srv6} {
		f, err := peers.WriteRandom(srv.Path("down.bin"), size, 1)
		if err != nil {
			return err
		}
		if i == 0 {
			s.down = f
		}
		// Uploads land in the root as the session account.
		if err := os.Chown(srv.Root, srv.UID, srv.GID); err != nil {
			return err
		}
	}
	if s.up, err = peers.WriteRandom(filepath.Join(s.work, "up.bin"), size, 2); err != nil {
		return err
	}
	s.legacyErr = s.makeLegacy()
	return nil
}

// makeLegacy turns the second vsftpd into a server that announces
// 10.99.0.5, an address it does not own, in its 227 replies, as a server
// behind NAT configured for its public address does: the settings are
// added to its configuration, which vsftpd in standalone mode reads again
// on SIGHUP. It then checks from the proxy's namespace that the server
// really announces that address.
func (s *suite) makeLegacy() error {
	conf := filepath.Join(s.legacy.Dir, "vsftpd.conf")
	f, err := os.OpenFile(conf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "pasv_address=%s\npasv_addr_resolve=NO\n", legacyPasvIP)
	f.Close()
	if err != nil {
		return err
	}
	if err := syscall.Kill(s.legacy.PID(), syscall.SIGHUP); err != nil {
		return fmt.Errorf("SIGHUP to vsftpd: %w", err)
	}
	var last string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		err := s.topo.In(nsPxy, func() error {
			c, err := dialFTP(s.legacy.Addr(), pxySrvIP)
			if err != nil {
				return err
			}
			defer c.Close()
			_, text, err := c.Cmd("PASV")
			last = text
			return err
		})
		if err == nil && strings.Contains(last, "(10,99,0,5,") {
			return nil
		}
		if err != nil {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("the legacy vsftpd does not announce %s after SIGHUP; last answer to PASV: %s", legacyPasvIP, last)
}

func (s *suite) teardown() {
	for _, srv := range []*peers.Server{s.srv, s.legacy, s.srv6} {
		if srv != nil {
			srv.Stop()
		}
	}
	peers.CleanWorkDir("nat", s.work, !*flagKeep && s.tl.Failed() == 0 && *flagWork == "")
}

// --- proxies -----------------------------------------------------------------

// proxyRun is one ftpproxy started for a case.
type proxyRun struct {
	*peers.Proxy
	name string
}

// startProxy starts ftpproxy in the proxy's namespace, listening on its
// public address, on the inside net and on the inside net's IPv6 address,
// with a health endpoint; extra flags come last and win.
func (s *suite) startProxy(name, upstream, ports string, extra ...string) (*proxyRun, error) {
	args := []string{
		"--listen", net.JoinHostPort(pxyInIP, strconv.Itoa(proxyPort)),
		"--listen", net.JoinHostPort(pxyIn6, strconv.Itoa(proxyPort)),
		"--health", healthAddr,
		"--drain-timeout", "2s", "--dial-timeout", "5s", "--data-accept-timeout", "15s",
	}
	cfg := peers.ProxyConfig{
		Bin:          *flagProxyBin,
		Listen:       net.JoinHostPort(pxyWanIP, strconv.Itoa(proxyPort)),
		Upstream:     upstream,
		PassivePorts: ports,
		LogPath:      filepath.Join(s.work, "ftpproxy-"+name+".log"),
		Args:         append(args, extra...),
	}
	px, err := peers.Within(s.topo, nsPxy, func() (*peers.Proxy, error) { return peers.StartProxy(s.ctx, cfg) })
	if err != nil {
		return nil, err
	}
	return &proxyRun{Proxy: px, name: name}, nil
}

// withLog adds the tail of the proxy's log to a failure.
func (p *proxyRun) withLog(err error) error {
	if err == nil || p == nil {
		return err
	}
	return fmt.Errorf("%w\nproxy log %s (tail):\n%s", err, p.LogPath, peers.Tail(p.Log(), 1500))
}

// health reads the proxy's health endpoint from its namespace.
func (s *suite) health() (string, error) {
	body, err := peers.Within(s.topo, nsPxy, func() (string, error) { return peers.HealthGet(healthAddr, "/") })
	return strings.TrimSpace(body), err
}

// --- clients -----------------------------------------------------------------

// drv names a client program and its data-connection mode: curl
// pasv/epsv/port/eprt, lftp passive/epsv/active, ftplib pasv/epsv/port/eprt.
type drv struct{ client, mode string }

func (d drv) String() string { return d.client + "/" + d.mode }

// transferer is what the suite needs of a client driver.
type transferer interface {
	Get(ctx context.Context, t peers.Target, remote, local string, offset int64) error
	Put(ctx context.Context, t peers.Target, local, remote string, offset int64) error
}

// lftpEPSV is lftp in passive mode with EPSV preferred (the drivers'
// default is PASV).
type lftpEPSV struct{ peers.Lftp }

func (l lftpEPSV) Get(ctx context.Context, t peers.Target, remote, local string, _ int64) error {
	_, err := l.Run(ctx, t, "set ftp:prefer-epsv yes", "get "+remote+" -o "+local)
	return err
}

func (l lftpEPSV) Put(ctx context.Context, t peers.Target, local, remote string, _ int64) error {
	_, err := l.Run(ctx, t, "set ftp:prefer-epsv yes", "put "+local+" -o "+remote)
	return err
}

// driver returns the client driver and the peers mode for d.
func (s *suite) driver(d drv) (transferer, string) {
	switch d.client {
	case "curl":
		return peers.Curl{}, d.mode
	case "lftp":
		if d.mode == "epsv" {
			return lftpEPSV{}, "passive"
		}
		return peers.Lftp{}, d.mode
	default:
		return peers.Ftplib{Script: s.script}, d.mode
	}
}

// endpoint is where a client sits and what it dials.
type endpoint struct {
	ns, source, host string
}

var (
	natClient    = endpoint{nsCli, cliIP, pxyWanIP}
	insideClient = endpoint{nsIn, inIP, pxyInIP}
	v6Client     = endpoint{nsIn, in6, pxyIn6}
)

// safe turns a case name into a file name.
func safe(name string) string {
	return strings.NewReplacer("/", "-", " ", "_", ":", "_").Replace(name)
}

// roundTrip uploads up.bin and downloads down.bin through the proxy with
// one client and mode, and checks both byte for byte.
func (s *suite) roundTrip(ep endpoint, d drv, srv *peers.Server, tag string) error {
	c, mode := s.driver(d)
	tg := peers.Target{Host: ep.host, Port: proxyPort, Source: ep.source, Mode: mode}
	remote := safe(tag) + ".up"
	local := filepath.Join(s.work, safe(tag)+".down")
	ctx, cancel := context.WithTimeout(s.ctx, opLimit)
	defer cancel()
	if err := s.topo.In(ep.ns, func() error { return c.Put(ctx, tg, s.up.Path, remote, 0) }); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	if err := peers.SameContent(srv.Path(remote), s.up.Size, s.up.Sum); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	os.Remove(srv.Path(remote))
	ctx2, cancel2 := context.WithTimeout(s.ctx, opLimit)
	defer cancel2()
	if err := s.topo.In(ep.ns, func() error { return c.Get(ctx2, tg, "down.bin", local, 0) }); err != nil {
		return fmt.Errorf("download: %w", err)
	}
	if err := peers.SameContent(local, s.down.Size, s.down.Sum); err != nil {
		return fmt.Errorf("download: %w", err)
	}
	os.Remove(local)
	return nil
}

// roundTrips runs roundTrip for each driver, one PASS/FAIL line each.
func (s *suite) roundTrips(prefix string, px *proxyRun, ep endpoint, srv *peers.Server, drvs []drv) {
	for _, d := range drvs {
		name := prefix + "/" + d.String()
		s.tl.Run(name, func() error { return px.withLog(s.roundTrip(ep, d, srv, name)) })
	}
}

// curlList runs curl -v listing the root in mode from ep and returns the
// run.
func (s *suite) curlList(ep endpoint, mode string) runResult {
	var r runResult
	s.topo.In(ep.ns, func() error {
		r = runCombined(s.ctx, opLimit, curlArgs(ep.host, proxyPort, ep.source, mode, "--list-only", ftpURL(ep.host, proxyPort, ""))...)
		return nil
	})
	return r
}

// expect227 checks that a curl trace holds a 227 reply with the address
// want (as "a,b,c,d") and returns the reply line.
func expect227(r runResult, want string) (string, error) {
	if r.err != nil {
		return "", r.failure("listing failed")
	}
	for _, line := range strings.Split(r.out, "\n") {
		if strings.HasPrefix(line, "< 227 ") {
			line = strings.TrimSpace(line)
			if !strings.Contains(line, "("+want+",") {
				return line, r.failure(fmt.Sprintf("227 reply %q does not advertise %s", line, want))
			}
			return line, nil
		}
	}
	return "", r.failure("no 227 reply in curl's trace")
}

// --- cases -------------------------------------------------------------------

// caseTopology checks that the clients cannot reach the servers (or, from
// behind the NAT, the inside net) except through the proxy, and that the
// NAT client is seen with the router's public address.
func (s *suite) caseTopology() {
	s.tl.Run("topology/isolation", func() error {
		probes := []struct{ ns, source, addr string }{
			{nsCli, cliIP, net.JoinHostPort(srvIP, strconv.Itoa(serverPort))},
			{nsCli, cliIP, net.JoinHostPort(pxyInIP, strconv.Itoa(proxyPort))},
			{nsIn, inIP, net.JoinHostPort(srvIP, strconv.Itoa(serverPort))},
			{nsIn, in6, net.JoinHostPort(srv6, strconv.Itoa(serverPort))},
			{nsIn, inIP, net.JoinHostPort(pxyWanIP, strconv.Itoa(proxyPort))},
		}
		for _, p := range probes {
			err := s.topo.In(p.ns, func() error {
				d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(p.source)}}
				c, err := d.Dial("tcp", p.addr)
				if err == nil {
					c.Close()
					return fmt.Errorf("%s reached %s from %s: the topology lets clients bypass the proxy", p.source, p.addr, s.topo.Name(p.ns))
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
}

var (
	passiveDrvs = []drv{{"curl", "pasv"}, {"curl", "epsv"}, {"lftp", "passive"}, {"lftp", "epsv"}, {"ftplib", "pasv"}, {"ftplib", "epsv"}}
	activeDrvs  = []drv{{"curl", "port"}, {"curl", "eprt"}, {"lftp", "active"}, {"ftplib", "port"}, {"ftplib", "eprt"}}
)

// caseA: PASV and EPSV from behind the masquerading router, with each
// upstream data mode.
func (s *suite) caseA() {
	for _, mode := range []string{"same", "passive", "active"} {
		prefix := "a/nat-passive/upstream-" + mode
		px, err := s.startProxy("a-"+mode, s.srv.Addr(), passiveRange, "--upstream-data-mode", mode, "--active-ports", activeRange)
		if err != nil {
			s.tl.Report(prefix+"/proxy", 0, err)
			continue
		}
		s.tl.Run(prefix+"/227-public-address", func() error {
			if _, err := expect227(s.curlList(natClient, "pasv"), "198,51,100,10"); err != nil {
				return px.withLog(err)
			}
			if !strings.Contains(px.Log(), `"client":"`+rtrWanIP+`:`) {
				return px.withLog(fmt.Errorf("the proxy did not see the client as the router's public address %s", rtrWanIP))
			}
			return nil
		})
		s.roundTrips(prefix, px, natClient, s.srv, passiveDrvs)
		s.tl.Run(prefix+"/transfer-modes", func() error {
			return px.withLog(checkModes(px, "passive", map[string]string{"same": "passive", "passive": "passive", "active": "active"}[mode]))
		})
		px.Stop()
	}
}

// caseB: PORT and EPRT from behind a router whose kernel FTP helper
// rewrites them to its public address and lets the proxy's data
// connection in.
func (s *suite) caseB() {
	modes := []string{"same", "passive"}
	var names []string
	for _, m := range modes {
		for _, d := range activeDrvs {
			names = append(names, "b/nat-helper-active/upstream-"+m+"/"+d.String())
		}
	}
	if err := s.topo.Nft(s.ctx, nsRtr, routerRules(true, proxyPort)); err != nil {
		note := tryModprobe(s.ctx)
		err2 := s.topo.Nft(s.ctx, nsRtr, routerRules(true, proxyPort))
		if err2 != nil {
			// The same ruleset without the helper loads (setup loaded
			// it), so it is the helper the kernel lacks.
			if err3 := s.topo.Nft(s.ctx, nsRtr, routerRules(false, proxyPort)); err3 != nil {
				s.tl.Report("b/nat-helper", 0, fmt.Errorf("nftables refused the helper ruleset and then the plain one: %v / %v", err2, err3))
				return
			}
			reason := fmt.Sprintf("the kernel has no FTP conntrack helper: nft refused `ct helper ftp-standard { type \"ftp\" protocol tcp; }` (%s); %s; %s",
				peers.Tail(err2.Error(), 300), note, kernelNotes())
			for _, n := range names {
				s.tl.Skip(n, reason)
			}
			return
		}
	}
	fmt.Println("nat: router: masquerade with the kernel FTP helper on port", proxyPort)
	defer func() {
		if err := s.topo.Nft(s.ctx, nsRtr, routerRules(false, proxyPort)); err != nil {
			s.tl.Report("b/restore-plain-nat", 0, err)
		}
	}()
	for _, m := range modes {
		prefix := "b/nat-helper-active/upstream-" + m
		px, err := s.startProxy("b-"+m, s.srv.Addr(), passiveRange, "--upstream-data-mode", m, "--active-ports", activeRange)
		if err != nil {
			s.tl.Report(prefix+"/proxy", 0, err)
			continue
		}
		s.roundTrips(prefix, px, natClient, s.srv, activeDrvs)
		s.tl.Run(prefix+"/transfer-modes", func() error {
			return px.withLog(checkModes(px, "active", map[string]string{"same": "active", "passive": "passive"}[m]))
		})
		s.tl.Run(prefix+"/helper-rewrote-to-public-address", func() error {
			log := px.Log()
			for _, want := range []string{`"cmd":"PORT 198,51,100,1,`, `"cmd":"EPRT |1|198.51.100.1|`} {
				if !strings.Contains(log, want) {
					return px.withLog(fmt.Errorf("no %s in the proxy's log: the helper did not rewrite the client's command", want))
				}
			}
			if strings.Contains(log, "10,10,0,2") || strings.Contains(log, "|10.10.0.2|") {
				return px.withLog(errors.New("the client's private address reached the proxy"))
			}
			return nil
		})
		px.Stop()
	}
}

// caseC: through the NAT without the helper, an active-mode client
// announces its private address; the proxy refuses at once with a 501 that
// says to use passive mode, and the client reports it and stops.
func (s *suite) caseC() {
	px, err := s.startProxy("c", s.srv.Addr(), passiveRange)
	if err != nil {
		s.tl.Report("c/proxy", 0, err)
		return
	}
	defer px.Stop()
	const want = "use passive mode."
	const quick = 10 * time.Second
	check := func(name string, r runResult, local string) error {
		if r.err == nil {
			return r.failure("the client reported success; want a failure")
		}
		if !strings.Contains(r.out, "501 Active mode refused") || !strings.Contains(r.out, want) {
			return px.withLog(r.failure("the proxy's 501 \"... " + want + "\" did not reach the client"))
		}
		if r.elapsed > quick {
			return r.failure(fmt.Sprintf("the client took %s to fail; want under %s", r.elapsed.Round(time.Millisecond), quick))
		}
		if fi, err := os.Stat(local); err == nil && fi.Size() > 0 {
			return r.failure("data arrived although the data connection was refused")
		}
		fmt.Printf("    %s failed in %s: %s\n", name, r.elapsed.Round(time.Millisecond), firstLineWith(r.out, "501 "))
		return nil
	}
	for _, mode := range []string{"port", "eprt"} {
		name := "c/nat-no-helper/curl/" + mode
		s.tl.Run(name, func() error {
			local := filepath.Join(s.work, safe(name))
			var r runResult
			s.topo.In(nsCli, func() error {
				r = runCombined(s.ctx, opLimit, curlArgs(pxyWanIP, proxyPort, cliIP, mode, "-o", local, ftpURL(pxyWanIP, proxyPort, "down.bin"))...)
				return nil
			})
			return check(name, r, local)
		})
	}
	s.tl.Run("c/nat-no-helper/lftp/active", func() error {
		local := filepath.Join(s.work, "c-lftp")
		script := strings.Join([]string{
			"set net:socket-bind-ipv4 " + cliIP,
			"set ftp:passive-mode off",
			"set ftp:prefer-epsv no",
			"set net:max-retries 1",
			"set net:timeout 10",
			"set cmd:fail-exit yes",
			fmt.Sprintf("open -u %s,%s -p %d %s", peers.User, peers.Password, proxyPort, pxyWanIP),
			"get down.bin -o " + local,
		}, "; ")
		var r runResult
		s.topo.In(nsCli, func() error {
			r = runCombined(s.ctx, opLimit, "lftp", "-c", script) // its error message, as a user sees it
			return nil
		})
		return check("c/nat-no-helper/lftp/active", r, local)
	})
	for _, mode := range []string{"port", "eprt"} {
		name := "c/nat-no-helper/ftplib/" + mode
		s.tl.Run(name, func() error {
			local := filepath.Join(s.work, safe(name))
			var r runResult
			s.topo.In(nsCli, func() error {
				r = runCombined(s.ctx, opLimit, "python3", s.script, "--host", pxyWanIP, "--port", strconv.Itoa(proxyPort),
					"--user", peers.User, "--password", peers.Password, "--source", cliIP, "--mode", mode, "--timeout", "30",
					"get", "down.bin", local)
				return nil
			})
			return check(name, r, local)
		})
	}
}

// checkModes checks that the proxy logged transfers and that every one ran
// in the given client and upstream modes.
func checkModes(px *proxyRun, client, upstream string) error {
	n := 0
	for _, line := range strings.Split(px.Log(), "\n") {
		var ev struct {
			Message      string `json:"message"`
			Mode         string `json:"mode"`
			UpstreamMode string `json:"upstream_mode"`
			Cmd          string `json:"cmd"`
		}
		if json.Unmarshal([]byte(line), &ev) != nil || ev.Message != "transfer" || ev.Cmd == "" {
			continue
		}
		n++
		if ev.Mode != client || ev.UpstreamMode != upstream {
			return fmt.Errorf("transfer %s ran client %s / upstream %s, want %s / %s", ev.Cmd, ev.Mode, ev.UpstreamMode, client, upstream)
		}
	}
	if n == 0 {
		return errors.New("no transfer in the proxy's log")
	}
	return nil
}

// firstLineWith returns the first line of out that contains sub.
func firstLineWith(out, sub string) string {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, sub) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}

// caseD: the legacy server announces 10.99.0.5, which nobody can reach; by
// default the proxy connects to its control address with the announced
// port, and transfers work. With --upstream-pasv-address reply they fail,
// which shows the address really is unreachable.
func (s *suite) caseD() {
	s.tl.Run("d/legacy-server-announces-10.99.0.5", func() error { return s.legacyErr })
	if s.legacyErr != nil {
		return
	}
	px, err := s.startProxy("d-same", s.legacy.Addr(), passiveRange)
	if err != nil {
		s.tl.Report("d/proxy", 0, err)
		return
	}
	// PASV from the client makes the proxy send PASV upstream.
	s.roundTrips("d/legacy/upstream-same", px, natClient, s.legacy, []drv{{"curl", "pasv"}, {"lftp", "passive"}, {"ftplib", "pasv"}})
	s.tl.Run("d/legacy/upstream-same/proxy-used-control-address", func() error {
		if !strings.Contains(px.Log(), `"announced":"`+legacyPasvIP+`"`) {
			return px.withLog(errors.New("the proxy's log does not show the announced 10.99.0.5 being replaced by the control address"))
		}
		return nil
	})
	px.Stop()

	// An active client (inside, no NAT) with the upstream forced passive.
	px, err = s.startProxy("d-passive", s.legacy.Addr(), passiveRange, "--upstream-data-mode", "passive")
	if err != nil {
		s.tl.Report("d/proxy-passive", 0, err)
		return
	}
	s.roundTrips("d/legacy/upstream-passive", px, insideClient, s.legacy, []drv{{"curl", "port"}, {"ftplib", "port"}})
	px.Stop()

	px, err = s.startProxy("d-reply", s.legacy.Addr(), passiveRange, "--upstream-pasv-address", "reply")
	if err != nil {
		s.tl.Report("d/proxy-reply", 0, err)
		return
	}
	// With --upstream-pasv-address reply the proxy dials 10.99.0.5, which
	// fails at once (no route): the transfer must fail, which shows the
	// announced address really is unreachable, and the client must be
	// told so promptly rather than wait for the server's own data timeout.
	local := filepath.Join(s.work, "d-reply.down")
	var r runResult
	s.topo.In(nsCli, func() error {
		argv := curlArgs(pxyWanIP, proxyPort, cliIP, "pasv", "-o", local, ftpURL(pxyWanIP, proxyPort, "down.bin"))
		argv[slices.Index(argv, "--max-time")+1] = strconv.Itoa(int(flagReplyWait.Seconds()))
		r = runCombined(s.ctx, *flagReplyWait+10*time.Second, argv...)
		return nil
	})
	s.tl.Run("d/legacy/upstream-pasv-address-reply/transfer-fails", func() error {
		if r.err == nil {
			return px.withLog(r.failure("the transfer worked with --upstream-pasv-address reply: the legacy server's 10.99.0.5 is reachable, so case d proves nothing"))
		}
		if !strings.Contains(px.Log(), "dial data "+legacyPasvIP+":") {
			return px.withLog(r.failure("the proxy's log does not show a failed dial to 10.99.0.5"))
		}
		return nil
	})
	s.tl.Run("d/legacy/upstream-pasv-address-reply/client-answered-quickly", func() error {
		_, afterRETR, _ := strings.Cut(r.out, "> RETR ")
		reply := lastReply(afterRETR)
		if strings.Contains(r.out, "Connection reset by peer") && r.elapsed <= 15*time.Second {
			// The proxy reset the client's data connection as soon as
			// its own to the upstream failed (a failed transfer ends with
			// resets), before curl had sent RETR.
			fmt.Printf("    the client's data connection was reset after %s\n", r.elapsed.Round(time.Millisecond))
			return nil
		}
		if len(reply) < 3 || (reply[2] != '4' && reply[2] != '5') {
			return px.withLog(r.failure(fmt.Sprintf("no reply to RETR after %s although the proxy's data connection to the upstream failed at once; the client waits for the server's own data timeout", r.elapsed.Round(time.Millisecond))))
		}
		if r.elapsed > 15*time.Second {
			return px.withLog(r.failure(fmt.Sprintf("the client got %q only after %s; want under 15s", reply, r.elapsed.Round(time.Millisecond))))
		}
		fmt.Printf("    the client got: %s after %s\n", reply, r.elapsed.Round(time.Millisecond))
		return nil
	})
	px.Stop()
}

// lastReply returns the last server reply line in a curl trace.
func lastReply(out string) string {
	last := ""
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "< ") {
			last = strings.TrimSpace(l)
		}
	}
	return last
}

// caseE: split horizon. Clients on the inside net get the proxy's inside
// address, everyone else its public one; ftplib connects to the address
// in the 227 (not the control address), so its transfers show that each
// side can reach what it was told.
func (s *suite) caseE() {
	px, err := s.startProxy("e", s.srv.Addr(), passiveRange,
		"--advertise", "10.30.0.0/24="+pxyInIP, "--advertise", pxyWanIP)
	if err != nil {
		s.tl.Report("e/proxy", 0, err)
		return
	}
	defer px.Stop()
	var outside, inside string
	s.tl.Run("e/split-horizon/nat-client-227", func() error {
		var err error
		outside, err = expect227(s.curlList(natClient, "pasv"), "198,51,100,10")
		return px.withLog(err)
	})
	s.tl.Run("e/split-horizon/inside-client-227", func() error {
		var err error
		inside, err = expect227(s.curlList(insideClient, "pasv"), "10,30,0,1")
		return px.withLog(err)
	})
	fmt.Printf("    outside: %s\n    inside:  %s\n", outside, inside)
	drvs := []drv{{"ftplib", "pasv"}, {"curl", "pasv"}, {"lftp", "passive"}}
	s.roundTrips("e/split-horizon/nat-client", px, natClient, s.srv, drvs)
	s.roundTrips("e/split-horizon/inside-client", px, insideClient, s.srv, drvs)
}

// caseF: an IPv6 client in front of the IPv4-only server, and IPv4
// clients in front of the IPv6-only server.
func (s *suite) caseF() {
	v6drvs := []drv{{"curl", "epsv"}, {"curl", "eprt"}, {"lftp", "passive"}, {"lftp", "active"}, {"ftplib", "epsv"}, {"ftplib", "eprt"}}
	for _, mode := range []string{"same", "active"} {
		prefix := "f/v6-client-v4-server/upstream-" + mode
		px, err := s.startProxy("f-v6c-"+mode, s.srv.Addr(), passiveRange, "--upstream-data-mode", mode, "--active-ports", activeRange)
		if err != nil {
			s.tl.Report(prefix+"/proxy", 0, err)
			continue
		}
		drvs := v6drvs
		if mode != "same" {
			drvs = []drv{{"curl", "epsv"}, {"ftplib", "eprt"}}
		}
		s.roundTrips(prefix, px, v6Client, s.srv, drvs)
		px.Stop()
	}
	v4drvs := []drv{{"curl", "pasv"}, {"curl", "port"}, {"lftp", "passive"}, {"lftp", "active"}, {"ftplib", "pasv"}, {"ftplib", "port"}}
	up6 := s.srv6.Addr()
	for _, mode := range []string{"same", "active"} {
		prefix := "f/v4-client-v6-server/upstream-" + mode
		px, err := s.startProxy("f-v6s-"+mode, up6, passiveRange, "--upstream-data-mode", mode, "--active-ports", activeRange)
		if err != nil {
			s.tl.Report(prefix+"/proxy", 0, err)
			continue
		}
		if mode == "same" {
			s.roundTrips(prefix+"/inside", px, insideClient, s.srv6, v4drvs)
			s.roundTrips(prefix+"/nat", px, natClient, s.srv6, []drv{{"curl", "pasv"}, {"curl", "epsv"}})
		} else {
			s.roundTrips(prefix+"/nat", px, natClient, s.srv6, []drv{{"curl", "pasv"}, {"ftplib", "epsv"}})
		}
		px.Stop()
	}
}

// caseG: a passive range of 4 ports and many concurrent clients. Two
// sessions hold ports while the others run, so the range runs out: every
// client either transfers or gets the 425 that says so and succeeds when
// it tries again. Afterwards the health endpoint shows every port back.
func (s *suite) caseG() {
	px, err := s.startProxy("g", s.srv.Addr(), smallRange, "--data-accept-timeout", "60s")
	if err != nil {
		s.tl.Report("g/proxy", 0, err)
		return
	}
	defer px.Stop()
	ctrl := net.JoinHostPort(pxyWanIP, strconv.Itoa(proxyPort))
	var holders []*peers.Ctrl
	var holderData [smallSize]string
	defer func() {
		for _, h := range holders {
			h.Close()
		}
	}()
	ok := s.tl.Run("g/four-ports/exhausted-gives-425", func() error {
		return px.withLog(s.topo.In(nsCli, func() error {
			for i := range smallSize {
				h, err := dialFTP(ctrl, cliIP)
				if err != nil {
					return fmt.Errorf("holder %d: %w", i, err)
				}
				holders = append(holders, h)
				code, text, err := h.Cmd("PASV")
				if err != nil || code != 227 {
					return fmt.Errorf("holder %d PASV: %d %q %v", i, code, text, err)
				}
				holderData[i] = text
			}
			extra, err := dialFTP(ctrl, cliIP)
			if err != nil {
				return err
			}
			defer extra.Close()
			code, text, err := extra.Cmd("PASV")
			if err != nil || code != 425 || !strings.Contains(text, "no free passive port") {
				return fmt.Errorf("PASV with every port taken: %d %q %v; want 425 ... no free passive port", code, text, err)
			}
			code, text, err = extra.Cmd("EPSV")
			if err != nil || code != 425 {
				return fmt.Errorf("EPSV with every port taken: %d %q %v; want 425", code, text, err)
			}
			fmt.Printf("    with %d ports held: %s\n", smallSize, text)
			return nil
		}))
	})
	s.tl.Run("g/four-ports/health-shows-4-of-4", func() error {
		body, err := s.health()
		if err != nil {
			return err
		}
		if !strings.Contains(body, "4/4 passive ports in use") {
			return fmt.Errorf("health: %q, want 4/4 passive ports in use", body)
		}
		return nil
	})
	// One holder gives its port back by ending its session; three keep
	// theirs through the burst, which leaves one port for all clients.
	held := 0
	if ok && len(holders) == smallSize {
		holders[0].Cmd("QUIT")
		holders[0].Close()
		holders = holders[1:]
		held = len(holders)
	}

	n := *flagClients
	type result struct {
		attempts int
		got425   int
		err      error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			var ep endpoint
			var kind string
			switch {
			case i%4 == 3:
				ep, kind = insideClient, "curl-pasv"
			case i%4 == 2:
				ep, kind = natClient, "ftplib-pasv"
			case i%4 == 1:
				ep, kind = natClient, "curl-pasv"
			default:
				ep, kind = natClient, "curl-epsv"
			}
			local := filepath.Join(s.work, fmt.Sprintf("g-%02d.down", i))
			deadline := time.Now().Add(90 * time.Second)
			for {
				results[i].attempts++
				os.Remove(local)
				var r runResult
				s.topo.In(ep.ns, func() error {
					switch kind {
					case "ftplib-pasv":
						r = runCombined(s.ctx, opLimit, "python3", s.script, "--host", ep.host, "--port", strconv.Itoa(proxyPort),
							"--user", peers.User, "--password", peers.Password, "--source", ep.source, "--mode", "pasv", "--timeout", "30",
							"get", "down.bin", local)
					default:
						r = runCombined(s.ctx, opLimit, curlArgs(ep.host, proxyPort, ep.source, strings.TrimPrefix(kind, "curl-"),
							"-o", local, ftpURL(ep.host, proxyPort, "down.bin"))...)
					}
					return nil
				})
				if r.err == nil {
					results[i].err = peers.SameContent(local, s.down.Size, s.down.Sum)
					os.Remove(local)
					return
				}
				if !strings.Contains(r.out, "425 Can't open data connection: no free passive port") {
					results[i].err = r.failure(fmt.Sprintf("client %d (%s), attempt %d: failed without the proxy's 425", i, kind, results[i].attempts))
					return
				}
				results[i].got425++
				if time.Now().After(deadline) || s.ctx.Err() != nil {
					results[i].err = r.failure(fmt.Sprintf("client %d (%s): still 425 after %d attempts", i, kind, results[i].attempts))
					return
				}
				time.Sleep(time.Duration(50+10*i) * time.Millisecond)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	var errs []error
	total425, retried := 0, 0
	for _, r := range results {
		if r.err != nil {
			errs = append(errs, r.err)
		}
		total425 += r.got425
		if r.got425 > 0 {
			retried++
		}
	}
	s.tl.Report(fmt.Sprintf("g/four-ports/%d-concurrent-clients", n), elapsed, px.withLog(errors.Join(errs...)))
	fmt.Printf("    %d clients, %d of 4 ports held: %d got 425 at least once (%d 425s in all) and then succeeded\n", n, held, retried, total425)

	s.tl.Run("g/four-ports/held-port-still-works", func() error {
		if len(holders) == 0 {
			return errors.New("no holder left (the exhaustion step failed)")
		}
		h := holders[0]
		data, err := peers.ParsePASV(holderData[1])
		if err != nil {
			return err
		}
		return px.withLog(s.topo.In(nsCli, func() error {
			sum, size, err := retrOver(h, data, cliIP, "down.bin")
			if err != nil {
				return err
			}
			if sum != s.down.Sum || size != s.down.Size {
				return fmt.Errorf("held port: %d bytes sha256 %.16s, want %d bytes %.16s", size, sum, s.down.Size, s.down.Sum)
			}
			return nil
		}))
	})
	// The last holder's session ends with its port still waiting for a
	// data connection.
	for _, h := range holders {
		h.Close()
	}
	holders = nil
	s.tl.Run("g/four-ports/health-shows-0-of-4", func() error {
		var body string
		var err error
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			body, err = s.health()
			if err == nil && strings.Contains(body, "0/4 passive ports in use") {
				fmt.Printf("    health: %s\n", body)
				return nil
			}
			time.Sleep(200 * time.Millisecond)
		}
		return px.withLog(fmt.Errorf("health after the burst: %q (%v), want 0/4 passive ports in use", body, err))
	})
}
