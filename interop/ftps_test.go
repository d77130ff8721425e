//go:build interop

package interop

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

// The FTPS suite: clients speak FTPS (RFC 4217) to the proxy, which ends
// TLS and speaks plain FTP to the real servers (TLS offload). The test
// makes its own CA and a certificate for the proxy's address and a DNS
// name; every client verifies the proxy against that CA, and a client given
// another CA or another name must refuse it. Files move byte-exact (sha256)
// in several transfers per session, so that data connections can resume
// the control connection's TLS session; the proxy's log must show TLS on
// every transfer line, and resumption wherever the client resumes. Proxies
// with --client-tls require and --tls-data-reuse require must refuse what
// they promise to refuse, with the reply they promise, and never hang.

// The proxies of the suite listen on the -proxy host (127.0.0.2), each on a
// port and with a passive range of its own that no other suite uses; the
// servers keep their kinds' default passive ranges.
const (
	ftpsAllowPort         = 2170 // --client-tls allow, --tls-data-reuse auto
	ftpsImplicitPort      = 2171 // --listen-implicit of the implicit proxy
	ftpsImplicitPlainPort = 2172 // the implicit proxy's plain --listen
	ftpsRequirePort       = 2173 // --client-tls require, --tls-data-reuse require
	ftpsAllowRange        = "26000-26099"
	ftpsImplicitRange     = "26100-26199"
	ftpsRequireRange      = "26200-26299"
)

// ftpsDNSName is the certificate's DNS name besides the proxy's IP; curl
// reaches the proxy by it with --resolve.
const ftpsDNSName = "ftps.interop.test"

// Bounds of the suite's client runs.
const (
	ftpsClientLimit  = 90 * time.Second // one client invocation that moves files
	ftpsRefusalLimit = 20 * time.Second // a client that must be refused: longer is a hang
	ftpsRawTimeout   = 10 * time.Second // one step of the raw Go client
)

// ftpsPKI is the suite's CA and the proxy's certificate, as PEM files, and
// an unrelated CA that must not verify the proxy.
type ftpsPKI struct {
	CAFile, CertFile, KeyFile string
	OtherCAFile               string
	pool                      *x509.CertPool
}

// TestFTPS runs FTPS clients through proxies that offer TLS in front of
// every server: the full matrix against vsftpd, one client both ways
// against the others. It prints one line per case and the totals.
func TestFTPS(t *testing.T) {
	if *flagDirect {
		t.Skip("ftps: the servers speak plain FTP; FTPS is the proxy's, so -direct has nothing to run")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	peersDir := absPath(*flagPeers)
	script := absPath(*flagScript)
	proxyBin := absPath(*flagProxyBin)
	for _, p := range []string{peersDir, script, proxyBin} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%v (run interop/install-peers.sh and build bin/ftpproxy first)", err)
		}
	}
	for _, tool := range []string{"curl", "lftp", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s: %v (run interop/install-peers.sh first)", tool, err)
		}
	}
	serverHost, serverPortS, err := net.SplitHostPort(*flagServer)
	if err != nil {
		t.Fatal(err)
	}
	serverPort, _ := strconv.Atoi(serverPortS)
	proxyHost, _, err := net.SplitHostPort(*flagProxyAddr)
	if err != nil {
		t.Fatal(err)
	}

	work := suiteWork(t, "ftps")
	tl := &tally{}
	defer func() {
		if tl.failed > 0 || *flagKeep || t.Failed() {
			fmt.Printf("ftps: work directory kept: %s\n", work)
		} else {
			os.RemoveAll(work)
		}
	}()

	pki, err := makeFTPSPKI(filepath.Join(work, "pki"), proxyHost, ftpsDNSName)
	if err != nil {
		t.Fatal(err)
	}
	curlVersion, curlActive := curlActiveFTPS(ctx)
	fmt.Printf("ftps: servers %s, large file %d MiB, %s, work %s\n", *flagServers, *flagBigMiB, curlVersion, work)

	s := &ftpsSuite{
		ctx: ctx, tl: tl, pki: pki, script: script, proxyBin: proxyBin, peersDir: peersDir,
		work: work, proxyHost: proxyHost, source: *flagClientIP, curlActive: curlActive,
		resumed: map[string]ftpsResumption{},
	}
	if err := s.localFiles(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i, sname := range splitList(*flagServers) {
		kind, ok := peers.KindByName(sname)
		if !ok {
			t.Fatalf("unknown server %q", sname)
		}
		s.runServer(kind, serverHost, serverPort, *flagIsolated && i == 0)
	}
	s.printResumption()
	fmt.Printf("ftps: done in %.1fs\n", time.Since(start).Seconds())
	fmt.Printf("ftps: %d passed, %d failed\n", tl.passed, tl.failed)
	if tl.failed > 0 {
		sort.Strings(tl.failures)
		t.Errorf("%d ftps cases failed:\n  %s", tl.failed, strings.Join(tl.failures, "\n  "))
	}
}

// ftpsSuite is what the servers' runs share.
type ftpsSuite struct {
	ctx               context.Context
	tl                *tally
	pki               ftpsPKI
	script, proxyBin  string
	peersDir, work    string
	proxyHost, source string
	curlActive        bool         // curl protects active-mode data connections
	sizes             []ftpsSize   // 0 B, 1 MiB, -big MiB
	uploads           []peers.File // local files of those sizes, for STOR
	mu                sync.Mutex
	resumed           map[string]ftpsResumption // by client set-up
}

// ftpsSize is a file size of the suite and the label of its case names.
type ftpsSize struct {
	label string
	n     int64
}

// localFiles writes the files the clients upload.
func (s *ftpsSuite) localFiles() error {
	s.sizes = []ftpsSize{{"0B", 0}, {"1MiB", 1 << 20}, {fmt.Sprintf("%dMiB", *flagBigMiB), int64(*flagBigMiB) << 20}}
	dir := filepath.Join(s.work, "local")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i, z := range s.sizes {
		f, err := peers.WriteRandom(filepath.Join(dir, "u-"+z.label+".bin"), z.n, uint64(500+i))
		if err != nil {
			return err
		}
		s.uploads = append(s.uploads, f)
	}
	return nil
}

