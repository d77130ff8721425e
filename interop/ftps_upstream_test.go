//go:build interop

package interop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

// The FTPS-upstream suite: the proxy speaks FTPS (RFC 4217) to servers
// that require it, whatever its clients speak. Each server runs with TLS
// required on control and data connections and with data connections
// required to resume the control connection's TLS session; vsftpd also
// fails an upload that ends without a TLS close_notify. Plain clients
// (curl, ftplib) go through a proxy with --upstream-tls explicit; TLS
// clients (curl --ssl-reqd, ftplib FTP_TLS) through one with match; a
// vsftpd with implicit TLS is reached with --upstream-tls implicit. The
// negative cases want a 421 that names the reason, at once, and no
// plaintext fallback.

var flagFTPSUpBig = flag.Int("ftps-upstream-big", 64, "size of the large file of the FTPS-upstream suite in MiB")

// Addresses and ports of the suite, apart from the other suites' (the
// matrix uses 2100/2121 and passive ports 21000-22299, the pipelining
// suite 24000-24099 and 2122).
const (
	ftpsUpServerName = "ftps.interop.test" // the servers' certificate names only this
	ftpsUpDirectIP   = "127.0.0.5"         // source of the checks that talk to a server directly

	ftpsUpTLSPort      = 2140 // the TLS-required server of each kind (explicit FTPS)
	ftpsUpImplicitPort = 2141 // vsftpd with implicit TLS
	ftpsUpPlainPort    = 2142 // vsftpd without TLS, which refuses AUTH

	ftpsUpExplicitProxy  = 2140 // on the proxy host: --upstream-tls explicit
	ftpsUpMatchProxy     = 2141 // --upstream-tls match, with a certificate of its own
	ftpsUpImplicitProxy  = 2142 // --upstream-tls implicit
	ftpsUpImplicitListen = 2143 // its --listen-implicit
	ftpsUpNegativeProxy  = 2144 // the negative cases, one proxy at a time
)

// Passive port ranges: the servers' and the proxies'.
var (
	ftpsUpTLSPasv      = [2]int{25000, 25099}
	ftpsUpImplicitPasv = [2]int{25100, 25199}
	ftpsUpPlainPasv    = [2]int{25200, 25299}
	ftpsUpProxyPasv    = "25300-25399"
)

// Bounds of the checks that talk to a server or the proxy themselves.
const (
	ftpsUpReplyTimeout = 10 * time.Second // one reply
	ftpsUpDataTimeout  = 20 * time.Second // one data connection, dial to EOF
	ftpsUpRefusalLimit = 10 * time.Second // from connect to the 421 of a refused upstream
	ftpsUpCurlMaxTime  = "120"            // curl --max-time, seconds
)

// TestFTPSUpstream runs the FTPS-upstream cases and prints one line per
// case and the totals.
func TestFTPSUpstream(t *testing.T) {
	if *flagDirect {
		t.Skip("ftps-upstream: every case but the servers' own checks is about the proxy, so -direct has nothing to run")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	e := &ftpsUpEnv{ctx: ctx, peersDir: absPath(*flagPeers), proxyBin: absPath(*flagProxyBin), script: absPath(*flagScript),
		source: *flagClientIP, big: int64(*flagFTPSUpBig) << 20, bigLabel: fmt.Sprintf("%dMiB", *flagFTPSUpBig)}
	for _, p := range []string{e.peersDir, e.script} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%v (run interop/install-peers.sh first)", err)
		}
	}
	var kinds []peers.Kind
	for _, name := range splitList(*flagServers) {
		kind, ok := peers.KindByName(name)
		if !ok {
			t.Fatalf("unknown server %q", name)
		}
		kinds = append(kinds, kind)
		if kind.Name != peers.ProFTPd.Name {
			continue
		}
		if _, err := os.Stat(filepath.Join(e.peersDir, "proftpd/usr/lib/proftpd/mod_tls.so")); err != nil {
			t.Fatalf("proftpd's mod_tls: %v (run interop/install-peers.sh: it unpacks proftpd-mod-crypto)", err)
		}
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatalf("curl: %v", err)
	}
	e.proxyHost, _, _ = net.SplitHostPort(*flagProxyAddr)
	e.serverHost, _, _ = net.SplitHostPort(*flagServer)

	work := suiteWork(t, "ftps-upstream")
	e.work = work
	tl := &tally{}
	defer func() {
		if tl.failed > 0 || *flagKeep || t.Failed() {
			fmt.Printf("ftps-upstream: work directory kept: %s\n", work)
		} else {
			os.RemoveAll(work)
		}
	}()
	start := time.Now()
	fmt.Printf("ftps-upstream: servers %s, large file %s, work %s\n", *flagServers, e.bigLabel, work)
	if err := e.prepare(); err != nil {
		t.Fatal(err)
	}
	if e.proxyErr != nil {
		fmt.Printf("ftps-upstream: %v: the proxy cases fail\n", e.proxyErr)
	}

	vsftpd := false
	for _, kind := range kinds {
		vsftpd = vsftpd || kind.Name == peers.Vsftpd.Name
		e.runRequired(tl, kind)
	}
	if vsftpd {
		e.runImplicit(tl)
		e.runNegative(tl)
	}
	fmt.Printf("ftps-upstream: done in %.1fs\n", time.Since(start).Seconds())
	fmt.Printf("ftps-upstream: %d passed, %d failed\n", tl.passed, tl.failed)
	if tl.failed > 0 {
		sort.Strings(tl.failures)
		t.Errorf("%d ftps-upstream cases failed:\n  %s", tl.failed, strings.Join(tl.failures, "\n  "))
	}
}

// ftpsUpEnv is what every block of the suite shares.
type ftpsUpEnv struct {
	ctx                        context.Context
	peersDir, proxyBin, script string
	work                       string
	source                     string // the clients' address
	proxyHost, serverHost      string
	big                        int64
	bigLabel                   string
	pki                        *peers.PKI // the servers' CA; it issued the proxy's certificate too
	wrongCA                    string     // a CA that issued none of them
	roots                      *x509.CertPool
	proxyCert, proxyKey        string
	local                      map[string]peers.File // upload sources, by label: 0B, 1MiB, big
	ftplibScript               string                // ftpsUpFtplibScript, as a file
	proxyErr                   error                 // why the proxy cannot run the cases, if it cannot
}

