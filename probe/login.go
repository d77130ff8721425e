package probe

import (
	"fmt"
	"strings"
)

// login sends USER and, when asked, PASS.
func (p *prober) login(c *ctrl) bool {
	r, err := c.cmd("USER " + p.cfg.User)
	asked := false
	if err == nil && r.code == 331 {
		asked = true
		r, err = c.cmd("PASS " + p.cfg.Password)
	}
	if err != nil {
		p.add(CheckLogin, Fail, "the login got no reply: "+readFailure(err, p),
			"the control connection stalls or breaks: a firewall or middlebox may be interfering")
		return false
	}
	st, finding, fix := loginVerdict(p.cfg.User, r, asked)
	p.add(CheckLogin, st, finding, fix)
	return st == OK
}

// loginVerdict judges the final reply to USER (asked false) or PASS.
func loginVerdict(user string, r reply, asked bool) (Status, string, string) {
	switch r.code {
	case 230, 202:
		if !asked {
			return OK, fmt.Sprintf("logged in as %s without a password: %s", user, r.quoted()), ""
		}
		return OK, fmt.Sprintf("logged in as %s: %s", user, r.quoted()), ""
	case 332:
		return Fail, fmt.Sprintf("the server wants an account (ACCT) for %s, which the probe does not send: %s", user, r.quoted()),
			"log in with a client that sends ACCT"
	}
	finding := fmt.Sprintf("the login as %s was refused: %s", user, r.quoted())
	low := strings.ToLower(r.text())
	switch {
	case strings.Contains(low, "tls") || strings.Contains(low, "ssl") || strings.Contains(low, "encrypt") || strings.Contains(low, "secure"):
		return Fail, finding, "the server wants FTPS (AUTH TLS) before a login: connect with explicit FTPS; the probe's data checks need a plain-FTP login"
	case isAnonymous(user):
		return Fail, finding, "the server does not allow anonymous logins: give --user NAME and the password in --password-file FILE or FTPPROXY_PROBE_PASSWORD"
	}
	return Fail, finding, "check the user name and the password (repeated failures may get your address banned)"
}