// sizesLabel names the sizes a session moves, "0B+1MiB+64MiB".
func (s *ftpsSuite) sizesLabel() string {
	l := make([]string, len(s.sizes))
	for i, z := range s.sizes {
		l[i] = z.label
	}
	return strings.Join(l, "+")
}

// noteResumption adds a client set-up's observed data connections.
func (s *ftpsSuite) noteResumption(client string, r ftpsResumption) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resumed[client] = s.resumed[client].add(r)
}

// resumption returns what a client set-up has done so far: resumed and
// total TLS data connections.
func (s *ftpsSuite) resumption(client string) (resumed, total int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.resumed[client]
	return v.resumed, v.total
}

// printResumption prints, per client set-up, how many of its TLS data
// connections resumed the control connection's TLS session, as the
// proxy's log says.
func (s *ftpsSuite) printResumption() {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.resumed))
	for n := range s.resumed {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		v := s.resumed[n]
		fmt.Printf("ftps: resumption: %-14s %2d of %2d TLS data connections (%s) resumed the control session\n",
			n, v.resumed, v.total, strings.Join(v.versions, ", "))
	}
}

// --- certificates -------------------------------------------------------------

// makeFTPSPKI makes a CA, a certificate it signs for ip and dnsName (the
// proxy's), and an unrelated CA, as PEM files in dir.
func makeFTPSPKI(dir, ip, dnsName string) (ftpsPKI, error) {
	p := ftpsPKI{
		CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "proxy.pem"),
		KeyFile: filepath.Join(dir, "proxy-key.pem"), OtherCAFile: filepath.Join(dir, "other-ca.pem"),
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return p, err
	}
	ca, caKey, err := newCA("ftpproxy ftps interop CA", p.CAFile)
	if err != nil {
		return p, err
	}
	if _, _, err := newCA("an unrelated CA", p.OtherCAFile); err != nil {
		return p, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return p, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: dnsName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     []string{dnsName},
		IPAddresses:  []net.IP{net.ParseIP(ip)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return p, err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return p, err
	}
	if err := writePEMFile(p.CertFile, "CERTIFICATE", der); err != nil {
		return p, err
	}
	if err := writePEMFile(p.KeyFile, "PRIVATE KEY", kb); err != nil {
		return p, err
	}
	p.pool = x509.NewCertPool()
	p.pool.AddCert(ca)
	return p, nil
}

// newCA makes a self-signed CA and writes its certificate to path.
func newCA(name, path string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return ca, key, writePEMFile(path, "CERTIFICATE", der)
}

func writePEMFile(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644)
}

// curlActiveFTPS returns curl's version line and whether curl protects
// active-mode data connections: curl 7.87.0 to 7.88.1 open them without
// TLS after PROT P (curl issue #10666, fixed in 8.0.0 by commit a26418c
// "ftp: active mode with SSL, add the damn filter"), which any FTPS peer
// must refuse.
func curlActiveFTPS(ctx context.Context) (string, bool) {
	out, err := peers.RunTool(ctx, 10*time.Second, "curl", "--version")
	if err != nil {
		return "curl version unknown", false
	}
	first, _, _ := strings.Cut(out, "\n")
	f := strings.Fields(first)
	if len(f) < 2 {
		return first, false
	}
	v := strings.Split(f[1], ".")
	major, _ := strconv.Atoi(v[0])
	minor := 0
	if len(v) > 1 {
		minor, _ = strconv.Atoi(v[1])
	}
	return "curl " + f[1], major > 7 || (major == 7 && minor < 87)
}

// --- one server -----------------------------------------------------------------

// ftpsClient is one FTPS client set-up: a program, how it starts TLS, and
// how it opens data connections.
type ftpsClient struct {
	name string // curl-tls12, curl-tls13, curl-implicit, lftp, lftp-tls12, ftplib
	mode string // the data-connection mode, as the peers drivers name it
	// proto is the TLS version the control connection must negotiate,
	// or "" for whatever the client and the proxy agree on.
	proto string
	// mustResume: every data connection must resume the control
	// connection's TLS session (the client is known to resume).
	mustResume bool
}

func (c ftpsClient) label() string { return c.name + "/" + c.mode }

// implicit reports whether the client speaks implicit FTPS.
func (c ftpsClient) implicit() bool { return c.name == "curl-implicit" }

// ftpsEnv is one server and the proxies in front of it.
type ftpsEnv struct {
	*ftpsSuite
	srv                      *peers.Server
	allow, implicit, require *peers.Proxy
	src                      []peers.File // server-side files of s.sizes, for RETR
	dl                       string       // local directory for downloads
}