// prepare makes the certificates and the local files, and checks that the
// proxy has the upstream TLS flags.
func (e *ftpsUpEnv) prepare() error {
	var err error
	if e.pki, err = peers.MakeTestPKI(filepath.Join(e.work, "pki"), ftpsUpServerName); err != nil {
		return err
	}
	if e.proxyCert, e.proxyKey, err = e.pki.Issue("proxy", e.proxyHost); err != nil {
		return err
	}
	wrong, err := peers.MakeTestPKI(filepath.Join(e.work, "pki-wrong"), ftpsUpServerName)
	if err != nil {
		return err
	}
	e.wrongCA = wrong.CAFile
	pem, err := os.ReadFile(e.pki.CAFile)
	if err != nil {
		return err
	}
	e.roots = x509.NewCertPool()
	e.roots.AppendCertsFromPEM(pem)
	e.ftplibScript = filepath.Join(e.work, "ftplib_session.py")
	if err := os.WriteFile(e.ftplibScript, []byte(ftpsUpFtplibScript), 0o644); err != nil {
		return err
	}
	dir := filepath.Join(e.work, "local")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	e.local = map[string]peers.File{}
	for i, s := range []struct {
		label string
		size  int64
	}{{"0B", 0}, {"1MiB", 1 << 20}, {e.bigLabel, e.big}} {
		if e.local[s.label], err = peers.WriteRandom(filepath.Join(dir, "u-"+s.label+".bin"), s.size, uint64(300+i)); err != nil {
			return err
		}
	}
	help, _ := exec.Command(e.proxyBin, "--help").CombinedOutput()
	for _, f := range []string{"upstream-tls", "upstream-ca", "upstream-server-name", "upstream-insecure-skip-verify"} {
		if !regexp.MustCompile(`(?m)^\s+--?` + f + `\b`).Match(help) {
			e.proxyErr = fmt.Errorf("%s has no --%s flag", e.proxyBin, f)
			break
		}
	}
	return nil
}

// ftpsUpServerFiles writes the download sources of the suite into the
// server's root, owned by the session account: d-0B.bin, d-1MiB.bin and
// the large one.
func (e *ftpsUpEnv) serverFiles(srv *peers.Server) (map[string]peers.File, error) {
	files := map[string]peers.File{}
	for i, s := range []struct {
		label string
		size  int64
	}{{"0B", 0}, {"1MiB", 1 << 20}, {e.bigLabel, e.big}} {
		name := "d-" + s.label + ".bin"
		f, err := peers.WriteRandom(srv.Path(name), s.size, uint64(400+i))
		if err != nil {
			return nil, err
		}
		if err := os.Chown(f.Path, srv.UID, srv.GID); err != nil {
			return nil, err
		}
		files[s.label] = f
	}
	return files, nil
}

// upstreamArgs are the proxy flags that make it verify the servers.
func (e *ftpsUpEnv) upstreamArgs(mode string) []string {
	return []string{"--upstream-tls", mode, "--upstream-ca", e.pki.CAFile, "--upstream-server-name", ftpsUpServerName,
		"--drain-timeout", "2s"}
}

// clientTLSArgs are the proxy flags that give it a certificate for FTPS
// clients.
func (e *ftpsUpEnv) clientTLSArgs() []string {
	return []string{"--tls-cert", e.proxyCert, "--tls-key", e.proxyKey}
}

// startProxy starts a proxy in front of srv, listening on port of the
// proxy host, with its log in the server's work directory.
func (e *ftpsUpEnv) startProxy(srv *peers.Server, port int, name string, args ...string) (*peers.Proxy, error) {
	if e.proxyErr != nil {
		return nil, e.proxyErr
	}
	return peers.StartProxy(e.ctx, peers.ProxyConfig{
		Bin: e.proxyBin, Listen: net.JoinHostPort(e.proxyHost, strconv.Itoa(port)), Upstream: srv.Addr(),
		PassivePorts: ftpsUpProxyPasv, LogPath: filepath.Join(srv.Dir, "ftpproxy-"+name+".log"), Args: args,
	})
}

// --- the blocks ----------------------------------------------------------------

// runRequired runs the cases against one server that requires TLS: the
// server on its own, then plain clients through --upstream-tls explicit,
// then TLS clients through --upstream-tls match.
func (e *ftpsUpEnv) runRequired(tl *tally, kind peers.Kind) {
	g := &group{tl: tl, label: "ftps-upstream/" + kind.Name}
	defer g.flush()
	var srv *peers.Server
	if !g.run("start", func() error {
		var err error
		srv, err = peers.StartServer(e.ctx, kind, e.peersDir, e.work, e.serverHost, ftpsUpTLSPort,
			peers.PassivePorts(ftpsUpTLSPasv[0], ftpsUpTLSPasv[1]),
			peers.TLS(peers.TLSOptions{CertFile: e.pki.CertFile, KeyFile: e.pki.KeyFile, Require: true, UploadCloseNotify: true}))
		return err
	}) {
		return
	}
	defer srv.Stop()
	var files map[string]peers.File
	if !g.run("files", func() (err error) { files, err = e.serverFiles(srv); return err }) {
		return
	}
	e.directCases(g, srv, files, false)
	g.flush()

	var px *peers.Proxy
	if g.run("proxy-start explicit", func() (err error) {
		px, err = e.startProxy(srv, ftpsUpExplicitProxy, "explicit", e.upstreamArgs("explicit")...)
		return err
	}) {
		pr := &ftpsUpProxyRun{px: px, port: ftpsUpExplicitProxy}
		for _, cm := range []struct {
			client  ftpsUpClient
			mode    string
			withBig bool
		}{
			{ftpsUpCurl, "epsv", true}, {ftpsUpCurl, "port", false},
			{ftpsUpFtplib, "pasv", false}, {ftpsUpFtplib, "eprt", true},
		} {
			e.transferCases(g, srv, pr, files, cm.client, cm.mode, cm.withBig)
			g.flush()
		}
		g.run("proxy-stop explicit", px.Stop)
		g.run("proxy-log explicit", pr.checkLog(e.big))
	}
	g.flush()

	if g.run("proxy-start match", func() (err error) {
		px, err = e.startProxy(srv, ftpsUpMatchProxy, "match", append(e.upstreamArgs("match"), e.clientTLSArgs()...)...)
		return err
	}) {
		pr := &ftpsUpProxyRun{px: px, port: ftpsUpMatchProxy}
		e.transferCases(g, srv, pr, files, ftpsUpCurlTLS, "epsv", true)
		e.transferCases(g, srv, pr, files, ftpsUpCurlTLS, "pasv", false)
		e.transferCases(g, srv, pr, files, ftpsUpFtplibTLS, "port", false)
		e.transferCases(g, srv, pr, files, ftpsUpFtplibTLS, "eprt", true)
		// match sends no AUTH for a plain client: the server, which
		// requires TLS, refuses the login itself.
		g.run("plain-client refused-by-server", func() error {
			return e.expectNoLogin(net.JoinHostPort(e.proxyHost, strconv.Itoa(ftpsUpMatchProxy)), regexp.MustCompile(`^(530|550|421|534|5\d\d) `))
		})
		g.run("proxy-stop match", px.Stop)
		g.run("proxy-log match", pr.checkLog(e.big))
	}
}

