//go:build interop

package interop

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// target is where a client connects and how it moves data.
type target struct {
	host string // server or proxy address the client dials
	port int
	src  string // local address the client binds
	mode string // client-specific data-connection mode
}

// ftpClient drives one FTP client program. Paths are relative to the
// user's login directory. Every call is one client invocation, one FTP
// session.
type ftpClient interface {
	name() string
	modes() []string
	// has reports optional operations: "appe", "mlsd", "mirror".
	has(op string) bool
	pwd(ctx context.Context, t target) (string, error)
	cwd(ctx context.Context, t target, dir string) (string, error)
	list(ctx context.Context, t target, dir string) (string, error)
	nlst(ctx context.Context, t target, dir string) (string, error)
	mlsd(ctx context.Context, t target, dir string) (string, error)
	// get downloads remote into local; with offset > 0 it resumes a
	// partial local file that is offset bytes long.
	get(ctx context.Context, t target, remote, local string, offset int64) error
	// put uploads local to remote; with offset > 0 it resumes a partial
	// remote file that is offset bytes long.
	put(ctx context.Context, t target, local, remote string, offset int64) error
	appe(ctx context.Context, t target, local, remote string) error
	mkd(ctx context.Context, t target, dir string) error
	rmd(ctx context.Context, t target, dir string) error
	dele(ctx context.Context, t target, file string) error
	rename(ctx context.Context, t target, from, to string) error
	size(ctx context.Context, t target, file string) (int64, error)
	mdtm(ctx context.Context, t target, file string) (time.Time, error)
}

// runTool runs a client program with a bounded time and returns its stdout;
// a failure carries the exit status and the tail of stderr and stdout.
func runTool(ctx context.Context, limit time.Duration, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = 5 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("timed out after %s", limit)
		}
		return out.String(), fmt.Errorf("%s: %v\nstderr: %s\nstdout: %s", shellQuote(argv), err, tail(errb.String(), 1500), tail(out.String(), 500))
	}
	return out.String(), nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func shellQuote(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\"'$;|&()<>*?") {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		} else {
			q[i] = a
		}
	}
	return strings.Join(q, " ")
}

const opTimeout = 3 * time.Minute

// --- curl -------------------------------------------------------------------

// curlClient drives curl. Modes: epsv (curl's default), pasv
// (--disable-epsv), port (-P with --disable-eprt), eprt (-P).
type curlClient struct{}

func (curlClient) name() string       { return "curl" }
func (curlClient) modes() []string    { return []string{"epsv", "pasv", "port", "eprt"} }
func (curlClient) has(op string) bool { return op == "appe" }

func (curlClient) url(t target, p string) string {
	return "ftp://" + net.JoinHostPort(t.host, strconv.Itoa(t.port)) + "/" + p
}

func (c curlClient) args(t target, extra ...string) []string {
	a := []string{"curl", "-sS", "--max-time", "170", "--connect-timeout", "10",
		"--interface", t.src, "--user", ftpUser + ":" + ftpPass, "--ftp-method", "multicwd"}
	switch t.mode {
	case "epsv":
		a = append(a, "--ftp-pasv")
	case "pasv":
		a = append(a, "--ftp-pasv", "--disable-epsv")
	case "port":
		a = append(a, "-P", t.src, "--disable-eprt")
	case "eprt":
		a = append(a, "-P", t.src)
	}
	return append(a, extra...)
}

func (c curlClient) pwd(ctx context.Context, t target) (string, error) {
	return c.cwd(ctx, t, "")
}

var curlPWD = regexp.MustCompile(`(?m)^< 257 "([^"]*)"`)

// cwd lists dir with -v and reports the directory the server printed for
// the PWD curl sends after login; the CWD shows as a successful listing.
func (c curlClient) cwd(ctx context.Context, t target, dir string) (string, error) {
	p := dir
	if p != "" {
		p += "/"
	}
	argv := c.args(t, "-v", "-o", "/dev/null", c.url(t, p))
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s: %v\n%s", shellQuote(argv), err, tail(string(out), 1500))
	}
	m := curlPWD.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("no PWD reply in curl's trace:\n%s", tail(string(out), 1500))
	}
	home := string(m[1])
	if dir == "" {
		return home, nil
	}
	if !bytes.Contains(out, []byte("> CWD "+dir)) {
		return "", fmt.Errorf("curl sent no CWD %s", dir)
	}
	return strings.TrimSuffix(home, "/") + "/" + dir, nil
}

