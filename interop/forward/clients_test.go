//go:build interop

package forward

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

// lftpAuthTypes are the values of lftp's ftp:proxy-auth-type (man lftp)
// and, for each, lines lftp's debug trace must hold: they show that lftp
// logged in in that style. "none" is ftp:proxy without a proxy account:
// lftp sends user@host as the user name. {host} stands for the server's
// host, {proxy} for the proxy account.
var lftpAuthTypes = []struct {
	name string
	sent []string
}{
	{"none", []string{"---> USER " + peers.User + "@{host}"}},
	{"user", []string{"---> USER {proxy}", "---> USER " + peers.User + "@{host}"}},
	{"open", []string{"---> USER {proxy}", "---> OPEN {host}", "---> USER " + peers.User}},
	{"proxy-user@host", []string{"---> USER {proxy}@{host}", "---> USER " + peers.User}},
	{"joined", []string{"---> USER " + peers.User + "@{proxy}@{host}"}},
	{"joined-acct", []string{"---> USER " + peers.User + "@{host} {proxy}", "---> ACCT"}},
}

// clientCases are the transfers of the real clients through the proxies:
// per server, lftp with and without each proxy login style, curl and
// ftplib, in passive and active mode, each uploading up.bin and
// downloading down.bin, both checked by sha256. Then downloads from a
// server the login names by a name from the proxy's hosts file.
func (s *suite) clientCases() []tcase {
	var out []tcase
	for _, srv := range []*peers.Server{s.vsftpd, s.proftpd} {
		for _, mode := range []string{"passive", "active"} {
			for _, at := range lftpAuthTypes {
				if *flagDirect && at.name != "none" {
					continue
				}
				name := fmt.Sprintf("%s/lftp/%s/%s", srv.Kind.Name, at.name, mode)
				out = append(out, tcase{name, func() (string, error) {
					return s.lftpCase(name, srv, srv.Host, at.name, at.sent, mode, true)
				}})
			}
			name := fmt.Sprintf("%s/curl/%s", srv.Kind.Name, mode)
			out = append(out, tcase{name, func() (string, error) { return s.curlCase(name, srv, mode) }})
			name2 := fmt.Sprintf("%s/ftplib/%s", srv.Kind.Name, mode)
			out = append(out, tcase{name2, func() (string, error) { return s.ftplibCase(name2, srv, srv.Host, mode, true) }})
		}
	}
	if *flagDirect {
		return out
	}
	// By name: the proxy resolves it with its namespace's hosts file;
	// the client never does.
	out = append(out,
		tcase{"vsftpd/ftplib/name-from-hosts-file/passive", func() (string, error) {
			return s.ftplibCase("vsftpd/ftplib/name/passive", s.vsftpd, vsftpdName, "passive", false)
		}},
		tcase{"vsftpd/lftp/user/name-from-hosts-file/active", func() (string, error) {
			return s.lftpCase("vsftpd/lftp/user/name/active", s.vsftpd, vsftpdName, "user", lftpAuthTypes[1].sent, "active", false)
		}},
	)
	return out
}

// safe turns a case name into a file name.
func safe(name string) string {
	return strings.NewReplacer("/", "-", " ", "_", ":", "_", "@", "_").Replace(name)
}

// runResult is one client program run: its combined output and exit error.
type runResult struct {
	argv []string
	out  string
	err  error
}

// failure describes a run for a FAIL message.
func (r runResult) failure(what string) error {
	return fmt.Errorf("%s\n$ %s\nexit: %v\n%s", what, peers.ShellQuote(r.argv), r.err, peers.Tail(r.out, 2500))
}

// run runs argv in the namespace role with a bounded time; stdout and
// stderr together (curl -v writes its trace to stderr).
func (s *suite) run(role string, argv ...string) runResult {
	r := runResult{argv: argv}
	s.topo.In(role, func() error {
		ctx, cancel := context.WithTimeout(s.ctx, opLimit)
		defer cancel()
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.WaitDelay = 3 * time.Second
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		r.err = cmd.Run()
		if ctx.Err() == context.DeadlineExceeded {
			r.err = fmt.Errorf("timed out after %s (%v)", opLimit, r.err)
		}
		r.out = out.String()
		return nil
	})
	return r
}