// runServer starts a server and the proxies in front of it and runs the
// cases: the full matrix for vsftpd, lftp in passive mode both ways for
// the others.
func (s *ftpsSuite) runServer(kind peers.Kind, host string, port int, isolation bool) {
	full := kind.Name == peers.Vsftpd.Name
	g := &group{tl: s.tl, label: "ftps/" + kind.Name}
	defer g.flush()
	e := &ftpsEnv{ftpsSuite: s, dl: filepath.Join(s.work, "dl-"+kind.Name)}
	if !g.run("start", func() error {
		var err error
		e.srv, err = peers.StartServer(s.ctx, kind, s.peersDir, s.work, host, port)
		return err
	}) {
		return
	}
	defer e.srv.Stop()
	if isolation {
		g.run("isolation", func() error { return checkIsolation(s.ctx, e.srv.Addr(), s.source) })
	}
	if !g.run("files", e.prepare) {
		return
	}
	tlsArgs := []string{"--tls-cert", s.pki.CertFile, "--tls-key", s.pki.KeyFile, "--drain-timeout", "2s"}
	if !g.run("proxy-start-allow", func() error {
		var err error
		e.allow, err = e.startProxy("allow", ftpsAllowPort, ftpsAllowRange, slices.Concat(tlsArgs, []string{"--client-tls", "allow", "--tls-data-reuse", "auto"}))
		return err
	}) {
		return
	}
	defer e.allow.Stop()
	if full {
		if g.run("proxy-start-implicit", func() error {
			var err error
			e.implicit, err = e.startProxy("implicit", ftpsImplicitPlainPort, ftpsImplicitRange,
				slices.Concat(tlsArgs, []string{"--listen-implicit", e.addr(ftpsImplicitPort)}))
			return err
		}) {
			defer e.implicit.Stop()
		}
		if g.run("proxy-start-require", func() error {
			var err error
			e.require, err = e.startProxy("require", ftpsRequirePort, ftpsRequireRange, slices.Concat(tlsArgs, []string{"--client-tls", "require", "--tls-data-reuse", "require"}))
			return err
		}) {
			defer e.require.Stop()
		}
	}
	g.flush()

	clients := []ftpsClient{{name: "lftp", mode: "passive", mustResume: true}}
	if full {
		clients = e.matrix()
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(1, *flagParallel))
	for i, c := range clients {
		if c.implicit() && e.implicit == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			e.runCombo(c, fmt.Sprintf("c%02d-%s-%s", i+1, c.name, c.mode))
		}()
	}
	wg.Wait()

	if full {
		e.runVerification()
		e.runRawAuth()
		if e.require != nil {
			e.runRequire()
		}
	}
	for _, p := range []struct {
		name string
		px   *peers.Proxy
	}{{"allow", e.allow}, {"implicit", e.implicit}, {"require", e.require}} {
		if p.px != nil {
			g.run("proxy-stop-"+p.name, p.px.Stop)
		}
	}
}

// matrix lists the client set-ups run against vsftpd. curl's active mode
// is left out where curl sends active-mode data in the clear.
func (e *ftpsEnv) matrix() []ftpsClient {
	cs := []ftpsClient{
		{name: "curl-tls12", mode: "pasv", proto: "TLS 1.2"},
		{name: "curl-tls13", mode: "epsv", proto: "TLS 1.3", mustResume: true},
		{name: "curl-implicit", mode: "epsv", proto: "TLS 1.3", mustResume: true},
		{name: "lftp", mode: "passive", mustResume: true},
		{name: "lftp", mode: "active", mustResume: true},
		// GnuTLS asks for a session ticket on TLS 1.2 too.
		{name: "lftp-tls12", mode: "passive", proto: "TLS 1.2", mustResume: true},
		{name: "ftplib", mode: "pasv"},
		{name: "ftplib", mode: "port"},
	}
	active := []ftpsClient{
		{name: "curl-tls12", mode: "port", proto: "TLS 1.2"},
		{name: "curl-tls13", mode: "eprt", proto: "TLS 1.3", mustResume: true},
	}
	if e.curlActive {
		return append(cs, active...)
	}
	for _, c := range active {
		fmt.Printf("SKIP ftps/%s/%s: curl 7.87-7.88 sends active-mode data in the clear after PROT P (curl issue #10666, fixed in 8.0.0)\n", e.srv.Kind.Name, c.label())
	}
	return cs
}

// addr is host:port on the proxy host.
func (e *ftpsEnv) addr(port int) string {
	return net.JoinHostPort(e.proxyHost, strconv.Itoa(port))
}

// startProxy starts one proxy in front of the server, listening on port.
func (e *ftpsEnv) startProxy(name string, port int, passive string, args []string) (*peers.Proxy, error) {
	return peers.StartProxy(e.ctx, peers.ProxyConfig{
		Bin: e.proxyBin, Listen: e.addr(port), Upstream: e.srv.Addr(), PassivePorts: passive,
		LogPath: filepath.Join(e.srv.Dir, "ftpproxy-"+name+".log"), Args: args,
	})
}

// prepare writes the server-side files the clients download.
func (e *ftpsEnv) prepare() error {
	if err := os.MkdirAll(e.dl, 0o755); err != nil {
		return err
	}
	dir := e.srv.Path("ftps-src")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	os.Chown(dir, e.srv.UID, e.srv.GID)
	for i, z := range e.sizes {
		p := filepath.Join(dir, "d-"+z.label+".bin")
		f, err := peers.WriteRandom(p, z.n, uint64(600+i))
		if err != nil {
			return err
		}
		os.Chown(p, e.srv.UID, e.srv.GID)
		e.src = append(e.src, f)
	}
	return nil
}

// caseDir makes the directory of one case on the server, with hard links
// to the download files in it, so that the case's commands name it and
// its sessions can be told apart in the proxy's log.
func (e *ftpsEnv) caseDir(dir string) error {
	p := e.srv.Path(dir)
	if err := os.MkdirAll(p, 0o755); err != nil {
		return err
	}
	os.Chown(p, e.srv.UID, e.srv.GID)
	for _, f := range e.src {
		if err := os.Link(f.Path, filepath.Join(p, f.Name)); err != nil && !os.IsExist(err) {
			return err
		}
	}
	return nil
}

// proxyFor returns the proxy a client set-up of the matrix talks to, and
// its port.
func (e *ftpsEnv) proxyFor(c ftpsClient) (*peers.Proxy, int) {
	if c.implicit() {
		return e.implicit, ftpsImplicitPort
	}
	return e.allow, ftpsAllowPort
}

