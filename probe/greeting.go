package probe

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ftpproxy/ftpproxy/rewrite"
)

// greeting reads the server's first reply and tells an FTP server from
// something else on the port.
func (p *prober) greeting(c *ctrl) bool {
	c.conn.SetReadDeadline(p.stepDeadline())
	begin := time.Now()
	first, err := c.br.Peek(1)
	if err != nil {
		c.broken = true
		switch {
		case isTimeout(err):
			waited := time.Since(begin).Round(time.Millisecond)
			p.note(c.name, fmt.Sprintf("nothing received within %s", waited))
			p.silentPort(waited)
		case errors.Is(err, io.EOF):
			p.note(c.name, "closed by the server")
			p.add(CheckGreeting, Fail, fmt.Sprintf("%s closed the connection without a greeting", p.hostLabel()),
				"the server, or a firewall in front of it, turns your address away (an access list, tcp_wrappers, a connection limit)")
		default:
			p.note(c.name, "read failed: "+describeErr(err))
			p.add(CheckGreeting, Fail, fmt.Sprintf("the connection failed before a greeting: %s", describeErr(err)),
				"a firewall or the server reset the connection: try again, or ask the server's admin")
		}
		return false
	}
	if first[0] < '1' || first[0] > '5' {
		c.broken = true
		b, _ := c.br.Peek(min(c.br.Buffered(), 256))
		p.recv(c.name, quoteBytes(b))
		st, finding, fix := notFTP(b, p.port)
		p.add(CheckGreeting, st, finding, fix)
		return false
	}
	r, err := c.read()
	if err != nil {
		p.greetingBroken(err)
		return false
	}
	busy := time.Duration(0)
	if r.code == 120 {
		// RFC 959 section 5.4: 120 "Service ready in nnn minutes", then
		// a 220 when it is.
		r, err = c.read()
		if err != nil {
			if isTimeout(err) {
				p.add(CheckGreeting, Fail, fmt.Sprintf("the server said 120 (busy) and no 220 followed within %s", p.cfg.Timeout),
					"the server is overloaded or starting up: try again later")
				return false
			}
			p.greetingBroken(err)
			return false
		}
		busy = max(time.Since(begin), time.Millisecond)
	}
	st, finding, fix := greetingVerdict(r, busy, p.cfg.Through != "", p.port)
	p.add(CheckGreeting, st, finding, fix)
	if st == Fail {
		c.broken = true
	}
	return st != Fail
}

// greetingBroken reports a greeting that could not be read as a reply.
func (p *prober) greetingBroken(err error) {
	switch {
	case errors.Is(err, rewrite.ErrBadReply):
		p.add(CheckGreeting, Fail, fmt.Sprintf("port %d answered with a line that is not an FTP reply", p.port),
			"this is not an FTP server: check the port (FTP is usually 21)")
	case isTimeout(err):
		p.add(CheckGreeting, Fail, fmt.Sprintf("the greeting did not end within %s", p.cfg.Timeout),
			"the server stalls in its greeting: ask its admin")
	default:
		p.add(CheckGreeting, Fail, "the greeting could not be read: "+describeErr(err),
			"the connection broke: try again, or ask the server's admin")
	}
}

// greetingVerdict judges the server's greeting; busy is how long a 120
// kept it, 0 if none came.
func greetingVerdict(r reply, busy time.Duration, through bool, port uint16) (Status, string, string) {
	switch r.code {
	case 220:
		if strings.Contains(strings.ToUpper(r.text()), "SMTP") {
			return Fail, fmt.Sprintf("a mail server answers on port %d: %s", port, r.quoted()),
				"this is SMTP, not FTP: check the host and port"
		}
		if busy > 0 {
			return OK, fmt.Sprintf("120 (busy), then after %s: %s", busy.Round(time.Millisecond), r.text()), ""
		}
		return OK, r.text(), ""
	case 421:
		fix := "the server is full, or does not take connections from your address (a connection limit, an access list, a ban): try later, or ask its admin"
		if through {
			fix = "the proxy refused the session or could not reach the server behind it: its log says which"
		}
		return Fail, "the server refuses the session: " + r.quoted(), fix
	}
	return Fail, fmt.Sprintf("unexpected greeting %s: an FTP server greets with 220", r.quoted()),
		"check that this is the FTP port, or ask the server's admin"
}