// runImplicit runs the cases against vsftpd with implicit TLS, through a
// proxy with --upstream-tls implicit that takes plain, explicit and
// implicit FTPS clients.
func (e *ftpsUpEnv) runImplicit(tl *tally) {
	g := &group{tl: tl, label: "ftps-upstream/vsftpd-implicit"}
	defer g.flush()
	var srv *peers.Server
	if !g.run("start", func() error {
		var err error
		srv, err = peers.StartServer(e.ctx, peers.Vsftpd, e.peersDir, e.work, e.serverHost, ftpsUpImplicitPort,
			peers.PassivePorts(ftpsUpImplicitPasv[0], ftpsUpImplicitPasv[1]),
			peers.TLS(peers.TLSOptions{CertFile: e.pki.CertFile, KeyFile: e.pki.KeyFile, Require: true, Implicit: true, UploadCloseNotify: true}))
		return err
	}) {
		return
	}
	defer srv.Stop()
	var files map[string]peers.File
	if !g.run("files", func() (err error) { files, err = e.serverFiles(srv); return err }) {
		return
	}
	e.directCases(g, srv, files, true)
	g.flush()

	var px *peers.Proxy
	implicitListen := net.JoinHostPort(e.proxyHost, strconv.Itoa(ftpsUpImplicitListen))
	if !g.run("proxy-start implicit", func() (err error) {
		args := append(e.upstreamArgs("implicit"), e.clientTLSArgs()...)
		px, err = e.startProxy(srv, ftpsUpImplicitProxy, "implicit", append(args, "--listen-implicit", implicitListen)...)
		return err
	}) {
		return
	}
	pr := &ftpsUpProxyRun{px: px, port: ftpsUpImplicitProxy}
	e.transferCases(g, srv, pr, files, ftpsUpCurl, "epsv", true)
	e.transferCases(g, srv, pr, files, ftpsUpFtplib, "port", false)
	e.transferCases(g, srv, pr, files, ftpsUpCurlTLS, "pasv", false)
	e.transferCases(g, srv, pr, files, ftpsUpFtplibTLS, "eprt", false)
	implicitRun := &ftpsUpProxyRun{px: px, port: ftpsUpImplicitListen}
	e.transferCases(g, srv, implicitRun, files, ftpsUpCurlImplicit, "epsv", false)
	g.run("proxy-stop implicit", px.Stop)
	g.run("proxy-log implicit", pr.checkLog(e.big))
}

// runNegative runs the cases that must fail: an upstream certificate the
// proxy cannot verify, and a server that refuses AUTH TLS. The client must
// get a 421 that says why within ftpsUpRefusalLimit, the proxy must log
// the reason, and the server must never see the login.
func (e *ftpsUpEnv) runNegative(tl *tally) {
	g := &group{tl: tl, label: "ftps-upstream/negative"}
	defer g.flush()
	var tlsSrv, plainSrv *peers.Server
	if !g.run("start vsftpd-tls", func() (err error) {
		tlsSrv, err = peers.StartServer(e.ctx, peers.Vsftpd, e.peersDir, e.work, e.serverHost, ftpsUpTLSPort,
			peers.PassivePorts(ftpsUpTLSPasv[0], ftpsUpTLSPasv[1]),
			peers.TLS(peers.TLSOptions{CertFile: e.pki.CertFile, KeyFile: e.pki.KeyFile, Require: true}))
		return err
	}) {
		return
	}
	defer tlsSrv.Stop()
	if !g.run("start vsftpd-plain", func() (err error) {
		plainSrv, err = peers.StartServer(e.ctx, peers.Vsftpd, e.peersDir, e.work, e.serverHost, ftpsUpPlainPort,
			peers.PassivePorts(ftpsUpPlainPasv[0], ftpsUpPlainPasv[1]))
		return err
	}) {
		return
	}
	defer plainSrv.Stop()
	plainFiles, err := e.serverFiles(plainSrv)
	if err != nil {
		g.run("files", func() error { return err })
		return
	}
	tlsFiles, err := e.serverFiles(tlsSrv)
	if err != nil {
		g.run("files", func() error { return err })
		return
	}
	g.flush()

	cert := regexp.MustCompile(`(?i)certificate`)
	handshake := regexp.MustCompile(`(?i)tls|handshake`)
	auth := regexp.MustCompile(`AUTH`)
	authLog := regexp.MustCompile(`(?i)auth.*(refus|530|fail)|(refus|530|fail).*auth`)
	refusals := []struct {
		name         string
		srv          *peers.Server
		args         []string
		reply, logRE *regexp.Regexp // the 421's text; a line of the proxy's log
	}{
		{"wrong-ca", tlsSrv, []string{"--upstream-tls", "explicit", "--upstream-ca", e.wrongCA, "--upstream-server-name", ftpsUpServerName}, cert, cert},
		{"system-roots", tlsSrv, []string{"--upstream-tls", "explicit", "--upstream-server-name", ftpsUpServerName}, cert, cert},
		// The default name is the host of --upstream, 127.0.0.3, which
		// the servers' certificate does not name.
		{"default-server-name-ip", tlsSrv, []string{"--upstream-tls", "explicit", "--upstream-ca", e.pki.CAFile}, cert, cert},
		// A plain greeting where a TLS handshake should be.
		{"implicit-to-explicit-server", tlsSrv, []string{"--upstream-tls", "implicit", "--upstream-ca", e.pki.CAFile, "--upstream-server-name", ftpsUpServerName}, handshake, handshake},
		{"auth-refused", plainSrv, []string{"--upstream-tls", "explicit", "--upstream-ca", e.pki.CAFile, "--upstream-server-name", ftpsUpServerName}, auth, authLog},
	}
	for _, c := range refusals {
		g.run(c.name, func() error { return e.refusal(c.name, c.srv, c.reply, c.logRE, c.args...) })
		g.flush()
	}
	// The flag that turns verification off does turn it off, and match
	// with a plain client leaves a plain server in the clear.
	g.run("insecure-skip-verify", func() error {
		return e.oneProxySession(tlsSrv, "insecure", tlsFiles, ftpsUpCurl, "--upstream-tls", "explicit", "--upstream-ca", e.wrongCA,
			"--upstream-server-name", ftpsUpServerName, "--upstream-insecure-skip-verify")
	})
	g.run("match-plain-client-plain-server", func() error {
		return e.oneProxySession(plainSrv, "match-plain", plainFiles, ftpsUpCurl, append([]string{"--upstream-tls", "match"}, e.clientTLSArgs()...)...)
	})
}

// --- cases ---------------------------------------------------------------------