// runCombo downloads every size in one session and uploads every size in
// another, checks every byte, then checks the proxy's log of those
// sessions.
func (e *ftpsEnv) runCombo(c ftpsClient, dir string) {
	g := &group{tl: e.tl, label: "ftps/" + e.srv.Kind.Name + "/" + c.label()}
	defer g.flush()
	if !g.run("setup", func() error { return e.caseDir(dir) }) {
		return
	}
	px, port := e.proxyFor(c)
	// The transfers the log must show, of the cases that passed: a failed
	// case has said what went wrong already.
	var want []ftpsXfer
	var verbs []string
	down := "retr-" + e.sizesLabel()
	if g.run(down, func() error {
		var xs []ftpsPair
		for _, f := range e.src {
			xs = append(xs, ftpsPair{remote: dir + "/" + f.Name, local: filepath.Join(e.dl, dir+"-"+f.Name)})
		}
		if _, err := e.transfer(c, port, false, xs); err != nil {
			return err
		}
		for i, x := range xs {
			if err := sameLocal(x.local, e.src[i]); err != nil {
				return err
			}
			os.Remove(x.local)
		}
		return nil
	}) {
		verbs = append(verbs, "RETR")
		for _, f := range e.src {
			want = append(want, ftpsXfer{"RETR", f.Size})
		}
	}
	up := "stor-" + e.sizesLabel()
	if g.run(up, func() error {
		var xs []ftpsPair
		for _, f := range e.uploads {
			xs = append(xs, ftpsPair{remote: dir + "/" + f.Name, local: f.Path})
		}
		if _, err := e.transfer(c, port, true, xs); err != nil {
			return err
		}
		for i, x := range xs {
			if err := peers.SameContent(e.srv.Path(x.remote), e.uploads[i].Size, e.uploads[i].Sum); err != nil {
				return fmt.Errorf("server side: %w", err)
			}
			os.Remove(e.srv.Path(x.remote))
		}
		return nil
	}) {
		verbs = append(verbs, "STOR")
		for _, f := range e.uploads {
			want = append(want, ftpsXfer{"STOR", f.Size})
		}
	}
	g.run("proxy-log", func() error {
		lg, err := readFTPSLog(px.LogPath)
		if err != nil {
			return err
		}
		res, err := lg.check(dir, c, verbs, want)
		if res.total > 0 {
			e.noteResumption(c.name, res)
		}
		return err
	})
}

// sameLocal checks a downloaded file; a client may create no file for an
// empty download.
func sameLocal(path string, f peers.File) error {
	if f.Size == 0 {
		if _, err := os.Stat(path); os.IsNotExist(err) {
			return nil
		}
	}
	return peers.SameContent(path, f.Size, f.Sum)
}

// --- the clients -------------------------------------------------------------------

// ftpsPair is one file of a transfer session: the remote path (relative to
// the login directory) and the local one.
type ftpsPair struct{ remote, local string }

// transfer runs one session of the client that downloads (upload false) or
// uploads every pair in turn, and returns the client's output.
func (e *ftpsEnv) transfer(c ftpsClient, port int, upload bool, xs []ftpsPair) (string, error) {
	return e.transferCA(c, port, upload, xs, e.pki.CAFile, ftpsClientLimit, false)
}

// transferCA is transfer with the CA file the client verifies the proxy
// with, a time limit, and verbose output (curl's -v, which shows the
// replies).
func (e *ftpsEnv) transferCA(c ftpsClient, port int, upload bool, xs []ftpsPair, ca string, limit time.Duration, verbose bool) (string, error) {
	switch {
	case strings.HasPrefix(c.name, "curl"):
		argv := e.curlArgv(c, port, ca, verbose)
		for _, x := range xs {
			if upload {
				argv = append(argv, "-T", x.local, e.curlURL(c, port, x.remote))
			} else {
				argv = append(argv, e.curlURL(c, port, x.remote), "-o", x.local)
			}
		}
		return runCombined(e.ctx, limit, argv)
	case strings.HasPrefix(c.name, "lftp"):
		var cmds []string
		for _, x := range xs {
			if upload {
				cmds = append(cmds, "put "+x.local+" -o "+x.remote)
			} else {
				cmds = append(cmds, "get "+x.remote+" -o "+x.local)
			}
		}
		ctx, cancel := context.WithTimeout(e.ctx, limit)
		defer cancel()
		tg := peers.Target{Host: e.proxyHost, Port: port, Source: e.source, Mode: c.mode}
		return peers.Lftp{}.Run(ctx, tg, append(e.lftpTLS(c, ca), cmds...)...)
	case c.name == "ftplib":
		op := "getmany"
		var args []string
		for _, x := range xs {
			if upload {
				op = "putmany"
				args = append(args, x.local, x.remote)
			} else {
				args = append(args, x.remote, x.local)
			}
		}
		return runCombined(e.ctx, limit, e.ftplibArgv(c, port, ca, op, args...))
	}
	return "", fmt.Errorf("unknown client %q", c.name)
}

// curlArgv is curl's command line for the set-up, up to the URLs; with
// --fail-early a failed transfer ends the run (curl's exit status is
// otherwise the last URL's). curl-tls12 pins TLS 1.2 (--tlsv1.2
// --tls-max 1.2), curl-tls13 asks for 1.3 and reaches the proxy by its DNS
// name; both demand AUTH TLS with --ssl-reqd, which also makes curl send
// PROT P. curl-implicit uses ftps:// URLs. The proxy is verified against
// ca, never skipped.
func (e *ftpsEnv) curlArgv(c ftpsClient, port int, ca string, verbose bool) []string {
	a := []string{"curl", "-sS", "--fail-early", "--max-time", "80", "--connect-timeout", "10", "--interface", e.source,
		"--user", peers.User + ":" + peers.Password, "--ftp-method", "multicwd", "--cacert", ca}
	if verbose {
		a = append(a, "-v")
	}
	switch c.name {
	case "curl-tls12":
		a = append(a, "--ssl-reqd", "--tlsv1.2", "--tls-max", "1.2")
	case "curl-tls13":
		a = append(a, "--ssl-reqd", "--tlsv1.3", "--resolve", fmt.Sprintf("%s:%d:%s", ftpsDNSName, port, e.proxyHost))
	}
	switch c.mode {
	case "epsv":
		a = append(a, "--ftp-pasv")
	case "pasv":
		a = append(a, "--ftp-pasv", "--disable-epsv")
	case "port":
		a = append(a, "-P", e.source, "--disable-eprt")
	case "eprt":
		a = append(a, "-P", e.source)
	}
	return a
}