func (c curlClient) list(ctx context.Context, t target, dir string) (string, error) {
	return runTool(ctx, opTimeout, c.args(t, c.url(t, dir+"/"))...)
}

func (c curlClient) nlst(ctx context.Context, t target, dir string) (string, error) {
	return runTool(ctx, opTimeout, c.args(t, "--list-only", c.url(t, dir+"/"))...)
}

func (curlClient) mlsd(context.Context, target, string) (string, error) {
	return "", fmt.Errorf("curl has no MLSD")
}

func (c curlClient) get(ctx context.Context, t target, remote, local string, offset int64) error {
	extra := []string{"-o", local}
	if offset > 0 {
		extra = append(extra, "-C", strconv.FormatInt(offset, 10))
	}
	_, err := runTool(ctx, opTimeout, c.args(t, append(extra, c.url(t, remote))...)...)
	return err
}

func (c curlClient) put(ctx context.Context, t target, local, remote string, offset int64) error {
	extra := []string{"-T", local}
	if offset > 0 {
		extra = append(extra, "-C", strconv.FormatInt(offset, 10))
	}
	_, err := runTool(ctx, opTimeout, c.args(t, append(extra, c.url(t, remote))...)...)
	return err
}

func (c curlClient) appe(ctx context.Context, t target, local, remote string) error {
	_, err := runTool(ctx, opTimeout, c.args(t, "--append", "-T", local, c.url(t, remote))...)
	return err
}

// quote sends raw commands with -Q and --head, so that no transfer follows.
func (c curlClient) quote(ctx context.Context, t target, cmds ...string) error {
	var extra []string
	for _, q := range cmds {
		extra = append(extra, "-Q", q)
	}
	extra = append(extra, "--head", "-o", "/dev/null", c.url(t, ""))
	_, err := runTool(ctx, opTimeout, c.args(t, extra...)...)
	return err
}

func (c curlClient) mkd(ctx context.Context, t target, dir string) error {
	return c.quote(ctx, t, "MKD "+dir)
}
func (c curlClient) rmd(ctx context.Context, t target, dir string) error {
	return c.quote(ctx, t, "RMD "+dir)
}
func (c curlClient) dele(ctx context.Context, t target, file string) error {
	return c.quote(ctx, t, "DELE "+file)
}
func (c curlClient) rename(ctx context.Context, t target, from, to string) error {
	return c.quote(ctx, t, "RNFR "+from, "RNTO "+to)
}

// head runs curl --head on a file: curl sends MDTM and SIZE and prints
// them as Last-Modified and Content-Length.
func (c curlClient) head(ctx context.Context, t target, file string) (string, error) {
	return runTool(ctx, opTimeout, c.args(t, "--head", c.url(t, file))...)
}

var curlLength = regexp.MustCompile(`(?mi)^Content-Length: (\d+)`)
var curlModified = regexp.MustCompile(`(?mi)^Last-Modified: (.+?)\r?$`)

func (c curlClient) size(ctx context.Context, t target, file string) (int64, error) {
	out, err := c.head(ctx, t, file)
	if err != nil {
		return 0, err
	}
	m := curlLength.FindStringSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no Content-Length in %q", out)
	}
	return strconv.ParseInt(m[1], 10, 64)
}

func (c curlClient) mdtm(ctx context.Context, t target, file string) (time.Time, error) {
	out, err := c.head(ctx, t, file)
	if err != nil {
		return time.Time{}, err
	}
	m := curlModified.FindStringSubmatch(out)
	if m == nil {
		return time.Time{}, fmt.Errorf("no Last-Modified in %q", out)
	}
	return time.Parse(time.RFC1123, m[1])
}

// --- lftp -------------------------------------------------------------------

// lftpClient drives lftp. Modes: passive (PASV) and active (PORT). TLS is
// left at lftp's defaults: lftp offers AUTH TLS and must carry on in the
// clear when the server or the proxy refuses it.
type lftpClient struct{}

func (lftpClient) name() string       { return "lftp" }
func (lftpClient) modes() []string    { return []string{"passive", "active"} }
func (lftpClient) has(op string) bool { return op == "mlsd" || op == "mirror" }