// directCases check the server on its own, from ftpsUpDirectIP (which
// run.sh's firewall lets through): curl over FTPS lists, downloads and
// uploads; a plain login is refused; a data connection with a fresh TLS
// session is refused and one that resumes the control session's works,
// so a proxy that passes the other cases does resume it.
func (e *ftpsUpEnv) directCases(g *group, srv *peers.Server, files map[string]peers.File, implicit bool) {
	g.run("direct curl-tls list+get+put-1MiB", func() error {
		scheme, tlsArgs := "ftp", []string{"--ssl-reqd"}
		if implicit {
			scheme, tlsArgs = "ftps", nil
		}
		base := fmt.Sprintf("%s://%s:%d/", scheme, ftpsUpServerName, srv.Port)
		common := append([]string{"curl", "-sS", "--max-time", "30", "--interface", ftpsUpDirectIP, "--cacert", e.pki.CAFile,
			"--resolve", fmt.Sprintf("%s:%d:%s", ftpsUpServerName, srv.Port, srv.Host),
			"--user", peers.User + ":" + peers.Password, "--ftp-pasv"}, tlsArgs...)
		list, err := peers.RunTool(e.ctx, time.Minute, append(common, base)...)
		if err != nil {
			return err
		}
		if !strings.Contains(list, "d-1MiB.bin") {
			return fmt.Errorf("listing lacks d-1MiB.bin:\n%s", list)
		}
		dl := filepath.Join(e.work, "dl-direct-"+filepath.Base(srv.Dir)+".bin")
		defer os.Remove(dl)
		if _, err := peers.RunTool(e.ctx, time.Minute, append(common, "-o", dl, base+"d-1MiB.bin")...); err != nil {
			return err
		}
		f := files["1MiB"]
		if err := peers.SameContent(dl, f.Size, f.Sum); err != nil {
			return err
		}
		// TLS 1.2: with 1.3, vsftpd sends its session ticket on the
		// data connection after the handshake, and curl closes an
		// upload's connection without reading it; the reset that
		// follows makes vsftpd fail about one upload in three with
		// "426 Failure reading network stream".
		up := e.local["1MiB"]
		if _, err := peers.RunTool(e.ctx, time.Minute, append(common, "--tls-max", "1.2", "-T", up.Path, base+"direct-up.bin")...); err != nil {
			return err
		}
		return peers.SameContent(srv.Path("direct-up.bin"), up.Size, up.Sum)
	})
	if !implicit {
		g.run("direct plain-login-refused", func() error {
			return e.expectNoLogin(srv.Addr(), regexp.MustCompile(`^(530|550|421) `), ftpsUpDirectIP)
		})
	}
	reuse := "direct data-session-reuse-required"
	if !ftpsUpReuseRequired(srv.Kind) {
		reuse = "direct data-session-reuse-optional"
	}
	g.run(reuse, func() error { return e.directReuse(srv, files["1MiB"], implicit) })
	if srv.Kind.Name == peers.Vsftpd.Name && srv.TLS.UploadCloseNotify {
		g.run("direct upload-close-notify-required", func() error { return e.directCloseNotify(srv, implicit) })
	}
}

// ftpsUpClient is a client program and how it talks to the proxy.
type ftpsUpClient struct {
	name string // curl or ftplib
	tls  string // "", "explicit" or "implicit"
}

func (c ftpsUpClient) String() string {
	if c.tls == "" {
		return c.name
	}
	return c.name + "-" + map[string]string{"explicit": "tls", "implicit": "implicit"}[c.tls]
}

var (
	ftpsUpCurl         = ftpsUpClient{name: "curl"}
	ftpsUpCurlTLS      = ftpsUpClient{name: "curl", tls: "explicit"}
	ftpsUpCurlImplicit = ftpsUpClient{name: "curl", tls: "implicit"}
	ftpsUpFtplib       = ftpsUpClient{name: "ftplib"}
	ftpsUpFtplibTLS    = ftpsUpClient{name: "ftplib", tls: "explicit"}
)

// ftpsUpProxyRun is one proxy, the port a client uses, and the large
// transfers that passed through it.
type ftpsUpProxyRun struct {
	px             *peers.Proxy
	port           int
	bigUp, bigDown int
}

// checkLog checks the proxy's "transfer" lines against the large transfers
// that passed: one line with that many bytes for each.
func (pr *ftpsUpProxyRun) checkLog(big int64) func() error {
	return func() error {
		downs, ups, err := peers.ReadTransfers(pr.px.LogPath)
		if err != nil {
			return err
		}
		if pr.bigDown+pr.bigUp == 0 {
			return fmt.Errorf("no large transfer passed, nothing to compare")
		}
		if got := count(downs, big); got < pr.bigDown {
			return fmt.Errorf("%d transfer lines with down=%d in %s, want at least %d", got, big, pr.px.LogPath, pr.bigDown)
		}
		if got := count(ups, big); got < pr.bigUp {
			return fmt.Errorf("%d transfer lines with up=%d in %s, want at least %d", got, big, pr.px.LogPath, pr.bigUp)
		}
		return nil
	}
}

// transferCases runs the transfer cases of one client in one mode through
// the proxy: two downloads (0 B and 1 MiB) in one session, two uploads in
// one session, and with withBig the large file each way. Every file is
// compared by sha256 with the server's disk.
func (e *ftpsUpEnv) transferCases(g *group, srv *peers.Server, pr *ftpsUpProxyRun, files map[string]peers.File, c ftpsUpClient, mode string, withBig bool) {
	prefix := c.String() + "/" + mode
	dl := filepath.Join(e.work, "dl", filepath.Base(srv.Dir), c.String()+"-"+mode)
	os.MkdirAll(dl, 0o755)
	addr := net.JoinHostPort(e.proxyHost, strconv.Itoa(pr.port))
	get := func(labels ...string) error {
		var xs []ftpsUpXfer
		for _, l := range labels {
			xs = append(xs, ftpsUpXfer{remote: "d-" + l + ".bin", local: filepath.Join(dl, "d-"+l+".bin")})
		}
		if err := e.session(c, addr, mode, xs); err != nil {
			return err
		}
		for i, l := range labels {
			f := files[l]
			if err := peers.SameContent(xs[i].local, f.Size, f.Sum); err != nil {
				return fmt.Errorf("download %s: %w", xs[i].remote, err)
			}
			os.Remove(xs[i].local)
		}
		return nil
	}
	put := func(labels ...string) error {
		var xs []ftpsUpXfer
		for _, l := range labels {
			xs = append(xs, ftpsUpXfer{put: true, local: e.local[l].Path, remote: "u-" + c.String() + "-" + mode + "-" + l + ".bin"})
		}
		if err := e.session(c, addr, mode, xs); err != nil {
			return err
		}
		for i, l := range labels {
			f := e.local[l]
			if err := peers.SameContent(srv.Path(xs[i].remote), f.Size, f.Sum); err != nil {
				return fmt.Errorf("upload %s, on the server: %w", xs[i].remote, err)
			}
		}
		return nil
	}
	g.run(prefix+" get-0B+1MiB", func() error { return get("0B", "1MiB") })
	g.run(prefix+" put-0B+1MiB", func() error { return put("0B", "1MiB") })
	if withBig {
		if g.run(prefix+" get-"+e.bigLabel, func() error { return get(e.bigLabel) }) {
			pr.bigDown++
		}
		if g.run(prefix+" put-"+e.bigLabel, func() error { return put(e.bigLabel) }) {
			pr.bigUp++
		}
	}
}

