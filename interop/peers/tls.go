package peers

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// TLSOptions turns on FTPS (RFC 4217) in a server; pass it to StartServer
// with TLS. vsftpd (require_ssl_reuse=YES) and proftpd (mod_tls's
// default) then refuse a TLS data connection that does not resume the
// control connection's session; pure-ftpd 1.0.50 has no such check, and
// resumes no session: each of its data connections takes a full
// handshake.
type TLSOptions struct {
	// CertFile is the server's certificate, PEM, leaf first; KeyFile is
	// its private key, PEM. RSA 2048 (as MakeTestPKI makes) suits all
	// three servers.
	CertFile, KeyFile string
	// Require refuses logins and transfers without TLS: vsftpd
	// force_local_logins_ssl and force_local_data_ssl, proftpd
	// TLSRequired on, pure-ftpd -Y 3 (cleartext data channels refused
	// too). Without it TLS is offered and plain sessions are served as
	// well (pure-ftpd -Y 1).
	Require bool
	// Implicit makes the server expect a TLS handshake first on every
	// connection, control and data (the "ftps://" of port 990): vsftpd
	// implicit_ssl=YES, proftpd TLSOptions UseImplicitSSL. pure-ftpd has
	// no implicit mode; StartServer refuses one.
	Implicit bool
	// UploadCloseNotify makes vsftpd (strict_ssl_read_eof=YES) fail an
	// upload whose data connection ends without a TLS close_notify, so
	// that a truncated upload cannot pass for a complete one. The other
	// servers have no such setting and ignore it.
	UploadCloseNotify bool
}

// TLS makes the server speak FTPS as o says. The greeting check of
// StartServer then speaks TLS too when o.Implicit is set.
func TLS(o TLSOptions) ServerOption {
	return func(s *Server) { s.TLS = &o }
}

// checkTLS checks the TLS options of s before the server is configured.
func checkTLS(s *Server) error {
	o := s.TLS
	if o == nil {
		return nil
	}
	if o.Implicit && s.Kind.Name == PureFTPd.Name {
		return errors.New("pure-ftpd has no implicit TLS mode")
	}
	for _, f := range []string{o.CertFile, o.KeyFile} {
		if f == "" {
			return errors.New("TLS: CertFile and KeyFile are both needed")
		}
		if !filepath.IsAbs(f) {
			return fmt.Errorf("TLS: %s: want an absolute path (the servers run in their work directory)", f)
		}
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("TLS: %w", err)
		}
	}
	return nil
}

// yesNo renders b as vsftpd's YES or NO.
func yesNo(b bool) string {
	if b {
		return "YES"
	}
	return "NO"
}

// vsftpdTLSConfig is the part of vsftpd.conf that configures FTPS, empty
// without TLS. vsftpd 3.0.3's default cipher list is DES-CBC3-SHA, which
// OpenSSL 3 no longer offers, so ssl_ciphers is set; its SSL context
// allows every TLS version from 1.0 up (ssl_tlsv1 covers them all; 3.0.3
// has no ssl_tlsv1_2), SSLv2 and SSLv3 are turned off. log_ftp_protocol
// puts every command and reply in vsftpd.log, so the log shows AUTH,
// PBSZ and PROT as the server saw them; debug_ssl adds the TLS
// diagnostics.
func vsftpdTLSConfig(s *Server) string {
	o := s.TLS
	if o == nil {
		return ""
	}
	return fmt.Sprintf(`ssl_enable=YES
rsa_cert_file=%s
rsa_private_key_file=%s
ssl_ciphers=HIGH:!aNULL:!MD5
ssl_sslv2=NO
ssl_sslv3=NO
ssl_tlsv1=YES
allow_anon_ssl=NO
require_ssl_reuse=YES
ssl_request_cert=NO
force_local_logins_ssl=%s
force_local_data_ssl=%[3]s
implicit_ssl=%s
strict_ssl_read_eof=%s
debug_ssl=YES
log_ftp_protocol=YES
`, o.CertFile, o.KeyFile, yesNo(o.Require), yesNo(o.Implicit), yesNo(o.UploadCloseNotify))
}

// pureFTPdTLSArgs are the pure-ftpd arguments that configure FTPS, none
// without TLS: -Y 3 (TLS required on control and data) or -Y 1 (TLS
// offered), and -2 with the certificate and key files, which 1.0.50 takes
// as "cert,key" (the packaged default is one bundle at
// /etc/ssl/private/pure-ftpd.pem).
func pureFTPdTLSArgs(s *Server) []string {
	o := s.TLS
	if o == nil {
		return nil
	}
	level := "1"
	if o.Require {
		level = "3"
	}
	return []string{"-Y", level, "-2", o.CertFile + "," + o.KeyFile}
}