// curlURL is the URL of a remote path through the proxy for the set-up.
func (e *ftpsEnv) curlURL(c ftpsClient, port int, remote string) string {
	scheme, host := "ftp", e.proxyHost
	if c.implicit() {
		scheme = "ftps"
	}
	if c.name == "curl-tls13" {
		host = ftpsDNSName
	}
	return fmt.Sprintf("%s://%s/%s", scheme, net.JoinHostPort(host, strconv.Itoa(port)), remote)
}

// lftpTLS are the lftp settings of an FTPS session: AUTH TLS or fail,
// PROT P, the proxy verified against ca (name included), and no retry that
// could hide a failed first attempt; lftp-tls12 keeps GnuTLS to TLS 1.2.
// lftp reads them when it connects, so they may follow the open.
func (e *ftpsEnv) lftpTLS(c ftpsClient, ca string) []string {
	priority := ""
	if c.name == "lftp-tls12" {
		priority = "NORMAL:-VERS-TLS-ALL:+VERS-TLS1.2"
	}
	return []string{
		"set ssl:priority \"" + priority + "\"",
		"set ftp:ssl-force true",
		"set ftp:ssl-protect-data true",
		"set ftp:ssl-protect-list true",
		"set ssl:ca-file " + ca,
		"set ssl:verify-certificate yes",
		"set ssl:check-hostname yes",
		"set net:max-retries 1",
	}
}

// ftplibArgv runs the ftplib script over explicit FTPS with PROT P.
func (e *ftpsEnv) ftplibArgv(c ftpsClient, port int, ca, op string, args ...string) []string {
	argv := []string{"python3", e.script, "--host", e.proxyHost, "--port", strconv.Itoa(port),
		"--user", peers.User, "--password", peers.Password, "--source", e.source, "--mode", c.mode,
		"--timeout", "30", "--tls", "explicit", "--cafile", ca, op}
	return append(argv, args...)
}

// runCombined runs a program for at most limit and returns its stdout and
// stderr together (curl's -v trace and the ftplib script's errors go to
// stderr); a failure carries the command line and the end of the output.
func runCombined(ctx context.Context, limit time.Duration, argv []string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("timed out after %s", limit)
		}
		return string(out), fmt.Errorf("%s: %v\n%s", peers.ShellQuote(argv), err, peers.Tail(string(out), 2000))
	}
	return string(out), nil
}

// --- verification --------------------------------------------------------------------

// runVerification checks that each client refuses the proxy when it
// verifies it against another CA, and curl when the name differs: the
// suite's clients really verify.
func (e *ftpsEnv) runVerification() {
	g := &group{tl: e.tl, label: "ftps/" + e.srv.Kind.Name + "/verify"}
	defer g.flush()
	dir := "v01-verify"
	if !g.run("setup", func() error { return e.caseDir(dir) }) {
		return
	}
	x := []ftpsPair{{remote: dir + "/" + e.src[1].Name, local: filepath.Join(e.dl, "verify.bin")}}
	for _, c := range []struct {
		client ftpsClient
		want   *regexp.Regexp
	}{
		{ftpsClient{name: "curl-tls13", mode: "epsv"}, regexp.MustCompile(`curl: \(60\)`)},
		{ftpsClient{name: "lftp", mode: "passive"}, regexp.MustCompile(`Certificate verification: .*not trusted|issuer is unknown`)},
		{ftpsClient{name: "ftplib", mode: "pasv"}, regexp.MustCompile(`CERTIFICATE_VERIFY_FAILED`)},
	} {
		g.run(c.client.name+"-other-ca-refused", func() error {
			return expectRefusal(e.transferCA(c.client, ftpsAllowPort, false, x, e.pki.OtherCAFile, ftpsRefusalLimit, false))(c.want)
		})
	}
	g.run("curl-other-name-refused", func() error {
		argv := e.curlArgv(ftpsClient{name: "curl-tls12", mode: "epsv"}, ftpsAllowPort, e.pki.CAFile, false)
		argv = append(argv, "--resolve", fmt.Sprintf("other.interop.test:%d:%s", ftpsAllowPort, e.proxyHost),
			fmt.Sprintf("ftp://other.interop.test:%d/%s", ftpsAllowPort, x[0].remote), "-o", x[0].local)
		return expectRefusal(runCombined(e.ctx, ftpsRefusalLimit, argv))(regexp.MustCompile(`curl: \(60\).*(no alternative certificate subject name|does not match)`))
	})
}

// expectRefusal returns a check that a client run failed, within its
// limit, with output that matches want.
func expectRefusal(out string, err error) func(want *regexp.Regexp) error {
	return func(want *regexp.Regexp) error {
		if err == nil {
			return fmt.Errorf("the client succeeded, want a refusal matching %q:\n%s", want, peers.Tail(out, 1500))
		}
		if strings.Contains(err.Error(), "timed out after") {
			return fmt.Errorf("the client hung: %v", err)
		}
		if !want.MatchString(out) && !want.MatchString(err.Error()) {
			return fmt.Errorf("the client failed, but its output does not match %q:\n%v", want, err)
		}
		return nil
	}
}

// --- the require proxy -----------------------------------------------------------------