// ftpsUpXfer is one transfer of a session: a download of remote into
// local, or with put an upload of local to remote.
type ftpsUpXfer struct {
	put           bool
	local, remote string
}

// session runs the transfers in one session of the client, connected to
// addr, in the data-connection mode mode (epsv, pasv, port, eprt).
func (e *ftpsUpEnv) session(c ftpsUpClient, addr, mode string, xs []ftpsUpXfer) error {
	switch c.name {
	case "curl":
		return e.curlSession(c, addr, mode, xs)
	case "ftplib":
		return e.ftplibSession(c, addr, mode, xs)
	}
	return fmt.Errorf("unknown client %q", c.name)
}

// curlSession runs one curl with one URL per transfer; curl keeps the
// control connection for all of them. The transfers must go one way.
func (e *ftpsUpEnv) curlSession(c ftpsUpClient, addr, mode string, xs []ftpsUpXfer) error {
	scheme := "ftp"
	// --fail-early: with several URLs curl's exit status is otherwise
	// the last transfer's only.
	argv := []string{"curl", "-sS", "--fail-early", "--max-time", ftpsUpCurlMaxTime, "--connect-timeout", "10", "--interface", e.source,
		"--user", peers.User + ":" + peers.Password, "--ftp-method", "nocwd"}
	switch c.tls {
	case "explicit":
		argv = append(argv, "--ssl-reqd", "--cacert", e.pki.CAFile)
	case "implicit":
		scheme = "ftps"
		argv = append(argv, "--cacert", e.pki.CAFile)
	}
	switch mode {
	case "epsv":
		argv = append(argv, "--ftp-pasv")
	case "pasv":
		argv = append(argv, "--ftp-pasv", "--disable-epsv")
	case "port":
		argv = append(argv, "-P", e.source, "--disable-eprt")
	case "eprt":
		argv = append(argv, "-P", e.source)
	default:
		return fmt.Errorf("curl: unknown mode %q", mode)
	}
	for _, x := range xs {
		if x.put != xs[0].put {
			return errors.New("curl: downloads and uploads in one session")
		}
		if x.put {
			argv = append(argv, "-T", x.local)
		} else {
			argv = append(argv, "-o", x.local)
		}
		argv = append(argv, scheme+"://"+addr+"/"+x.remote)
	}
	_, err := peers.RunTool(e.ctx, peers.OpTimeout, argv...)
	return err
}

// ftpsUpFtplibScript runs transfers in one ftplib session with the Client
// class of clients/ftplib_client.py (which picks PASV, EPSV, PORT or EPRT),
// or its FTP_TLS twin: AUTH TLS before the login, then PBSZ 0 and PROT P,
// the server verified against the CA file. Arguments: the script's path,
// host, port, user, password, source, mode, tls (off or explicit), CA
// file, then "get REMOTE LOCAL" or "put LOCAL REMOTE" triples.
const ftpsUpFtplibScript = `import ftplib, os, ssl, sys
sys.path.insert(0, os.path.dirname(sys.argv[1]))
import ftplib_client as fc
host, port, user, password, source, mode, tls, cafile = sys.argv[2:10]
steps = sys.argv[10:]

class TLSClient(fc.Client, ftplib.FTP_TLS):
    pass

if tls == "explicit":
    c = TLSClient(mode, source, 60)
    c.context = ssl.create_default_context(cafile=cafile)
else:
    c = fc.Client(mode, source, 60)
c.connect(host, int(port))
c.login(user, password)
if tls == "explicit":
    c.prot_p()
c.set_pasv(mode in ("pasv", "epsv"))
for i in range(0, len(steps), 3):
    op, a, b = steps[i:i + 3]
    if op == "get":
        fc.op_get(c, a, b)
    elif op == "put":
        fc.op_put(c, a, b)
    else:
        raise SystemExit("unknown step " + op)
c.quit()
`

// ftplibSession runs the transfers in one ftplib session.
func (e *ftpsUpEnv) ftplibSession(c ftpsUpClient, addr, mode string, xs []ftpsUpXfer) error {
	host, port, _ := net.SplitHostPort(addr)
	tlsMode := "off"
	switch c.tls {
	case "":
	case "explicit":
		tlsMode = "explicit"
	default:
		return fmt.Errorf("ftplib: no %s TLS", c.tls)
	}
	argv := []string{"python3", e.ftplibScript, e.script, host, port, peers.User, peers.Password, e.source, mode, tlsMode, e.pki.CAFile}
	for _, x := range xs {
		if x.put {
			argv = append(argv, "put", x.local, x.remote)
		} else {
			argv = append(argv, "get", x.remote, x.local)
		}
	}
	_, err := peers.RunTool(e.ctx, peers.OpTimeout, argv...)
	return err
}

// oneProxySession starts a proxy in front of srv with args, downloads the
// 1 MiB file through it with client c in EPSV mode, and stops it.
func (e *ftpsUpEnv) oneProxySession(srv *peers.Server, name string, files map[string]peers.File, c ftpsUpClient, args ...string) error {
	px, err := e.startProxy(srv, ftpsUpNegativeProxy, name, append(args, "--drain-timeout", "2s")...)
	if err != nil {
		return err
	}
	defer px.Stop()
	local := filepath.Join(e.work, "dl-"+name+".bin")
	defer os.Remove(local)
	if err := e.session(c, net.JoinHostPort(e.proxyHost, strconv.Itoa(ftpsUpNegativeProxy)), "epsv", []ftpsUpXfer{{remote: "d-1MiB.bin", local: local}}); err != nil {
		return fmt.Errorf("%w\nproxy log:\n%s", err, ftpsUpLogTail(px.LogPath))
	}
	f := files["1MiB"]
	return peers.SameContent(local, f.Size, f.Sum)
}