// proftpdTLSConfig is the part of proftpd.conf that configures FTPS,
// empty without TLS. mod_tls is a shared module of Debian's
// proftpd-mod-crypto package (install-peers.sh unpacks it beside
// proftpd-core), loaded from the unpacked tree with mod_dso. Data
// connections must resume the control connection's session: that is
// mod_tls's default (TLSOptions NoSessionReuseRequired turns it off).
func proftpdTLSConfig(s *Server) string {
	o := s.TLS
	if o == nil {
		return ""
	}
	opts := "EnableDiags"
	if o.Implicit {
		opts += " UseImplicitSSL"
	}
	return fmt.Sprintf(`<IfModule mod_dso.c>
ModulePath %s
LoadModule mod_tls.c
</IfModule>
<IfModule mod_tls.c>
TLSEngine on
TLSLog %s
TLSProtocol TLSv1.2 TLSv1.3
TLSRSACertificateFile %s
TLSRSACertificateKeyFile %s
TLSVerifyClient off
TLSRenegotiate none
TLSRequired %s
TLSOptions %s
</IfModule>
`, filepath.Join(s.Peers, "proftpd/usr/lib/proftpd"), filepath.Join(s.Dir, "tls.log"),
		o.CertFile, o.KeyFile, map[bool]string{true: "on", false: "off"}[o.Require], opts)
}

// PKI is a test certificate authority and the certificates it issued, as
// PEM files in one directory. Its keys are RSA 2048, which vsftpd 3.0.3,
// pure-ftpd 1.0.50 and proftpd 1.3.8 with OpenSSL 3 all accept.
type PKI struct {
	Dir string
	// CAFile is the CA's certificate: what the proxy (--upstream-ca)
	// and the clients (curl --cacert) trust.
	CAFile string
	// CertFile and KeyFile are the certificate MakeTestPKI issued for
	// its hosts, and its private key.
	CertFile, KeyFile string

	caCert *x509.Certificate
	caKey  *rsa.PrivateKey
}

// MakeTestPKI makes a CA and a server certificate for hosts (DNS names or
// IP literals; the first is also the subject's common name) in dir, as
// ca.pem, server.pem and server-key.pem. The certificates are valid from
// an hour ago for a week. Calling it again in another directory makes an
// unrelated CA, which is what a "wrong CA" test needs.
func MakeTestPKI(dir string, hosts ...string) (*PKI, error) {
	if len(hosts) == 0 {
		return nil, errors.New("MakeTestPKI: no hosts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "ftpproxy interop test CA " + serial.Text(16), Organization: []string{"ftpproxy interop"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(7 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	p := &PKI{Dir: dir, CAFile: filepath.Join(dir, "ca.pem"), caCert: ca, caKey: key}
	if err := writePEM(p.CAFile, "CERTIFICATE", der, 0o644); err != nil {
		return nil, err
	}
	if p.CertFile, p.KeyFile, err = p.Issue("server", hosts...); err != nil {
		return nil, err
	}
	return p, nil
}

// Issue makes a server certificate signed by the CA for hosts (DNS names
// or IP literals; the first is also the common name) and writes it and
// its key to name.pem and name-key.pem in p.Dir.
func (p *PKI) Issue(name string, hosts ...string) (certFile, keyFile string, err error) {
	if len(hosts) == 0 {
		return "", "", errors.New("Issue: no hosts")
	}
	if strings.ContainsAny(name, `/\`) || name == "" || name == "ca" {
		return "", "", fmt.Errorf("Issue: bad name %q", name)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", "", err
	}
	serial, err := newSerial()
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: hosts[0], Organization: []string{"ftpproxy interop"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		return "", "", err
	}
	certFile = filepath.Join(p.Dir, name+".pem")
	keyFile = filepath.Join(p.Dir, name+"-key.pem")
	if err := writePEM(certFile, "CERTIFICATE", der, 0o644); err != nil {
		return "", "", err
	}
	if err := writePEM(keyFile, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key), 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// newSerial returns a random 64-bit certificate serial number.
func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
}

// writePEM writes one PEM block of the given type to path.
func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

// greetingTLS is the TLS configuration of the start-up check of s: nil
// unless the server speaks implicit TLS. The check only asks whether the
// server answers, so it does not verify the certificate.
func (s *Server) greetingTLS() *tls.Config {
	if s.TLS == nil || !s.TLS.Implicit {
		return nil
	}
	return &tls.Config{InsecureSkipVerify: true}
}
