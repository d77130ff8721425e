package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"

	"github.com/rs/zerolog"

	"github.com/ftpproxy/ftpproxy/proxy"
)

// certStore holds the certificate the proxy presents to FTPS clients. It is
// read again on SIGHUP: sessions ask for it at each handshake, so a renewed
// certificate is served from then on, and nothing running is cut.
type certStore struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

func newCertStore(certFile, keyFile string) (*certStore, error) {
	cs := &certStore{certFile: certFile, keyFile: keyFile}
	if _, err := cs.load(); err != nil {
		return nil, err
	}
	return cs, nil
}

// load reads the certificate (a PEM chain) and its key, and keeps them if
// they are valid; on an error the certificate in use stays.
func (cs *certStore) load() (*x509.Certificate, error) {
	c, err := tls.LoadX509KeyPair(cs.certFile, cs.keyFile)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %s / --tls-key %s: %w", cs.certFile, cs.keyFile, err)
	}
	leaf := c.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, fmt.Errorf("--tls-cert %s: %w", cs.certFile, err)
		}
		c.Leaf = leaf
	}
	cs.cur.Store(&c)
	return leaf, nil
}

// logLoaded logs what a load found, as operators check after a renewal.
func logLoaded(log zerolog.Logger, leaf *x509.Certificate, file string) {
	names := append([]string{}, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	log.Info().Str("file", file).Str("subject", leaf.Subject.String()).Str("names", strings.Join(names, ",")).
		Time("not_after", leaf.NotAfter).Msg("TLS certificate loaded")
}

func (cs *certStore) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := cs.cur.Load()
	if c == nil {
		return nil, errors.New("no certificate loaded")
	}
	return c, nil
}

// serverConfig is the TLS configuration the proxy serves FTPS with.
func (cs *certStore) serverConfig(minVersion uint16) *tls.Config {
	return &tls.Config{GetCertificate: cs.getCertificate, MinVersion: minVersion}
}

// parseUpstreamTLS checks the flags of FTPS towards the upstream.
func (o *options) parseUpstreamTLS(mode, caFile, name string) error {
	var err error
	if o.upstreamTLS, err = proxy.ParseUpstreamTLSMode(mode); err != nil {
		return fmt.Errorf("--upstream-tls %q: want off, explicit, implicit or match", mode)
	}
	if o.upstreamTLS == proxy.UpstreamTLSMatch && o.certs == nil {
		return errors.New("--upstream-tls match needs --tls-cert: clients can only use TLS with a certificate to talk to")
	}
	if o.upstreamTLS == proxy.UpstreamTLSOff {
		// --upstream-ca and --upstream-server-name may be set ahead of
		// switching TLS on; turning verification off must mean something.
		if o.upstreamInsecure {
			return errors.New("--upstream-insecure-skip-verify needs --upstream-tls")
		}
		return nil
	}
	if name == "" {
		name, _, _ = net.SplitHostPort(o.upstream)
		// One name is verified for every server of a pool: the host
		// of the first stands for the others only if they share it.
		for _, a := range o.pool {
			if h, _, _ := net.SplitHostPort(a); h != name {
				return errors.New("--upstream-tls with a pool of several hosts needs --upstream-server-name: the name their certificates carry")
			}
		}
	}
	conf := &tls.Config{ServerName: name, MinVersion: tls.VersionTLS12, InsecureSkipVerify: o.upstreamInsecure}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return fmt.Errorf("--upstream-ca: %w", err)
		}
		conf.RootCAs = x509.NewCertPool()
		if !conf.RootCAs.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--upstream-ca %s: no PEM certificate in it", caFile)
		}
	}
	o.upstreamTLSConf = conf
	return nil
}

// parseTLSVersion parses "1.2" or "1.3".
func parseTLSVersion(s string) (uint16, error) {
	switch s {
	case "1.2":
		return tls.VersionTLS12, nil
	case "1.3":
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("--tls-min-version %q: want 1.2 or 1.3", s)
}