func (lftpClient) script(t target, cmds ...string) []string {
	passive := "on"
	if t.mode == "active" {
		passive = "off"
	}
	bind := "net:socket-bind-ipv4"
	if isIPv6(t.src) {
		bind = "net:socket-bind-ipv6"
	}
	pre := []string{
		"set " + bind + " " + t.src,
		"set ftp:passive-mode " + passive,
		"set ftp:prefer-epsv no",
		"set net:max-retries 2",
		"set net:reconnect-interval-base 1",
		"set net:timeout 30",
		"set xfer:clobber on",
		"set cmd:fail-exit yes",
		"set ftp:use-mlsd yes",
		fmt.Sprintf("open -u %s,%s -p %d %s", ftpUser, ftpPass, t.port, t.host),
	}
	return []string{"lftp", "-c", strings.Join(append(pre, cmds...), "; ")}
}

func (l lftpClient) run(ctx context.Context, t target, cmds ...string) (string, error) {
	return runTool(ctx, opTimeout, l.script(t, cmds...)...)
}

var quoted257 = regexp.MustCompile(`257 "([^"]*)"`)

func (l lftpClient) pwd(ctx context.Context, t target) (string, error) {
	return l.cwd(ctx, t, "")
}

func (l lftpClient) cwd(ctx context.Context, t target, dir string) (string, error) {
	cmds := []string{}
	if dir != "" {
		cmds = append(cmds, "cd "+dir)
	}
	out, err := l.run(ctx, t, append(cmds, "quote PWD")...)
	if err != nil {
		return "", err
	}
	m := quoted257.FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("no 257 reply in %q", out)
	}
	return m[1], nil
}

func (l lftpClient) list(ctx context.Context, t target, dir string) (string, error) {
	return l.run(ctx, t, "ls "+dir)
}
func (l lftpClient) nlst(ctx context.Context, t target, dir string) (string, error) {
	return l.run(ctx, t, "nlist "+dir)
}

// mlsd lists with cls, which lftp serves with MLSD when the server's FEAT
// advertises it (ftp:use-mlsd).
func (l lftpClient) mlsd(ctx context.Context, t target, dir string) (string, error) {
	return l.run(ctx, t, "cls -1 "+dir+"/")
}

func (l lftpClient) get(ctx context.Context, t target, remote, local string, offset int64) error {
	c := "get "
	if offset > 0 {
		c = "get -c "
	}
	_, err := l.run(ctx, t, c+remote+" -o "+local)
	return err
}

func (l lftpClient) put(ctx context.Context, t target, local, remote string, offset int64) error {
	c := "put "
	if offset > 0 {
		c = "put -c "
	}
	_, err := l.run(ctx, t, c+local+" -o "+remote)
	return err
}

func (lftpClient) appe(context.Context, target, string, string) error {
	return fmt.Errorf("lftp has no APPE command")
}

func (l lftpClient) mkd(ctx context.Context, t target, dir string) error {
	_, err := l.run(ctx, t, "mkdir "+dir)
	return err
}
func (l lftpClient) rmd(ctx context.Context, t target, dir string) error {
	_, err := l.run(ctx, t, "rmdir "+dir)
	return err
}
func (l lftpClient) dele(ctx context.Context, t target, file string) error {
	_, err := l.run(ctx, t, "rm "+file)
	return err
}
func (l lftpClient) rename(ctx context.Context, t target, from, to string) error {
	_, err := l.run(ctx, t, "mv "+from+" "+to)
	return err
}

var reply213 = regexp.MustCompile(`213 (\S+)`)

func (l lftpClient) quote213(ctx context.Context, t target, cmd string) (string, error) {
	out, err := l.run(ctx, t, "quote TYPE I", "quote "+cmd)
	if err != nil {
		return "", err
	}
	m := reply213.FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("no 213 reply to %s in %q", cmd, out)
	}
	return m[1], nil
}

func (l lftpClient) size(ctx context.Context, t target, file string) (int64, error) {
	v, err := l.quote213(ctx, t, "SIZE "+file)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(v, 10, 64)
}

func (l lftpClient) mdtm(ctx context.Context, t target, file string) (time.Time, error) {
	v, err := l.quote213(ctx, t, "MDTM "+file)
	if err != nil {
		return time.Time{}, err
	}
	return time.Parse("20060102150405", v[:min(len(v), 14)])
}