// refusal starts a proxy in front of srv with args that cannot reach it
// over TLS, and logs in through it: the client must get a 421 whose text
// matches want within ftpsUpRefusalLimit, then the close; the proxy must
// log a line that matches logRE; and the server must never see the USER
// command (vsftpd logs the protocol with TLS on, and every login).
func (e *ftpsUpEnv) refusal(name string, srv *peers.Server, want, logRE *regexp.Regexp, args ...string) error {
	if e.proxyErr != nil {
		return e.proxyErr
	}
	listen := net.JoinHostPort(e.proxyHost, strconv.Itoa(ftpsUpNegativeProxy))
	logPath := filepath.Join(srv.Dir, "ftpproxy-"+name+".log")
	p, err := ftpsUpLaunch(e.ctx, e.proxyBin, logPath, append([]string{"--listen", listen, "--upstream", srv.Addr(),
		"--passive-ports", ftpsUpProxyPasv, "--log-format", "json", "--log-level", "debug", "--drain-timeout", "2s"}, args...))
	if err != nil {
		return err
	}
	defer p.stop()
	serverLogBefore := ftpsUpFileSize(filepath.Join(srv.Dir, "vsftpd.log"))

	start := time.Now()
	c, err := ftpsUpDial(e.ctx, listen, e.source, nil)
	if err != nil {
		return err
	}
	defer c.conn.Close()
	var final ftpReply
	for final.Code == 0 {
		r, err := c.read()
		if err != nil {
			return c.failf("after %.1fs: %v, want a 421", time.Since(start).Seconds(), err)
		}
		switch r.Code {
		case 220:
			err = c.send("USER " + peers.User)
		case 331:
			err = c.send("PASS " + peers.Password)
		case 230:
			return c.failf("logged in through a proxy that could not speak TLS to the server")
		case 421:
			final = r
		default:
			return c.failf("reply %q, want a 421", r.String())
		}
		if err != nil {
			return err
		}
		if time.Since(start) > ftpsUpRefusalLimit {
			return c.failf("no 421 within %s", ftpsUpRefusalLimit)
		}
	}
	took := time.Since(start)
	if !want.MatchString(final.String()) {
		return c.failf("421 %q does not match %s", final.String(), want)
	}
	if took > ftpsUpRefusalLimit {
		return c.failf("the 421 came after %.1fs, want it within %s", took.Seconds(), ftpsUpRefusalLimit)
	}
	if _, err := c.read(); err == nil || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		return c.failf("after the 421: %v, want the connection closed", err)
	}
	p.stop()
	if line := ftpsUpLogLine(logPath, logRE); line == "" {
		return fmt.Errorf("no line in the proxy's log matches %s:\n%s", logRE, ftpsUpLogTail(logPath))
	}
	if saw := ftpsUpGrepFrom(filepath.Join(srv.Dir, "vsftpd.log"), serverLogBefore, regexp.MustCompile(`"USER |LOGIN`)); saw != "" {
		return fmt.Errorf("the server saw the login: %s", saw)
	}
	return nil
}

// expectNoLogin logs in at addr in the clear (from source, if given, else
// from the clients' address) and wants a refusal matching want, to USER or
// PASS, and no 230.
func (e *ftpsUpEnv) expectNoLogin(addr string, want *regexp.Regexp, source ...string) error {
	src := e.source
	if len(source) > 0 {
		src = source[0]
	}
	c, err := ftpsUpDial(e.ctx, addr, src, nil)
	if err != nil {
		return err
	}
	defer c.conn.Close()
	if _, err := c.expect("greeting", 220); err != nil {
		return err
	}
	if err := c.send("USER " + peers.User); err != nil {
		return err
	}
	r, err := c.read()
	if err != nil {
		return c.failf("reply to USER: %v", err)
	}
	if r.Code == 331 {
		if err := c.send("PASS " + peers.Password); err != nil {
			return err
		}
		if r, err = c.read(); err != nil {
			return c.failf("reply to PASS: %v", err)
		}
	}
	if r.Code == 230 || !want.MatchString(r.Lines[len(r.Lines)-1]) {
		return c.failf("reply %q, want a refusal matching %s", r.String(), want)
	}
	return nil
}

// ftpsUpReuseRequired tells whether the server refuses a TLS data
// connection that does not resume the control connection's session:
// vsftpd (require_ssl_reuse=YES) and proftpd (mod_tls's default) do.
// pure-ftpd 1.0.50 has no such check, and does not resume the session a
// client offers either: its data connections take a full handshake.
func ftpsUpReuseRequired(kind peers.Kind) bool { return kind.Name != peers.PureFTPd.Name }

