package probe

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"time"
)

// expirySoon is how close to its expiry a certificate is reported.
const expirySoon = 14 * 24 * time.Hour

// feat asks for the server's extensions (RFC 2389).
func (p *prober) feat(c *ctrl) bool {
	r, err := c.cmd("FEAT")
	if err != nil {
		p.add(CheckFEAT, Fail, "FEAT got no reply: "+readFailure(err, p),
			"the control connection stalls or breaks after the greeting: a firewall or middlebox may be interfering")
		return false
	}
	if r.code != 211 {
		p.add(CheckFEAT, OK, fmt.Sprintf("FEAT is not supported (%s): the server offers no extensions", r.quoted()), "")
		return true
	}
	var features []string
	for i, l := range r.lines {
		if i == 0 || i == len(r.lines)-1 && strings.HasPrefix(l, "211") {
			continue
		}
		if f := strings.TrimSpace(l); f != "" {
			features = append(features, f)
		}
	}
	if len(features) == 0 {
		p.add(CheckFEAT, OK, "FEAT lists no features", "")
		return true
	}
	shown := features
	more := ""
	if len(shown) > 12 {
		more = fmt.Sprintf(" and %d more", len(shown)-12)
		shown = shown[:12]
	}
	p.add(CheckFEAT, OK, fmt.Sprintf("%d features: %s%s", len(features), strings.Join(shown, ", "), more), "")
	return true
}

// tlsName is the name the certificate must hold: the host connected to,
// the server's or, with Config.Through, the proxy's (a proxy that offers
// FTPS presents its own certificate).
func (p *prober) tlsName() string { return p.host }

// tlsCheck tries AUTH TLS (RFC 4217) on a second control connection, so the
// plain-FTP checks carry on undisturbed on the first, and reports the
// certificate.
func (p *prober) tlsCheck() {
	secret := !isAnonymous(p.cfg.User)
	conn, err := p.dial(p.ctl)
	if err != nil {
		p.note(ConnTLS, fmt.Sprintf("connect to %s: %s", p.ctl, describeErr(err)))
		p.add(CheckTLS, Warn, "a second control connection for the TLS check failed: "+describeErr(err),
			"the server may allow one connection per address; clients that open several (FileZilla does) will be refused")
		return
	}
	c := p.newCtrl(conn, ConnTLS)
	defer c.close()
	p.note(ConnTLS, fmt.Sprintf("connected to %s from %s", p.ctl, addrPortOf(conn.LocalAddr())))
	r, err := c.read()
	for err == nil && r.code == 120 {
		r, err = c.read()
	}
	if err != nil || r.code != 220 {
		what := "no greeting"
		if err == nil {
			what = r.quoted()
		}
		p.add(CheckTLS, Warn, "a second control connection for the TLS check got "+what,
			"the server may allow one connection per address; clients that open several (FileZilla does) will be refused")
		return
	}
	r, err = c.cmd("AUTH TLS")
	if err != nil {
		p.add(CheckTLS, Warn, "AUTH TLS got no reply: "+readFailure(err, p), "")
		return
	}
	if r.code != 234 {
		if secret {
			p.add(CheckTLS, Warn, fmt.Sprintf("FTPS is not offered (AUTH TLS: %s): the password crosses the network in clear", r.quoted()),
				"enable explicit FTPS on the server (vsftpd ssl_enable=YES, proftpd mod_tls, pure-ftpd --tls=1)")
		} else {
			p.add(CheckTLS, OK, fmt.Sprintf("FTPS is not offered (AUTH TLS: %s): plain FTP only", r.quoted()), "")
		}
		return
	}
	tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, ServerName: p.tlsName()})
	ctx, cancel := p.stepContext()
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		p.note(ConnTLS, "TLS handshake failed: "+describeErr(err))
		p.add(CheckTLS, Warn, "the server accepted AUTH TLS but the TLS handshake failed: "+describeErr(err),
			"FTPS clients cannot connect: check the server's TLS settings (certificate, key, protocol versions)")
		return
	}
	st := tc.ConnectionState()
	p.note(ConnTLS, "TLS handshake done: "+describeTLS(st))
	status, finding, fix := p.certVerdict(st, time.Now())
	p.add(CheckTLS, status, finding, fix)
}

// certVerdict judges the server's certificate: its names, its expiry, and
// whether it verifies for the host against the configured roots.
func (p *prober) certVerdict(st tls.ConnectionState, now time.Time) (Status, string, string) {
	if len(st.PeerCertificates) == 0 {
		return Warn, "the server sent no certificate", "configure a certificate on the server"
	}
	leaf := st.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range st.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, verr := leaf.Verify(x509.VerifyOptions{
		Roots: p.cfg.RootCAs, Intermediates: inter, DNSName: p.tlsName(), CurrentTime: now,
	})
	base := fmt.Sprintf("AUTH TLS works (%s)", describeTLS(st))
	switch left := leaf.NotAfter.Sub(now); {
	case left < 0:
		return Fail, base + fmt.Sprintf("; the certificate expired on %s", leaf.NotAfter.Format(time.DateOnly)),
			"renew the server's certificate: FTPS clients refuse an expired one"
	case verr != nil:
		return Warn, base + fmt.Sprintf("; it does not verify against %s for %q: %v", p.cfg.RootCAsName, p.tlsName(), verr),
			"clients will warn or refuse: use a certificate from a public CA that names the host, or, if it is your own CA, trust it (here: --ca FILE)"
	case left < expirySoon:
		return Warn, base + fmt.Sprintf("; the certificate expires in %d days", int(left.Hours()/24)),
			"renew the server's certificate"
	}
	return OK, base + fmt.Sprintf("; it verifies against %s", p.cfg.RootCAsName), ""
}

// describeTLS says what a handshake agreed on and who the certificate is
// for.
func describeTLS(st tls.ConnectionState) string {
	s := tls.VersionName(st.Version)
	if len(st.PeerCertificates) == 0 {
		return s + ", no certificate"
	}
	leaf := st.PeerCertificates[0]
	names := append([]string{}, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	s += ", certificate " + leaf.Subject.String()
	if len(names) > 0 {
		s += " for " + strings.Join(names, ", ")
	}
	if leaf.Issuer.String() == leaf.Subject.String() {
		s += ", self-signed"
	} else {
		s += ", issued by " + leaf.Issuer.String()
	}
	return s + ", expires " + leaf.NotAfter.UTC().Format(time.DateOnly)
}