// mirror copies a remote directory to a local one, or with reverse a local
// directory to a remote one.
func (l lftpClient) mirror(ctx context.Context, t target, from, to string, reverse bool) error {
	c := "mirror --no-perms "
	if reverse {
		c = "mirror -R --no-perms "
	}
	_, err := l.run(ctx, t, c+from+" "+to)
	return err
}

// --- Python ftplib ------------------------------------------------------------

// ftplibClient drives clients/ftplib_client.py. Modes: pasv, epsv, port,
// eprt.
type ftplibClient struct{ script string }

func (ftplibClient) name() string       { return "ftplib" }
func (ftplibClient) modes() []string    { return []string{"pasv", "epsv", "port", "eprt"} }
func (ftplibClient) has(op string) bool { return op == "appe" || op == "mlsd" }

func (f ftplibClient) run(ctx context.Context, t target, op string, args ...string) (string, error) {
	argv := []string{"python3", f.script, "--host", t.host, "--port", strconv.Itoa(t.port),
		"--user", ftpUser, "--password", ftpPass, "--source", t.src, "--mode", t.mode, "--timeout", "60", op}
	return runTool(ctx, opTimeout, append(argv, args...)...)
}

func (f ftplibClient) pwd(ctx context.Context, t target) (string, error) {
	out, err := f.run(ctx, t, "pwd")
	return strings.TrimSpace(out), err
}
func (f ftplibClient) cwd(ctx context.Context, t target, dir string) (string, error) {
	out, err := f.run(ctx, t, "cwd", dir)
	return strings.TrimSpace(out), err
}
func (f ftplibClient) list(ctx context.Context, t target, dir string) (string, error) {
	return f.run(ctx, t, "list", dir)
}
func (f ftplibClient) nlst(ctx context.Context, t target, dir string) (string, error) {
	return f.run(ctx, t, "nlst", dir)
}
func (f ftplibClient) mlsd(ctx context.Context, t target, dir string) (string, error) {
	return f.run(ctx, t, "mlsd", dir)
}
func (f ftplibClient) get(ctx context.Context, t target, remote, local string, offset int64) error {
	args := []string{remote, local}
	if offset > 0 {
		args = append(args, strconv.FormatInt(offset, 10))
	}
	_, err := f.run(ctx, t, "get", args...)
	return err
}
func (f ftplibClient) put(ctx context.Context, t target, local, remote string, offset int64) error {
	args := []string{local, remote}
	if offset > 0 {
		args = append(args, strconv.FormatInt(offset, 10))
	}
	_, err := f.run(ctx, t, "put", args...)
	return err
}
func (f ftplibClient) appe(ctx context.Context, t target, local, remote string) error {
	_, err := f.run(ctx, t, "append", local, remote)
	return err
}
func (f ftplibClient) mkd(ctx context.Context, t target, dir string) error {
	_, err := f.run(ctx, t, "mkd", dir)
	return err
}
func (f ftplibClient) rmd(ctx context.Context, t target, dir string) error {
	_, err := f.run(ctx, t, "rmd", dir)
	return err
}
func (f ftplibClient) dele(ctx context.Context, t target, file string) error {
	_, err := f.run(ctx, t, "dele", file)
	return err
}
func (f ftplibClient) rename(ctx context.Context, t target, from, to string) error {
	_, err := f.run(ctx, t, "rename", from, to)
	return err
}
func (f ftplibClient) size(ctx context.Context, t target, file string) (int64, error) {
	out, err := f.run(ctx, t, "size", file)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(out), 10, 64)
}
func (f ftplibClient) mdtm(ctx context.Context, t target, file string) (time.Time, error) {
	out, err := f.run(ctx, t, "mdtm", file)
	if err != nil {
		return time.Time{}, err
	}
	v := strings.TrimSpace(out)
	return time.Parse("20060102150405", v[:min(len(v), 14)])
}

// concurrent runs n parallel sessions that each store and read back
// nbytes; it returns the "name sha256" lines the script printed.
func (f ftplibClient) concurrent(ctx context.Context, t target, n, nbytes int, dir string) (string, error) {
	argv := []string{"python3", f.script, "--host", t.host, "--port", strconv.Itoa(t.port),
		"--user", ftpUser, "--password", ftpPass, "--source", t.src, "--mode", t.mode, "--timeout", "120",
		"concurrent", strconv.Itoa(n), strconv.Itoa(nbytes), dir}
	return runTool(ctx, opTimeout, argv...)
}