// runRequire runs the cases of the proxy with --client-tls require and
// --tls-data-reuse require. A client that resumed every data connection
// through the allow proxy must work; one that resumed none must get 425
// with its text at once. Plain logins get 530, PROT C transfers 521.
func (e *ftpsEnv) runRequire() {
	g := &group{tl: e.tl, label: "ftps/" + e.srv.Kind.Name + "/require"}
	defer g.flush()
	dir := "q00-require"
	if !g.run("setup", func() error { return e.caseDir(dir) }) {
		return
	}
	var tokens []string
	for i, c := range []ftpsClient{
		{name: "lftp", mode: "passive", mustResume: true},
		{name: "lftp-tls12", mode: "passive", proto: "TLS 1.2", mustResume: true},
		{name: "curl-tls13", mode: "epsv", proto: "TLS 1.3", mustResume: true},
		{name: "curl-tls12", mode: "pasv", proto: "TLS 1.2"},
		{name: "ftplib", mode: "pasv"},
	} {
		// Each client gets a directory of its own, so that its
		// session can be found in the log.
		sub := fmt.Sprintf("q%02d-%s", i+1, c.name)
		if err := e.caseDir(sub); err != nil {
			g.run(c.name+"-setup", func() error { return err })
			continue
		}
		tokens = append(tokens, sub)
		resumed, total := e.resumption(c.name)
		switch {
		case total > 0 && resumed == total:
			g.run(c.name+"-resumes-retr-1MiB-x2", func() error { return e.requireWorks(c, sub) })
		case total > 0 && resumed == 0:
			g.run(c.name+"-no-resume-425", func() error { return e.requireRefuses(c, sub) })
		default:
			g.run(c.name+"-resumes-always-or-never", func() error {
				return fmt.Errorf("%s resumed %d of %d data connections through the allow proxy: neither always nor never, so what require does to it is not defined here", c.name, resumed, total)
			})
		}
	}
	g.run("plain-login-530", func() error {
		argv := []string{"curl", "-sS", "-v", "--max-time", "15", "--interface", e.source,
			"--user", peers.User + ":" + peers.Password, fmt.Sprintf("ftp://%s/%s/%s", e.addr(ftpsRequirePort), dir, e.src[1].Name), "-o", "/dev/null"}
		return expectRefusal(runCombined(e.ctx, ftpsRefusalLimit, argv))(regexp.MustCompile(`(?s)> USER ` + peers.User + `.*< 530 .*curl: \(67\)`))
	})
	g.run("prot-c-521", func() error {
		argv := []string{"curl", "-sS", "-v", "--max-time", "15", "--interface", e.source, "--cacert", e.pki.CAFile,
			"--ftp-ssl-control", "--user", peers.User + ":" + peers.Password,
			fmt.Sprintf("ftp://%s/%s/%s", e.addr(ftpsRequirePort), dir, e.src[1].Name), "-o", "/dev/null"}
		return expectRefusal(runCombined(e.ctx, ftpsRefusalLimit, argv))(regexp.MustCompile(`(?s)> PROT C.*< 200 PROT C.*> RETR .*< 521 .*curl: \(19\)`))
	})
	g.run("proxy-log", func() error {
		lg, err := readFTPSLog(e.require.LogPath)
		if err != nil {
			return err
		}
		for _, tok := range tokens {
			ss := lg.sessionsWith(tok)
			if len(ss) == 0 {
				return fmt.Errorf("no session in %s names %s", e.require.LogPath, tok)
			}
			for _, s := range ss {
				for _, ev := range s.events {
					if ev.msg() == "transfer" && ev.str("tls") == "" {
						return fmt.Errorf("transfer line without \"tls\": %s", ev.raw)
					}
					if ev.msg() == "transfer" && ev.str("error") == "" && !ev.bool("resumed") {
						return fmt.Errorf("a transfer that did not resume passed --tls-data-reuse require: %s", ev.raw)
					}
				}
			}
		}
		return nil
	})
}

// requireWorks downloads two files in one session through the require
// proxy; both must arrive intact.
func (e *ftpsEnv) requireWorks(c ftpsClient, dir string) error {
	f := e.src[1]
	xs := []ftpsPair{
		{remote: dir + "/" + f.Name, local: filepath.Join(e.dl, "req-"+c.name+"-1.bin")},
		{remote: dir + "/" + f.Name, local: filepath.Join(e.dl, "req-"+c.name+"-2.bin")},
	}
	if _, err := e.transfer(c, ftpsRequirePort, false, xs); err != nil {
		return err
	}
	for _, x := range xs {
		if err := peers.SameContent(x.local, f.Size, f.Sum); err != nil {
			return err
		}
	}
	return nil
}

// requireRefuses downloads through the require proxy with a client that
// does not resume: the RETR must end with the proxy's 425, whose text the
// client shows, well within ftpsRefusalLimit.
func (e *ftpsEnv) requireRefuses(c ftpsClient, dir string) error {
	xs := []ftpsPair{{remote: dir + "/" + e.src[1].Name, local: filepath.Join(e.dl, "req-"+c.name+".bin")}}
	return expectRefusal(e.transferCA(c, ftpsRequirePort, false, xs, e.pki.CAFile, ftpsRefusalLimit, true))(
		regexp.MustCompile(`425 TLS session of data connection not resumed`))
}

// --- the raw client ------------------------------------------------------------------------

// runRawAuth sends "AUTH TLS" and "USER x" in one write: the USER is
// plaintext that anyone on the path could have put there, and must never
// be acted on. Over TLS the client then sends PASS first (a USER acted on
// would make it a failed login of x; without one the server asks for
// USER), logs in, and fetches 1 MiB through a PASV data connection with a
// TLS session resumed from the control connection's.
func (e *ftpsEnv) runRawAuth() {
	g := &group{tl: e.tl, label: "ftps/" + e.srv.Kind.Name + "/raw"}
	defer g.flush()
	dir := "r01-raw"
	if !g.run("setup", func() error { return e.caseDir(dir) }) {
		return
	}
	var trace []string
	ok := g.run("auth-tls-and-user-in-one-write", func() error {
		err := e.rawAuth(dir, &trace)
		if err != nil {
			return fmt.Errorf("%v\ntranscript:\n  %s", err, strings.Join(trace, "\n  "))
		}
		return nil
	})
	if !ok {
		return
	}
	g.run("proxy-log", func() error {
		lg, err := readFTPSLog(e.allow.LogPath)
		if err != nil {
			return err
		}
		ss := lg.sessionsWith(dir)
		if len(ss) != 1 {
			return fmt.Errorf("%d sessions in %s name %s, want 1", len(ss), e.allow.LogPath, dir)
		}
		var discarded bool
		var res ftpsResumption
		for _, ev := range ss[0].events {
			switch {
			case ev.msg() == "command" && strings.HasPrefix(ev.str("cmd"), "USER x"):
				return fmt.Errorf("the plaintext USER was taken as a command: %s", ev.raw)
			case ev.msg() == "plaintext sent after AUTH TLS discarded":
				discarded = true
			case ev.msg() == "transfer" && (ev.str("tls") == "" || !ev.bool("resumed") || ev.str("error") != ""):
				return fmt.Errorf("transfer line without TLS, resumption, or with an error: %s", ev.raw)
			case ev.msg() == "transfer":
				res = res.add(ftpsResumption{resumed: 1, total: 1, versions: []string{ev.str("tls")}})
			}
		}
		if !discarded {
			return fmt.Errorf("no \"plaintext sent after AUTH TLS discarded\" line in session %d of %s", ss[0].id, e.allow.LogPath)
		}
		if res.total != 1 {
			return fmt.Errorf("%d transfer lines in session %d of %s, want 1", res.total, ss[0].id, e.allow.LogPath)
		}
		e.noteResumption("go-crypto/tls", res)
		return nil
	})
}