// directReuse downloads the 1 MiB file from srv over FTPS in two sessions:
// first with a data connection that does not resume the control
// connection's TLS session, which a server that requires reuse must refuse
// (vsftpd then ends the session), then with one that offers to, which must
// carry the file, resumed where the server requires it.
func (e *ftpsUpEnv) directReuse(srv *peers.Server, f peers.File, implicit bool) error {
	conf := &tls.Config{RootCAs: e.roots, ServerName: ftpsUpServerName, ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	c, err := e.directLogin(srv, conf, implicit)
	if err != nil {
		return err
	}
	fresh := &tls.Config{RootCAs: e.roots, ServerName: ftpsUpServerName}
	res, final, err := c.retrTLS(srv.Host, "d-1MiB.bin", fresh)
	c.conn.Close()
	if err != nil {
		return err
	}
	served := final.Code < 400 && res.err == nil && res.sum == f.Sum
	switch required := ftpsUpReuseRequired(srv.Kind); {
	case required && served:
		return c.failf("the server sent the file over a data connection with a fresh TLS session (%q)", final.String())
	case !required && !served:
		return c.failf("a data connection with a fresh TLS session failed: %q, %v", final.String(), res.err)
	}

	conf = &tls.Config{RootCAs: e.roots, ServerName: ftpsUpServerName, ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	if c, err = e.directLogin(srv, conf, implicit); err != nil {
		return err
	}
	defer c.conn.Close()
	res, final, err = c.retrTLS(srv.Host, "d-1MiB.bin", conf)
	if err != nil {
		return err
	}
	if final.Code != 226 && final.Code != 250 {
		return c.failf("RETR with a resumed session: %q", final.String())
	}
	if res.err != nil || res.n != f.Size || res.sum != f.Sum {
		return c.failf("RETR with a resumed session: %d bytes, sha256 %s, %v; want %d bytes, %s", res.n, res.sum, res.err, f.Size, f.Sum)
	}
	if !res.resumed && ftpsUpReuseRequired(srv.Kind) {
		return c.failf("the data connection did not resume the session")
	}
	return c.command("QUIT", 221)
}

// directCloseNotify uploads 1 MiB to srv twice, each in a session of its
// own: ended by a bare TCP FIN, which the server must fail (vsftpd with
// strict_ssl_read_eof), and ended by a close_notify, which it must store.
// So an upload through the proxy that the server stores did end with a
// close_notify.
func (e *ftpsUpEnv) directCloseNotify(srv *peers.Server, implicit bool) error {
	up := e.local["1MiB"]
	data, err := os.ReadFile(up.Path)
	if err != nil {
		return err
	}
	for _, closeNotify := range []bool{false, true} {
		conf := &tls.Config{RootCAs: e.roots, ServerName: ftpsUpServerName, ClientSessionCache: tls.NewLRUClientSessionCache(4)}
		c, err := e.directLogin(srv, conf, implicit)
		if err != nil {
			return err
		}
		name := fmt.Sprintf("direct-close-notify-%v.bin", closeNotify)
		final, err := c.storTLS(srv.Host, name, data, conf, closeNotify)
		c.conn.Close()
		switch {
		case err != nil:
			return err
		case !closeNotify && final.Code < 400:
			return c.failf("an upload that ended without a close_notify got %q", final.String())
		case closeNotify && final.Code != 226:
			return c.failf("an upload that ended with a close_notify got %q", final.String())
		case closeNotify:
			if err := peers.SameContent(srv.Path(name), up.Size, up.Sum); err != nil {
				return err
			}
		}
	}
	return nil
}

// directLogin logs in to srv over FTPS (explicit, or implicit) from
// ftpsUpDirectIP with conf, and sets PBSZ 0, PROT P and TYPE I.
func (e *ftpsUpEnv) directLogin(srv *peers.Server, conf *tls.Config, implicit bool) (*ftpsUpCtl, error) {
	var dialConf *tls.Config
	if implicit {
		dialConf = conf
	}
	c, err := ftpsUpDial(e.ctx, srv.Addr(), ftpsUpDirectIP, dialConf)
	if err != nil {
		return nil, err
	}
	err = func() error {
		if _, err := c.expect("greeting", 220); err != nil {
			return err
		}
		if !implicit {
			if err := c.command("AUTH TLS", 234); err != nil {
				return err
			}
			if err := c.startTLS(conf); err != nil {
				return err
			}
		}
		for _, s := range []struct {
			cmd  string
			code int
		}{{"USER " + peers.User, 331}, {"PASS " + peers.Password, 230}, {"PBSZ 0", 200}, {"PROT P", 200}, {"TYPE I", 200}} {
			if err := c.command(s.cmd, s.code); err != nil {
				return err
			}
		}
		return nil
	}()
	if err != nil {
		c.conn.Close()
		return nil, err
	}
	return c, nil
}

// --- a small FTPS control client -------------------------------------------------

// ftpsUpCtl is a bare FTP control connection that can switch to TLS; every
// read has a deadline, and it keeps a transcript for failure messages.
type ftpsUpCtl struct {
	conn   net.Conn
	r      *bufio.Reader
	source string
	trace  []string
}

// ftpsUpDial connects to addr from source; with conf the connection is
// TLS from the first byte (implicit FTPS).
func ftpsUpDial(ctx context.Context, addr, source string, conf *tls.Config) (*ftpsUpCtl, error) {
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	var conn net.Conn
	var err error
	if conf != nil {
		td := &tls.Dialer{NetDialer: d, Config: conf}
		conn, err = td.DialContext(ctx, "tcp", addr)
	} else {
		conn, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	return &ftpsUpCtl{conn: conn, r: bufio.NewReaderSize(conn, 4096), source: source}, nil
}

func (c *ftpsUpCtl) note(dir, line string) {
	if strings.HasPrefix(line, "PASS ") {
		line = "PASS ****"
	}
	c.trace = append(c.trace, dir+" "+line)
}

func (c *ftpsUpCtl) failf(format string, args ...any) error {
	tr := c.trace
	if len(tr) > 30 {
		tr = tr[len(tr)-30:]
	}
	return fmt.Errorf(format+"\ntranscript (> sent, < received):\n  %s", append(args, strings.Join(tr, "\n  "))...)
}

func (c *ftpsUpCtl) send(line string) error {
	c.note(">", line)
	c.conn.SetWriteDeadline(time.Now().Add(ftpsUpReplyTimeout))
	if _, err := io.WriteString(c.conn, line+"\r\n"); err != nil {
		return c.failf("write: %v", err)
	}
	return nil
}

// read reads one complete reply (RFC 959 section 4.2).
func (c *ftpsUpCtl) read() (ftpReply, error) {
	c.conn.SetReadDeadline(time.Now().Add(ftpsUpReplyTimeout))
	var r ftpReply
	for {
		b, err := c.r.ReadSlice('\n')
		if err != nil {
			if len(b) > 0 {
				c.note("<", string(b)+" [partial]")
			}
			return r, err
		}
		line := strings.TrimRight(string(b), "\r\n")
		c.note("<", line)
		if len(r.Lines) == 0 {
			code, multi, ok := replyCode(line)
			if !ok {
				return r, fmt.Errorf("malformed reply line %q", line)
			}
			r = ftpReply{Code: code, Lines: []string{line}}
			if !multi {
				return r, nil
			}
			continue
		}
		r.Lines = append(r.Lines, line)
		if strings.HasPrefix(line, r.Lines[0][:3]+" ") || line == r.Lines[0][:3] {
			return r, nil
		}
		if len(r.Lines) > 1000 {
			return r, fmt.Errorf("reply %d longer than 1000 lines", r.Code)
		}
	}
}

func (c *ftpsUpCtl) expect(what string, codes ...int) (ftpReply, error) {
	r, err := c.read()
	if err != nil {
		return r, c.failf("reply to %s: %v", what, err)
	}
	for _, code := range codes {
		if r.Code == code {
			return r, nil
		}
	}
	return r, c.failf("reply to %s: %q, want %s", what, r.String(), codeList(codes))
}

// command sends cmd and wants the reply code.
func (c *ftpsUpCtl) command(cmd string, code int) error {
	if err := c.send(cmd); err != nil {
		return err
	}
	_, err := c.expect(strings.Fields(cmd)[0], code)
	return err
}

// startTLS makes the control connection a TLS client connection, after
// AUTH TLS's 234.
func (c *ftpsUpCtl) startTLS(conf *tls.Config) error {
	if c.r.Buffered() > 0 {
		return c.failf("%d bytes after the 234", c.r.Buffered())
	}
	tc := tls.Client(c.conn, conf)
	tc.SetDeadline(time.Now().Add(ftpsUpReplyTimeout))
	if err := tc.Handshake(); err != nil {
		return c.failf("TLS handshake: %v", err)
	}
	c.note("#", "TLS "+tls.VersionName(tc.ConnectionState().Version))
	c.conn, c.r = tc, bufio.NewReaderSize(tc, 4096)
	return nil
}

// ftpsUpData is what a TLS data connection carried.
type ftpsUpData struct {
	n       int64
	sum     string
	resumed bool
	err     error
}

// retrTLS sends PASV and RETR name, opens the data connection to the
// port of the 227 on host as a TLS client with conf, and returns what it
// carried and the final reply (a 4xx or 5xx included: the caller judges).
func (c *ftpsUpCtl) retrTLS(host, name string, conf *tls.Config) (ftpsUpData, ftpReply, error) {
	if err := c.send("PASV"); err != nil {
		return ftpsUpData{}, ftpReply{}, err
	}
	r, err := c.expect("PASV", 227)
	if err != nil {
		return ftpsUpData{}, r, err
	}
	m := re227.FindStringSubmatch(r.String())
	if m == nil {
		return ftpsUpData{}, r, c.failf("no address in %q", r.String())
	}
	hi, _ := strconv.Atoi(m[5])
	lo, _ := strconv.Atoi(m[6])
	addr := net.JoinHostPort(host, strconv.Itoa(hi<<8|lo))
	if err := c.send("RETR " + name); err != nil {
		return ftpsUpData{}, r, err
	}
	data := make(chan ftpsUpData, 1)
	go func() { data <- ftpsUpFetch(addr, c.source, conf) }()
	var final ftpReply
	for {
		if final, err = c.read(); err != nil {
			return <-data, final, c.failf("reply to RETR: %v", err)
		}
		if final.Code >= 200 {
			break
		}
	}
	return <-data, final, nil
}

// storTLS sends PASV and STOR name, opens the data connection to the port
// of the 227 on host as a TLS client with conf, writes data and ends the
// upload with a close_notify, or with closeNotify false with a bare TCP
// FIN; then it reads the data connection to the server's close (taking in
// what the server sent, a TLS 1.3 session ticket, so that closing sends no
// reset) and returns the final reply (a 4xx or 5xx included).
func (c *ftpsUpCtl) storTLS(host, name string, data []byte, conf *tls.Config, closeNotify bool) (ftpReply, error) {
	if err := c.send("PASV"); err != nil {
		return ftpReply{}, err
	}
	r, err := c.expect("PASV", 227)
	if err != nil {
		return r, err
	}
	m := re227.FindStringSubmatch(r.String())
	if m == nil {
		return r, c.failf("no address in %q", r.String())
	}
	hi, _ := strconv.Atoi(m[5])
	lo, _ := strconv.Atoi(m[6])
	addr := net.JoinHostPort(host, strconv.Itoa(hi<<8|lo))
	if err := c.send("STOR " + name); err != nil {
		return r, err
	}
	done := make(chan error, 1)
	go func() {
		d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(c.source)}}
		raw, err := d.Dial("tcp", addr)
		if err != nil {
			done <- err
			return
		}
		defer raw.Close()
		raw.SetDeadline(time.Now().Add(ftpsUpDataTimeout))
		tc := tls.Client(raw, conf)
		if _, err := tc.Write(data); err != nil {
			done <- err
			return
		}
		if closeNotify {
			err = tc.CloseWrite()
		} else {
			err = raw.(*net.TCPConn).CloseWrite()
		}
		if err != nil {
			done <- err
			return
		}
		io.Copy(io.Discard, tc)
		done <- nil
	}()
	var final ftpReply
	for {
		if final, err = c.read(); err != nil {
			<-done
			return final, c.failf("reply to STOR: %v", err)
		}
		if final.Code >= 200 {
			break
		}
	}
	if err := <-done; err != nil {
		c.note("#", fmt.Sprintf("data connection: %v", err))
	}
	return final, nil
}

// ftpsUpFetch dials addr from source, makes it a TLS client connection
// with conf, and reads it to EOF within ftpsUpDataTimeout.
func ftpsUpFetch(addr, source string, conf *tls.Config) ftpsUpData {
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		return ftpsUpData{err: err}
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(ftpsUpDataTimeout))
	tc := tls.Client(raw, conf)
	if err := tc.Handshake(); err != nil {
		return ftpsUpData{err: fmt.Errorf("TLS handshake: %w", err)}
	}
	h := sha256.New()
	n, err := io.Copy(h, tc)
	return ftpsUpData{n: n, sum: hex.EncodeToString(h.Sum(nil)), resumed: tc.ConnectionState().DidResume, err: err}
}

