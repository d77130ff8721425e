package peers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestServerConfigTLS(t *testing.T) {
	o := TLSOptions{CertFile: "/pki/server.pem", KeyFile: "/pki/server-key.pem", Require: true, UploadCloseNotify: true}

	vs := testServer(Vsftpd, TLS(o))
	conf := vsftpdConfig(vs, "/work/x/empty", "svc")
	for _, line := range []string{"ssl_enable=YES", "rsa_cert_file=/pki/server.pem", "rsa_private_key_file=/pki/server-key.pem",
		"require_ssl_reuse=YES", "force_local_logins_ssl=YES", "force_local_data_ssl=YES", "implicit_ssl=NO",
		"strict_ssl_read_eof=YES", "ssl_sslv3=NO", "log_ftp_protocol=YES", "pasv_min_port=22000"} {
		if !strings.Contains(conf, "\n"+line+"\n") {
			t.Errorf("vsftpd.conf lacks %q:\n%s", line, conf)
		}
	}
	vs = testServer(Vsftpd, TLS(TLSOptions{CertFile: "/c", KeyFile: "/k", Implicit: true}))
	conf = vsftpdConfig(vs, "/e", "svc")
	for _, line := range []string{"implicit_ssl=YES", "force_local_logins_ssl=NO", "force_local_data_ssl=NO", "strict_ssl_read_eof=NO"} {
		if !strings.Contains(conf, "\n"+line+"\n") {
			t.Errorf("implicit vsftpd.conf lacks %q:\n%s", line, conf)
		}
	}
	if conf := vsftpdConfig(testServer(Vsftpd), "/e", "svc"); strings.Contains(conf, "ssl_") {
		t.Errorf("vsftpd.conf without TLS mentions ssl:\n%s", conf)
	}

	pf := testServer(PureFTPd, TLS(o))
	args := pureFTPdArgs(pf, "/work/x/pureftpd.pdb")
	if i := slices.Index(args, "-Y"); i < 0 || args[i+1] != "3" {
		t.Errorf("pure-ftpd arguments %q: want -Y 3", args)
	}
	if i := slices.Index(args, "-2"); i < 0 || args[i+1] != "/pki/server.pem,/pki/server-key.pem" {
		t.Errorf("pure-ftpd arguments %q: want -2 cert,key", args)
	}
	pf = testServer(PureFTPd, TLS(TLSOptions{CertFile: "/c", KeyFile: "/k"}))
	if args := pureFTPdArgs(pf, "/p"); args[slices.Index(args, "-Y")+1] != "1" {
		t.Errorf("pure-ftpd arguments %q: want -Y 1 without Require", args)
	}
	if args := pureFTPdArgs(testServer(PureFTPd), "/p"); slices.Contains(args, "-Y") || slices.Contains(args, "-2") {
		t.Errorf("pure-ftpd arguments without TLS %q", args)
	}

	pr := testServer(ProFTPd, TLS(TLSOptions{CertFile: "/c", KeyFile: "/k", Require: true, Implicit: true}))
	conf = proftpdConfig(pr, "/work/x/ftpd.passwd", "/work/x/ftpd.group")
	for _, line := range []string{"ModulePath /peers/proftpd/usr/lib/proftpd", "LoadModule mod_tls.c", "TLSEngine on", "TLSRequired on",
		"TLSRSACertificateFile /c", "TLSRSACertificateKeyFile /k", "TLSOptions EnableDiags UseImplicitSSL", "TLSLog /work/x/tls.log",
		"PassivePorts 22200 22299"} {
		if !strings.Contains(conf, "\n"+line+"\n") {
			t.Errorf("proftpd.conf lacks %q:\n%s", line, conf)
		}
	}
	if strings.Contains(conf, "NoSessionReuseRequired") {
		t.Errorf("proftpd.conf lets data connections skip session reuse:\n%s", conf)
	}
	if conf := proftpdConfig(testServer(ProFTPd), "/p", "/g"); strings.Contains(conf, "TLS") {
		t.Errorf("proftpd.conf without TLS mentions TLS:\n%s", conf)
	}
}

func TestStartServerRefusesTLS(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cert := filepath.Join(dir, "c.pem")
	if err := os.WriteFile(cert, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		kind Kind
		o    TLSOptions
		want string
	}{
		{PureFTPd, TLSOptions{CertFile: cert, KeyFile: cert, Implicit: true}, "no implicit TLS"},
		{Vsftpd, TLSOptions{CertFile: cert}, "both needed"},
		{ProFTPd, TLSOptions{CertFile: "c.pem", KeyFile: cert}, "absolute path"},
		{Vsftpd, TLSOptions{CertFile: cert, KeyFile: filepath.Join(dir, "missing.pem")}, "missing.pem"},
	} {
		s, err := StartServer(context.Background(), c.kind, "/nonexistent", dir, "127.0.0.1", 1, TLS(c.o))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			if s != nil {
				s.Stop()
			}
			t.Errorf("StartServer(%s, %+v): %v, want an error with %q", c.kind.Name, c.o, err, c.want)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("refused starts left %d entries in the work directory", len(ents)-1)
	}
}

func TestMakeTestPKI(t *testing.T) {
	dir := t.TempDir()
	p, err := MakeTestPKI(dir, "ftps.interop.test", "127.0.0.3")
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(p.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.pem holds no certificate")
	}
	leaf := loadLeaf(t, p.CertFile, p.KeyFile)
	for _, name := range []string{"ftps.interop.test", "127.0.0.3"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: name}); err != nil {
			t.Errorf("server certificate for %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "127.0.0.2"}); err == nil {
		t.Error("server certificate verifies for a host it was not issued for")
	}
	if leaf.Subject.CommonName != "ftps.interop.test" {
		t.Errorf("common name %q", leaf.Subject.CommonName)
	}
	if fi, err := os.Stat(p.KeyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: %v, %v", fi.Mode(), err)
	}

	cert, key, err := p.Issue("proxy", "127.0.0.2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := loadLeaf(t, cert, key).Verify(x509.VerifyOptions{Roots: roots, DNSName: "127.0.0.2"}); err != nil {
		t.Errorf("issued certificate: %v", err)
	}

	other, err := MakeTestPKI(filepath.Join(dir, "other"), "ftps.interop.test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := loadLeaf(t, other.CertFile, other.KeyFile).Verify(x509.VerifyOptions{Roots: roots, DNSName: "ftps.interop.test"}); err == nil {
		t.Error("a certificate of another test CA verifies against this one")
	}
	if _, err := MakeTestPKI(filepath.Join(dir, "none")); err == nil {
		t.Error("MakeTestPKI without hosts")
	}
	if _, _, err := p.Issue("../x", "h"); err == nil {
		t.Error("Issue accepted a name with a slash")
	}
}

// loadLeaf loads a certificate and key pair as a TLS server would, and
// returns the certificate; the key must be RSA, in PKCS#1 PEM.
func loadLeaf(t *testing.T, certFile, keyFile string) *x509.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := os.ReadFile(keyFile)
	if b, _ := pem.Decode(keyPEM); b == nil || b.Type != "RSA PRIVATE KEY" {
		t.Fatalf("%s: want an RSA PRIVATE KEY block", keyFile)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}