// notFTP judges a port whose first bytes b are not an FTP reply.
func notFTP(b []byte, port uint16) (Status, string, string) {
	for _, k := range []struct{ prefix, what, fix string }{
		{"SSH-", "an SSH server", "use SFTP on this port (sftp, or sftp:// in FileZilla and WinSCP), or find the server's FTP port, usually 21"},
		{"+OK", "a POP3 mail server", "this is not FTP: check the host and port"},
		{"* OK", "an IMAP mail server", "this is not FTP: check the host and port"},
		{"HTTP/", "a web server", "this is not FTP: check the host and port"},
	} {
		if bytes.HasPrefix(b, []byte(k.prefix)) {
			return Fail, fmt.Sprintf("%s answers on port %d, not FTP: %s", k.what, port, quoteBytes(firstLine(b))), k.fix
		}
	}
	if len(b) >= 2 && (b[0] == 0x15 || b[0] == 0x16) && b[1] == 3 {
		return Fail, fmt.Sprintf("port %d sends TLS records, not an FTP greeting: an implicit-FTPS port", port),
			fmt.Sprintf("connect with implicit FTPS (ftps://HOST:%d/ in curl and lftp, \"Require implicit FTP over TLS\" in FileZilla), or probe the server's plain FTP port, usually 21", port)
	}
	return Fail, fmt.Sprintf("port %d sent %s, which is not an FTP greeting", port, quoteBytes(firstLine(b))),
		"this is not an FTP server: check the port (FTP is usually 21)"
}

// silentPort judges a port that accepted a connection and said nothing:
// an implicit-FTPS port waits for the client's TLS handshake, so one is
// tried on a new connection.
func (p *prober) silentPort(waited time.Duration) {
	silent := fmt.Sprintf("port %d accepted the connection but sent no greeting within %s", p.port, waited)
	conn, err := p.dial(p.ctl)
	if err != nil {
		p.note(ConnTLS, fmt.Sprintf("connect to %s: %s", p.ctl, describeErr(err)))
		p.add(CheckGreeting, Fail, silent,
			"an FTP server greets at once with 220; an implicit-FTPS port (usually 990) stays silent until a TLS handshake")
		return
	}
	defer conn.Close()
	p.note(ConnTLS, fmt.Sprintf("connected to %s; trying a TLS handshake (implicit FTPS)", p.ctl))
	tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, ServerName: p.tlsName()})
	ctx, cancel := p.stepContext()
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		p.note(ConnTLS, "TLS handshake failed: "+describeErr(err))
		p.add(CheckGreeting, Fail, silent+", and no TLS handshake either",
			"this is not an FTP server, or one that stalls (a slow reverse lookup of your address can do that): an FTP server greets at once with 220, an implicit-FTPS port (usually 990) answers a TLS handshake")
		return
	}
	st := tc.ConnectionState()
	p.note(ConnTLS, "TLS handshake done: "+describeTLS(st))
	p.add(CheckGreeting, Fail, silent+fmt.Sprintf(", and answers a TLS handshake (%s): an implicit-FTPS port", describeTLS(st)),
		fmt.Sprintf("connect with implicit FTPS (ftps://%s/ in curl and lftp, \"Require implicit FTP over TLS\" in FileZilla), or probe the server's plain FTP port, usually 21", p.ctl))
}

// firstLine returns b up to its first line ending.
func firstLine(b []byte) []byte {
	if i := bytes.IndexAny(b, "\r\n"); i >= 0 {
		return b[:i]
	}
	return b
}

// quoteBytes quotes at most nonFTPQuoteLength bytes of b.
func quoteBytes(b []byte) string {
	if len(b) > nonFTPQuoteLength {
		return fmt.Sprintf("%q...", b[:nonFTPQuoteLength])
	}
	return fmt.Sprintf("%q", b)
}
