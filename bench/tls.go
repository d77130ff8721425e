package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The FTPS part of the run: a TLS client (crypto/tls, verifying against the
// run's own CA, resuming the control connection's session on every data
// connection) measured three ways:
//
//   - direct: client -> vsftpd, TLS end to end;
//   - offload: client -> ftpproxy (TLS, its own certificate) -> vsftpd over
//     plain FTP;
//   - re-encryption: client -> ftpproxy -> vsftpd over TLS again
//     (--upstream-tls explicit, verified against the same CA).
//
// vsftpd is the one of the plain rows with ssl_enable=YES, anonymous TLS
// allowed and not forced, and require_ssl_reuse=YES: a data connection that
// does not resume its control connection's session is refused (522), so
// the direct rows and the re-encrypting proxy's upstream side must resume.

// Targets of the FTPS rows, as fractions of direct FTPS.
const (
	offloadGoal   = 0.8 // MB/s and sessions/s
	reencryptGoal = 0.6
)

// pki is the run's certificates: a CA, and one server certificate for
// 127.0.0.1 each for vsftpd and for the proxy, all ECDSA P-256.
type pki struct {
	caFile         string
	vsCert, vsKey  string
	pxCert, pxKey  string
	roots          *x509.CertPool
	serverName     string
	clientTemplate *tls.Config
}

// makePKI writes the CA and the two server certificates with their keys
// into dir.
func makePKI(dir string) (*pki, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ftpbench CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	p := &pki{
		caFile:     filepath.Join(dir, "ca.pem"),
		vsCert:     filepath.Join(dir, "vsftpd.pem"),
		vsKey:      filepath.Join(dir, "vsftpd.key"),
		pxCert:     filepath.Join(dir, "ftpproxy.pem"),
		pxKey:      filepath.Join(dir, "ftpproxy.key"),
		roots:      x509.NewCertPool(),
		serverName: "127.0.0.1",
	}
	p.roots.AddCert(ca)
	if err := writePEM(p.caFile, "CERTIFICATE", caDER, 0o644); err != nil {
		return nil, err
	}
	leaf := func(serial int64, name, certFile, keyFile string) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(7 * 24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			IPAddresses:  []net.IP{net.ParseIP(p.serverName)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		if err := writePEM(certFile, "CERTIFICATE", der, 0o644); err != nil {
			return err
		}
		return writePEM(keyFile, "PRIVATE KEY", keyDER, 0o600)
	}
	if err := leaf(2, "ftpbench vsftpd", p.vsCert, p.vsKey); err != nil {
		return nil, err
	}
	if err := leaf(3, "ftpbench ftpproxy", p.pxCert, p.pxKey); err != nil {
		return nil, err
	}
	// Verification stays on: the CA is the only root, and the name is
	// checked against the certificates' IP address.
	p.clientTemplate = &tls.Config{
		RootCAs:    p.roots,
		ServerName: p.serverName,
		MinVersion: tls.VersionTLS12,
	}
	return p, nil
}

func writePEM(path, typ string, der []byte, perm os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), perm)
}

// vsftpdTLSConf is the FTPS part of vsftpd.conf: TLS offered to anonymous
// sessions and not forced, so that the plain rows and the offloading proxy
// use the same server. vsftpd 3.0.3's default cipher list (DES-CBC3-SHA)
// is one OpenSSL 3 no longer offers, hence ssl_ciphers; ssl_tlsv1=YES
// allows TLS 1.0 and every later version, 1.3 included.
func vsftpdTLSConf(p *pki) string {
	return fmt.Sprintf(`ssl_enable=YES
rsa_cert_file=%s
rsa_private_key_file=%s
ssl_ciphers=HIGH:!aNULL:!MD5
ssl_sslv2=NO
ssl_sslv3=NO
ssl_tlsv1=YES
allow_anon_ssl=YES
force_anon_logins_ssl=NO
force_anon_data_ssl=NO
require_ssl_reuse=YES
ssl_request_cert=NO
`, p.vsCert, p.vsKey)
}