// ftpsRaw is a control connection of the raw client.
type ftpsRaw struct {
	conn  net.Conn
	tp    *textproto.Conn
	trace *[]string
}

func newFTPSRaw(c net.Conn, trace *[]string) *ftpsRaw {
	return &ftpsRaw{conn: c, tp: textproto.NewConn(c), trace: trace}
}

// cmd sends a command (none for "") and reads its reply, which must have
// code want; every step is bounded by ftpsRawTimeout.
func (r *ftpsRaw) cmd(line string, want int) (string, error) {
	r.conn.SetDeadline(time.Now().Add(ftpsRawTimeout))
	if line != "" {
		shown := line
		if strings.HasPrefix(line, "PASS ") {
			shown = "PASS ****"
		}
		*r.trace = append(*r.trace, "> "+shown)
		if err := r.tp.PrintfLine("%s", line); err != nil {
			return "", err
		}
	}
	code, msg, err := r.tp.ReadResponse(want)
	*r.trace = append(*r.trace, fmt.Sprintf("< %d %s", code, strings.ReplaceAll(msg, "\n", " | ")))
	return msg, err
}

// rawAuth is the raw client's session; see runRawAuth.
func (e *ftpsEnv) rawAuth(dir string, trace *[]string) error {
	d := net.Dialer{Timeout: ftpsRawTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(e.source)}}
	conn, err := d.DialContext(e.ctx, "tcp", e.addr(ftpsAllowPort))
	if err != nil {
		return err
	}
	defer conn.Close()
	plain := newFTPSRaw(conn, trace)
	if _, err := plain.cmd("", 220); err != nil {
		return err
	}
	*trace = append(*trace, "> AUTH TLS, USER x (one write)")
	conn.SetWriteDeadline(time.Now().Add(ftpsRawTimeout))
	if _, err := conn.Write([]byte("AUTH TLS\r\nUSER x\r\n")); err != nil {
		return err
	}
	if _, err := plain.cmd("", 234); err != nil {
		return err
	}
	if n := plain.tp.R.Buffered(); n > 0 {
		return fmt.Errorf("%d bytes of plaintext after the 234, before the handshake", n)
	}
	conf := &tls.Config{RootCAs: e.pki.pool, ServerName: e.proxyHost, ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	tc := tls.Client(conn, conf)
	conn.SetDeadline(time.Now().Add(ftpsRawTimeout))
	if err := tc.HandshakeContext(e.ctx); err != nil {
		return fmt.Errorf("TLS handshake after 234 (a plaintext reply to USER x would land here): %w", err)
	}
	c := newFTPSRaw(tc, trace)
	if _, err := c.cmd("PASS "+peers.Password, 503); err != nil {
		return fmt.Errorf("PASS before any USER over TLS: %w (530 would mean the plaintext USER x was acted on)", err)
	}
	for _, s := range []struct {
		line string
		code int
	}{{"USER " + peers.User, 331}, {"PASS " + peers.Password, 230}, {"TYPE I", 200}, {"PBSZ 0", 200}, {"PROT P", 200}} {
		if _, err := c.cmd(s.line, s.code); err != nil {
			return err
		}
	}
	msg, err := c.cmd("PASV", 227)
	if err != nil {
		return err
	}
	dataAddr, err := ftpsPasvAddr(msg, e.proxyHost)
	if err != nil {
		return err
	}
	data, err := d.DialContext(e.ctx, "tcp", dataAddr)
	if err != nil {
		return fmt.Errorf("data connection to %s: %w", dataAddr, err)
	}
	defer data.Close()
	f := e.src[1]
	if _, err := c.cmd("RETR "+dir+"/"+f.Name, 150); err != nil {
		return err
	}
	dtc := tls.Client(data, conf)
	data.SetDeadline(time.Now().Add(ftpsRawTimeout))
	if err := dtc.HandshakeContext(e.ctx); err != nil {
		return fmt.Errorf("data connection's TLS handshake: %w", err)
	}
	h := sha256.New()
	n, err := io.Copy(h, dtc)
	if err != nil {
		return fmt.Errorf("data connection after %d bytes: %w", n, err)
	}
	if _, err := c.cmd("", 226); err != nil {
		return err
	}
	if sum := hex.EncodeToString(h.Sum(nil)); n != f.Size || sum != f.Sum {
		return fmt.Errorf("RETR: %d bytes sha256 %.16s, want %d bytes sha256 %.16s", n, sum, f.Size, f.Sum)
	}
	if !dtc.ConnectionState().DidResume {
		return errors.New("the data connection did not resume the control connection's TLS session")
	}
	_, err = c.cmd("QUIT", 221)
	return err
}