// where returns the namespace, source address, host and port a client
// uses: through the proxy (open or auth) from the client namespace, or
// with -direct at the server from the proxy's namespace.
func (s *suite) where(px *proxyProc, srv *peers.Server) (role, source, host string, port int) {
	if *flagDirect {
		return nsPxy, pxySrvIP, srv.Host, srv.Port
	}
	h, p, _ := net.SplitHostPort(px.addr)
	port, _ = strconv.Atoi(p)
	return nsCli, cliIn, h, port
}

// checkUpload compares what arrived on the server with up.bin and removes it.
func (s *suite) checkUpload(srv *peers.Server, remote string) error {
	if err := peers.SameContent(srv.Path(remote), s.up.Size, s.up.Sum); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	os.Remove(srv.Path(remote))
	return nil
}

// checkDownload compares what arrived locally with down.bin and removes it.
func (s *suite) checkDownload(local string) error {
	if err := peers.SameContent(local, s.down.Size, s.down.Sum); err != nil {
		return fmt.Errorf("download: %w", err)
	}
	os.Remove(local)
	return nil
}

// lftpCase runs one lftp session through a proxy in the login style auth:
// with upload, put up.bin then get down.bin; without, the get alone. The
// debug trace must show the style's commands.
func (s *suite) lftpCase(name string, srv *peers.Server, host, auth string, sent []string, mode string, upload bool) (string, error) {
	px := s.auth
	proxyURL := "ftp://" + proxyUser + ":" + proxyPass + "@"
	if auth == "none" {
		px, proxyURL = s.open, "ftp://"
	}
	role, source, phost, pport := s.where(px, srv)
	var off int64
	if !*flagDirect {
		off = px.offset()
	}
	passive := "on"
	if mode == "active" {
		passive = "off"
	}
	trace := filepath.Join(s.work, safe(name)+".lftp-trace")
	remote := "up-" + safe(name) + ".bin"
	local := filepath.Join(s.work, safe(name)+".down")
	cmds := []string{
		"debug -o " + trace + " 5",
		"set net:socket-bind-ipv4 " + source,
		"set ftp:passive-mode " + passive,
		"set ftp:prefer-epsv no",
		"set net:max-retries 1", // a retry must not hide a broken first attempt
		"set net:reconnect-interval-base 1",
		"set net:timeout 20",
		"set xfer:clobber on",
		"set cmd:fail-exit yes",
	}
	if *flagDirect {
		cmds = append(cmds, fmt.Sprintf("open -u %s,%s -p %d %s", peers.User, peers.Password, srv.Port, srv.Host))
	} else {
		cmds = append(cmds,
			"set ftp:proxy "+proxyURL+net.JoinHostPort(phost, strconv.Itoa(pport)),
			"set ftp:proxy-auth-type "+lftpAuthType(auth),
			fmt.Sprintf("open -u %s,%s %s", peers.User, peers.Password, host))
	}
	if upload {
		cmds = append(cmds, "put "+s.up.Path+" -o "+remote)
	}
	cmds = append(cmds, "get down.bin -o "+local)
	r := s.run(role, "lftp", "-c", strings.Join(cmds, "; "))
	traceText, _ := os.ReadFile(trace)
	fail := func(err error) (string, error) {
		err = fmt.Errorf("%w\nlftp trace %s (tail):\n%s", err, trace, peers.Tail(string(traceText), 2000))
		if *flagDirect {
			return "", err
		}
		return "", px.withLog(err, off)
	}
	if r.err != nil {
		return fail(r.failure("lftp failed"))
	}
	if upload {
		if err := s.checkUpload(srv, remote); err != nil {
			return fail(err)
		}
	}
	if err := s.checkDownload(local); err != nil {
		return fail(err)
	}
	if !*flagDirect {
		for _, l := range sent {
			want := strings.NewReplacer("{host}", host, "{proxy}", proxyUser).Replace(l)
			if !bytes.Contains(traceText, []byte(want)) {
				return fail(fmt.Errorf("lftp's trace has no %q: it did not log in in the %q style", want, auth))
			}
		}
	}
	if !*flagKeep {
		os.Remove(trace)
	}
	return "", nil
}