// writeStamped writes mib MiB to path, block after block, each stamped
// with its index, and returns the SHA-256 of the whole.
func writeStamped(path string, mib int64, block []byte) ([32]byte, error) {
	var sum [32]byte
	f, err := os.Create(path)
	if err != nil {
		return sum, err
	}
	h := sha256.New()
	w := io.MultiWriter(f, h)
	for i := range mib {
		copy(block, fmt.Sprintf("%016d", i))
		if _, err := w.Write(block); err != nil {
			f.Close()
			return sum, err
		}
	}
	if err := f.Close(); err != nil {
		return sum, err
	}
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// startFTPSProxies starts the offloading and the re-encrypting proxy, each
// on a port of its own and with passive ranges apart from the plain
// proxy's, and sets up the three FTPS modes.
func (b *bench) startFTPSProxies(p *pki, taken ...int) error {
	var ports []int
	for _, want := range []int{b.cfg.proxyPort + 1, b.cfg.proxyPort + 2} {
		port, err := pickPort(want)
		if err != nil {
			return err
		}
		for tries := 0; containsInt(taken, port); tries++ {
			if tries == 10 {
				return fmt.Errorf("no free port for an FTPS proxy")
			}
			if port, err = pickPort(0); err != nil {
				return err
			}
		}
		taken = append(taken, port)
		ports = append(ports, port)
	}
	offAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	reAddr := fmt.Sprintf("127.0.0.1:%d", ports[1])
	common := []string{"--upstream", b.direct.addr, "--log-level", "warn", "--drain-timeout", "1s",
		"--tls-cert", p.pxCert, "--tls-key", p.pxKey, "--client-tls", "allow"}
	off, err := startProc("ftpproxy (offload)", filepath.Join(b.work, "ftpproxy-offload.log"),
		append([]string{b.cfg.proxy, "--listen", offAddr, "--passive-ports", "23000-23999"}, common...)...)
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.pxOff = off
	b.mu.Unlock()
	re, err := startProc("ftpproxy (re-encrypt)", filepath.Join(b.work, "ftpproxy-reencrypt.log"),
		append([]string{b.cfg.proxy, "--listen", reAddr, "--passive-ports", "24000-24999",
			"--upstream-tls", "explicit", "--upstream-ca", p.caFile, "--upstream-server-name", p.serverName}, common...)...)
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.pxRe = re
	b.mu.Unlock()
	// The greeting through the re-encrypting proxy comes only once its TLS
	// to vsftpd is up, certificate verified.
	if err := waitReady(off, offAddr, 10*time.Second); err != nil {
		return err
	}
	if err := waitReady(re, reAddr, 10*time.Second); err != nil {
		return err
	}
	procOf := func(pp **proc) func() *proc {
		return func() *proc {
			b.mu.Lock()
			defer b.mu.Unlock()
			return *pp
		}
	}
	b.ftps = []mode{
		{name: "direct", addr: b.direct.addr, tls: p.clientTemplate},
		{name: "offload", addr: offAddr, tls: p.clientTemplate, px: procOf(&b.pxOff)},
		{name: "re-encrypt", addr: reAddr, tls: p.clientTemplate, px: procOf(&b.pxRe)},
	}
	b.res.tlsXferData = map[string]int{}
	b.res.tlsXferResumed = map[string]int{}
	return nil
}

func containsInt(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// verifyFTPS checks the bytes of each FTPS mode before anything is timed:
// SHA-256 of the whole FTPS download, an upload read back from disk, the
// 4 KiB file; and prints what TLS each mode negotiated.
func (b *bench) verifyFTPS() error {
	fmt.Println("verify FTPS: SHA-256 of the FTPS download and an upload read back, each mode; the 4 KiB file")
	up := make([]byte, verifyUpload)
	fillRandom(up)
	for _, m := range b.ftps {
		if err := b.verifyFTPSMode(m, up); err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		if _, err := smallSession(m, newSmallBuf(), sha256.Sum256(b.small)); err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
	}
	return nil
}

func (b *bench) verifyFTPSMode(m mode, up []byte) error {
	c, err := m.login()
	if err != nil {
		return err
	}
	defer c.close()
	st := c.tlsState()
	c.setDeadline(xferTimeout)
	if _, err := c.expect("TYPE I", 200); err != nil {
		return err
	}
	h := sha256.New()
	n, err := c.retr("pub/tls.bin", true, h, xferTimeout)
	if err != nil {
		return err
	}
	if want := b.cfg.tlsDownMiB << 20; n != want {
		return fmt.Errorf("downloaded %d bytes, want %d", n, want)
	}
	if !bytes.Equal(h.Sum(nil), b.tlsSHA[:]) {
		return fmt.Errorf("the download's SHA-256 differs from the file's")
	}
	name := "verify-tls-" + strings.ReplaceAll(m.name, "-", "") + ".bin"
	if n, err := c.stor("pub/"+name, true, bytes.NewReader(up), xferTimeout); err != nil {
		return err
	} else if n != int64(len(up)) {
		return fmt.Errorf("sent %d of %d bytes", n, len(up))
	}
	data, err := os.ReadFile(filepath.Join(b.root, "pub", name))
	if err != nil {
		return err
	}
	if !bytes.Equal(data, up) {
		return fmt.Errorf("the upload stored %d bytes that differ from the %d sent", len(data), len(up))
	}
	if _, err := c.expect("DELE pub/"+name, 250); err != nil {
		return err
	}
	fmt.Printf("   %-10s control %s %s %s; data connections resumed %d of %d\n", m.name,
		tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite), st.CurveID, c.dataResumed, c.dataTLS)
	return c.quit()
}

// ftpsThroughput times the FTPS download and upload, the three modes in
// turn, each round starting with the next one.
func (b *bench) ftpsThroughput() error {
	b.res.tlsXfer = map[xferKind]map[string][]xfer{}
	fmt.Printf("\n5. FTPS throughput: RETR %d MiB and STOR %d MiB over TLS (PROT P), EPSV, binary; direct, offload, re-encrypt\n",
		b.cfg.tlsDownMiB, b.cfg.tlsUpMiB)
	for _, k := range []xferKind{downUser, upUser} {
		b.res.tlsXfer[k] = map[string][]xfer{}
		for _, m := range b.ftps {
			if _, err := b.transfer(m, k); err != nil {
				return fmt.Errorf("warm-up %s %s: %w", m.name, k, err)
			}
		}
		for r := range b.cfg.rounds {
			for _, m := range rotate(b.ftps, r) {
				x, err := b.transfer(m, k)
				if err != nil {
					return fmt.Errorf("%s %s: %w", m.name, k, err)
				}
				b.res.tlsXfer[k][m.name] = append(b.res.tlsXfer[k][m.name], x)
				fmt.Printf("   round %d  %-8s %-10s %6.0f MB/s  %5.2f CPU s/GiB  (proxy process %.2f)\n", r+1, k, m.name, x.mbps, x.cpuPerGiB, x.proxyCPUPerGiB)
			}
		}
	}
	return nil
}

// ftpsSessions runs the session test over FTPS.
func (b *bench) ftpsSessions() error {
	b.res.tlsSess = map[int]map[string]*sessRes{}
	fmt.Printf("\n6. FTPS sessions: connect, AUTH TLS, USER, PBSZ 0, PROT P, PASV, RETR 4 KiB over TLS, QUIT; %v per mode and concurrency in %d slots\n",
		b.cfg.tlsSessionTime, b.cfg.rounds)
	return b.sessions(b.ftps, b.cfg.tlsSessionTime, b.res.tlsSess)
}

// reportFTPS prints the FTPS table: the three modes and the two ratios to
// direct FTPS.
func (b *bench) reportFTPS() {
	r := b.res
	d, off, re := b.ftps[0].name, b.ftps[1].name, b.ftps[2].name
	fmt.Printf("\nFTPS (medians over %d rounds; TLS client -> vsftpd direct, -> ftpproxy -> plain vsftpd (offload),\n", b.cfg.rounds)
	fmt.Printf("-> ftpproxy -> vsftpd over TLS (re-encrypt))\n\n")
	fmt.Printf("%-40s %10s %10s %10s %9s %9s\n", "metric", "direct", "offload", "re-encrypt", "off/dir", "re/dir")
	fmt.Printf("%s\n", strings.Repeat("-", 93))
	row := func(name string, dv, ov, rv float64, prec int) {
		ratio := func(v float64) string {
			if dv == 0 {
				return "-"
			}
			return fmt.Sprintf("%.2f", v/dv)
		}
		fmt.Printf("%-40s %10.*f %10.*f %10.*f %9s %9s\n", name, prec, dv, prec, ov, prec, rv, ratio(ov), ratio(rv))
	}
	proxyOnly := func(name string, ov, rv float64, prec int) {
		fmt.Printf("%-40s %10s %10.*f %10.*f\n", name, "", prec, ov, prec, rv)
	}
	med := func(xs []xfer, f func(xfer) float64) float64 {
		v := make([]float64, len(xs))
		for i, x := range xs {
			v[i] = f(x)
		}
		return median(v)
	}
	mbps := func(x xfer) float64 { return x.mbps }
	cpu := func(x xfer) float64 { return x.cpuPerGiB }
	pcpu := func(x xfer) float64 { return x.proxyCPUPerGiB }
	for _, k := range []xferKind{downUser, upUser} {
		size := b.cfg.tlsDownMiB
		if k == upUser {
			size = b.cfg.tlsUpMiB
		}
		x := r.tlsXfer[k]
		row(fmt.Sprintf("%s %d MiB, MB/s", k, size), med(x[d], mbps), med(x[off], mbps), med(x[re], mbps), 0)
		row("  CPU s/GiB, machine", med(x[d], cpu), med(x[off], cpu), med(x[re], cpu), 2)
		proxyOnly("  CPU s/GiB, the proxy process", med(x[off], pcpu), med(x[re], pcpu), 2)
	}
	for _, c := range b.cfg.concurrency {
		s := r.tlsSess[c]
		row(fmt.Sprintf("sessions/s, %d client(s)", c), median(s[d].rates), median(s[off].rates), median(s[re].rates), 0)
		lat := func(m string, p float64) float64 { return ms(percentile(s[m].lat, p)) }
		row("  session latency p50, ms", lat(d, 0.5), lat(off, 0.5), lat(re, 0.5), 2)
		row("  session latency p99, ms", lat(d, 0.99), lat(off, 0.99), lat(re, 0.99), 2)
		perSess := func(m string) float64 {
			if s[m].n == 0 {
				return 0
			}
			return float64(s[m].proxyTicks) * 10 / float64(s[m].n)
		}
		proxyOnly("  CPU ms per session, the proxy process", perSess(off), perSess(re), 3)
	}
	fmt.Printf("\nTLS data connections that resumed the control connection's session:\n")
	for _, m := range b.ftps {
		resumed, n := r.tlsXferResumed[m.name], r.tlsXferData[m.name]
		for _, c := range b.cfg.concurrency {
			resumed += r.tlsSess[c][m.name].resumed
			n += r.tlsSess[c][m.name].n
		}
		fmt.Printf("  %-10s %d of %d\n", m.name, resumed, n)
	}
}

// ftpsGoals prints the FTPS goal lines through goal.
func (b *bench) ftpsGoals(goal func(string, bool)) {
	r := b.res
	d, off, re := b.ftps[0].name, b.ftps[1].name, b.ftps[2].name
	mbps := func(k xferKind, m string) float64 {
		v := make([]float64, 0, len(r.tlsXfer[k][m]))
		for _, x := range r.tlsXfer[k][m] {
			v = append(v, x.mbps)
		}
		return median(v)
	}
	check := func(what string, dv, ov, rv float64) {
		or, rr := ov/dv, rv/dv
		goal(fmt.Sprintf("FTPS offload %s >= %.1f of direct FTPS: %.3f", what, offloadGoal, or), or >= offloadGoal)
		goal(fmt.Sprintf("FTPS re-encryption %s >= %.1f of direct FTPS: %.3f", what, reencryptGoal, rr), rr >= reencryptGoal)
	}
	for _, k := range []xferKind{downUser, upUser} {
		check(k.String()+" throughput", mbps(k, d), mbps(k, off), mbps(k, re))
	}
	for _, c := range b.cfg.concurrency {
		s := r.tlsSess[c]
		check(fmt.Sprintf("sessions/s with %d client(s)", c), median(s[d].rates), median(s[off].rates), median(s[re].rates))
	}
}