// --- proxy processes and logs ------------------------------------------------------

// ftpsUpProc is a proxy started without peers.StartProxy's greeting
// check, which a proxy that cannot reach its upstream fails.
type ftpsUpProc struct {
	cmd     *exec.Cmd
	waitErr chan error
	stopped bool
}

// ftpsUpLaunch starts the proxy with args, its output in logPath, in a
// process group of its own, and waits until its listener (the value of
// --listen) accepts connections.
func ftpsUpLaunch(ctx context.Context, bin, logPath string, args []string) (*ftpsUpProc, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &ftpsUpProc{cmd: cmd, waitErr: make(chan error, 1)}
	go func() { p.waitErr <- cmd.Wait(); logf.Close() }()
	listen := ""
	for i, a := range args {
		if a == "--listen" && i+1 < len(args) {
			listen = args[i+1]
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-p.waitErr:
			p.stopped = true
			return nil, fmt.Errorf("ftpproxy exited: %v\n%s", err, ftpsUpLogTail(logPath))
		default:
		}
		d := net.Dialer{Timeout: time.Second}
		if c, err := d.DialContext(ctx, "tcp", listen); err == nil {
			c.Close()
			return p, nil
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("ftpproxy did not listen on %s within 10 s\n%s", listen, ftpsUpLogTail(logPath))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM to the proxy and kills it after 10 s.
func (p *ftpsUpProc) stop() {
	if p.stopped {
		return
	}
	p.stopped = true
	pid := p.cmd.Process.Pid
	syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-p.waitErr:
	case <-time.After(10 * time.Second):
		syscall.Kill(pid, syscall.SIGKILL)
		<-p.waitErr
	}
}

// ftpsUpLogLine returns the first line of the log that matches re, or "".
func ftpsUpLogLine(path string, re *regexp.Regexp) string {
	return ftpsUpGrepFrom(path, 0, re)
}

// ftpsUpGrepFrom returns the first line of the file from offset on that
// matches re, or "".
func ftpsUpGrepFrom(path string, offset int64, re *regexp.Regexp) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < offset {
		return ""
	}
	for _, l := range bytes.Split(b[offset:], []byte("\n")) {
		if re.Match(l) {
			return string(l)
		}
	}
	return ""
}

// ftpsUpFileSize returns the size of the file at path, 0 if it is missing.
func ftpsUpFileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// ftpsUpLogTail returns the end of a log for a failure message.
func ftpsUpLogTail(path string) string {
	b, _ := os.ReadFile(path)
	return peers.Tail(string(b), 3000)
}