// lftpAuthType is the ftp:proxy-auth-type setting for a style: "none"
// keeps lftp's default, "user", which without a proxy account in
// ftp:proxy sends user@host straight away.
func lftpAuthType(auth string) string {
	if auth == "none" {
		return "user"
	}
	return auth
}

// curlCase downloads with the user name in the URL (user%40host) and
// uploads with -u user@host:password, in passive mode (curl's EPSV) or
// active mode (-P -, EPRT from the control connection's address).
func (s *suite) curlCase(name string, srv *peers.Server, mode string) (string, error) {
	role, source, phost, pport := s.where(s.open, srv)
	var off int64
	if !*flagDirect {
		off = s.open.offset()
	}
	login := peers.User + "@" + srv.Host
	if *flagDirect {
		login = peers.User
	}
	base := []string{"curl", "-sS", "-v", "--max-time", "50", "--connect-timeout", "10", "--interface", source}
	if mode == "active" {
		base = append(base, "-P", "-")
	} else {
		base = append(base, "--ftp-pasv")
	}
	proxyAddr := net.JoinHostPort(phost, strconv.Itoa(pport))
	local := filepath.Join(s.work, safe(name)+".down")
	remote := "up-" + safe(name) + ".bin"
	u := url.URL{Scheme: "ftp", User: url.UserPassword(login, peers.Password), Host: proxyAddr, Path: "/down.bin"}
	get := append(append([]string{}, base...), "-o", local, u.String())
	put := append(append([]string{}, base...), "-u", login+":"+peers.Password, "-T", s.up.Path, "ftp://"+proxyAddr+"/"+remote)
	fail := func(err error) (string, error) {
		if *flagDirect {
			return "", err
		}
		return "", s.open.withLog(err, off)
	}
	if r := s.run(role, get...); r.err != nil {
		return fail(r.failure("download failed"))
	} else if err := s.checkDownload(local); err != nil {
		return fail(r.failure(err.Error()))
	} else if !*flagDirect && !strings.Contains(r.out, "> USER "+login) {
		return fail(r.failure("curl did not send USER " + login))
	}
	if r := s.run(role, put...); r.err != nil {
		return fail(r.failure("upload failed"))
	} else if err := s.checkUpload(srv, remote); err != nil {
		return fail(r.failure(err.Error()))
	}
	return "", nil
}

// ftplibCase runs the ftplib script with login("user@host", password):
// PASV in passive mode, PORT in active mode; with upload, a STOR session
// before the RETR one.
func (s *suite) ftplibCase(name string, srv *peers.Server, host, mode string, upload bool) (string, error) {
	role, source, phost, pport := s.where(s.open, srv)
	var off int64
	login := peers.User + "@" + host
	if *flagDirect {
		login = peers.User
	} else {
		off = s.open.offset()
	}
	fmode := map[string]string{"passive": "pasv", "active": "port"}[mode]
	argv := func(op string, args ...string) []string {
		return append([]string{"python3", s.script, "--host", phost, "--port", strconv.Itoa(pport),
			"--user", login, "--password", peers.Password, "--source", source, "--mode", fmode, "--timeout", "30", op}, args...)
	}
	fail := func(err error) (string, error) {
		if *flagDirect {
			return "", err
		}
		return "", s.open.withLog(err, off)
	}
	if upload {
		remote := "up-" + safe(name) + ".bin"
		if r := s.run(role, argv("put", s.up.Path, remote)...); r.err != nil {
			return fail(r.failure("upload failed"))
		}
		if err := s.checkUpload(srv, remote); err != nil {
			return fail(err)
		}
	}
	local := filepath.Join(s.work, safe(name)+".down")
	if r := s.run(role, argv("get", "down.bin", local)...); r.err != nil {
		return fail(r.failure("download failed"))
	}
	if err := s.checkDownload(local); err != nil {
		return fail(err)
	}
	return "", nil
}