// ftpsPasvAddr reads the address of a 227 reply's text, which must name
// host (the proxy).
func ftpsPasvAddr(msg, host string) (string, error) {
	m := re227.FindStringSubmatch(msg)
	if m == nil {
		return "", fmt.Errorf("no address in 227 %q", msg)
	}
	var v [6]int
	for i := range v {
		v[i], _ = strconv.Atoi(m[i+1])
		if v[i] > 255 {
			return "", fmt.Errorf("bad number in 227 %q", msg)
		}
	}
	if h := fmt.Sprintf("%d.%d.%d.%d", v[0], v[1], v[2], v[3]); h != host {
		return "", fmt.Errorf("227 names %s, want %s (the proxy): %q", h, host, msg)
	}
	return net.JoinHostPort(host, strconv.Itoa(v[4]<<8|v[5])), nil
}

// --- the proxy's log ------------------------------------------------------------------------

// ftpsEvent is one line of the proxy's JSON log.
type ftpsEvent struct {
	fields map[string]any
	raw    string
}

func (ev ftpsEvent) str(k string) string { s, _ := ev.fields[k].(string); return s }
func (ev ftpsEvent) msg() string         { return ev.str("message") }
func (ev ftpsEvent) bool(k string) bool  { b, _ := ev.fields[k].(bool); return b }
func (ev ftpsEvent) int(k string) int64  { f, _ := ev.fields[k].(float64); return int64(f) }

// ftpsSession is the log lines of one session, in order.
type ftpsSession struct {
	id     int
	events []ftpsEvent
}

// ftpsLog is a proxy's log, by session.
type ftpsLog struct {
	path     string
	sessions []*ftpsSession
}

// readFTPSLog reads a proxy's JSON log; lines that are not JSON or belong
// to no session are skipped.
func readFTPSLog(path string) (*ftpsLog, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	lg := &ftpsLog{path: path}
	byID := map[int]*ftpsSession{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		id, ok := m["session"].(float64)
		if !ok {
			continue
		}
		s := byID[int(id)]
		if s == nil {
			s = &ftpsSession{id: int(id)}
			byID[int(id)] = s
			lg.sessions = append(lg.sessions, s)
		}
		s.events = append(s.events, ftpsEvent{fields: m, raw: sc.Text()})
	}
	return lg, sc.Err()
}

// sessionsWith returns the sessions that sent a command naming token.
func (lg *ftpsLog) sessionsWith(token string) []*ftpsSession {
	var out []*ftpsSession
	for _, s := range lg.sessions {
		for _, ev := range s.events {
			if ev.msg() == "command" && strings.Contains(ev.str("cmd"), token) {
				out = append(out, s)
				break
			}
		}
	}
	return out
}

// ftpsXfer is a transfer the log must show: its verb and its bytes.
type ftpsXfer struct {
	verb string
	n    int64
}

// ftpsResumption counts TLS data connections, the resumed ones, and the
// TLS versions they used.
type ftpsResumption struct {
	resumed, total int
	versions       []string
}

// add returns r and o together.
func (r ftpsResumption) add(o ftpsResumption) ftpsResumption {
	r.resumed += o.resumed
	r.total += o.total
	for _, v := range o.versions {
		if !slices.Contains(r.versions, v) {
			r.versions = append(r.versions, v)
		}
	}
	sort.Strings(r.versions)
	return r
}

// check checks the log of the sessions that name token, a client set-up's
// directory: each session's control connection is TLS of the set-up's
// version; every transfer line says "tls" and has no error, and no reply
// was replaced; the lines of the verbs listed carry exactly the bytes of
// want, which proves the data went through the proxy; with mustResume,
// every data connection resumed.
func (lg *ftpsLog) check(token string, c ftpsClient, verbs []string, want []ftpsXfer) (ftpsResumption, error) {
	var res ftpsResumption
	ss := lg.sessionsWith(token)
	if len(ss) == 0 {
		return res, fmt.Errorf("no session in %s names %s", lg.path, token)
	}
	var got []ftpsXfer
	var problems []string
	for _, s := range ss {
		established := false
		for _, ev := range s.events {
			switch m := ev.msg(); {
			case m == "client TLS established":
				established = true
				if c.proto != "" && ev.str("tls") != c.proto {
					problems = append(problems, fmt.Sprintf("control connection is %q, want %q: %s", ev.str("tls"), c.proto, ev.raw))
				}
			case strings.Contains(m, "replaced"):
				problems = append(problems, "reply replaced: "+ev.raw)
			case m == "transfer":
				if ev.str("tls") == "" {
					problems = append(problems, "transfer line without \"tls\": "+ev.raw)
					continue
				}
				res = res.add(ftpsResumption{total: 1, versions: []string{ev.str("tls")}})
				if ev.bool("resumed") {
					res.resumed++
				} else if c.mustResume {
					problems = append(problems, fmt.Sprintf("%s resumes its TLS sessions, this data connection did not: %s", c.name, ev.raw))
				}
				if ev.str("error") != "" {
					problems = append(problems, "transfer failed at the proxy: "+ev.raw)
				}
				switch v := ev.str("cmd"); {
				case !slices.Contains(verbs, v):
				case v == "RETR":
					got = append(got, ftpsXfer{v, ev.int("down")})
				case v == "STOR":
					got = append(got, ftpsXfer{v, ev.int("up")})
				}
			}
		}
		if !established {
			problems = append(problems, fmt.Sprintf("session %d has no \"client TLS established\" line", s.id))
		}
	}
	if g, w := xferList(got), xferList(want); g != w {
		problems = append(problems, fmt.Sprintf("transfer lines %s, want %s", g, w))
	}
	if len(problems) > 0 {
		return res, fmt.Errorf("%s (sessions %s):\n%s", lg.path, sessionIDs(ss), strings.Join(problems, "\n"))
	}
	return res, nil
}

// xferList renders transfers sorted, for comparison.
func xferList(xs []ftpsXfer) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf("%s %d", x.verb, x.n)
	}
	sort.Strings(s)
	return "[" + strings.Join(s, ", ") + "]"
}

func sessionIDs(ss []*ftpsSession) string {
	s := make([]string, len(ss))
	for i, x := range ss {
		s[i] = strconv.Itoa(x.id)
	}
	return strings.Join(s, ",")
}
