package peers

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

// Target is where a client connects, as whom, and how it moves data.
type Target struct {
	Host     string // server or proxy address the client dials
	Port     int
	User     string // login name; empty means the test user (User)
	Password string // empty means the test password (Password)
	Source   string // local IP the client binds, for control and data connections
	Mode     string // data-connection mode, one of the client's Modes()
}

// Addr returns the target's host:port.
func (t Target) Addr() string { return net.JoinHostPort(t.Host, strconv.Itoa(t.Port)) }

// login returns the user name and password, defaulted to the test ones.
func (t Target) login() (user, password string) {
	user, password = t.User, t.Password
	if user == "" {
		user = User
	}
	if password == "" {
		password = Password
	}
	return user, password
}

// Client drives one FTP client program. Paths are relative to the user's
// login directory. Every call is one client invocation, one FTP session,
// bounded by OpTimeout.
type Client interface {
	// Name is "curl", "lftp" or "ftplib".
	Name() string
	// Modes lists the data-connection modes Target.Mode may name.
	Modes() []string
	// Has reports optional operations: "appe", "mlsd", "mirror".
	Has(op string) bool
	// PWD logs in and returns the working directory.
	PWD(ctx context.Context, t Target) (string, error)
	// CWD changes to dir and returns the working directory then.
	CWD(ctx context.Context, t Target, dir string) (string, error)
	// List returns the LIST output for dir.
	List(ctx context.Context, t Target, dir string) (string, error)
	// NLST returns the NLST output for dir.
	NLST(ctx context.Context, t Target, dir string) (string, error)
	// MLSD returns the names MLSD lists for dir.
	MLSD(ctx context.Context, t Target, dir string) (string, error)
	// Get downloads remote into local; with offset > 0 it resumes a
	// partial local file that is offset bytes long.
	Get(ctx context.Context, t Target, remote, local string, offset int64) error
	// Put uploads local to remote; with offset > 0 it resumes a partial
	// remote file that is offset bytes long.
	Put(ctx context.Context, t Target, local, remote string, offset int64) error
	// APPE appends the bytes of local to remote.
	APPE(ctx context.Context, t Target, local, remote string) error
	// MKD creates dir.
	MKD(ctx context.Context, t Target, dir string) error
	// RMD removes dir.
	RMD(ctx context.Context, t Target, dir string) error
	// DELE deletes file.
	DELE(ctx context.Context, t Target, file string) error
	// Rename renames from to to with RNFR/RNTO.
	Rename(ctx context.Context, t Target, from, to string) error
	// Size returns the SIZE of file.
	Size(ctx context.Context, t Target, file string) (int64, error)
	// MDTM returns the modification time of file.
	MDTM(ctx context.Context, t Target, file string) (time.Time, error)
}

// Clients returns one driver of each client, ftplib running script (the
// path of clients/ftplib_client.py).
func Clients(script string) []Client {
	return []Client{Curl{}, Lftp{}, Ftplib{Script: script}}
}

// --- curl -------------------------------------------------------------------

// Curl drives curl. Modes: epsv (curl's default), pasv (--disable-epsv),
// port (-P with --disable-eprt), eprt (-P).
type Curl struct{}

var _ Client = Curl{}

// Name returns "curl".
func (Curl) Name() string { return "curl" }

// Modes returns epsv, pasv, port and eprt.
func (Curl) Modes() []string { return []string{"epsv", "pasv", "port", "eprt"} }

// Has reports "appe" only.
func (Curl) Has(op string) bool { return op == "appe" }

func (Curl) url(t Target, p string) string {
	return "ftp://" + t.Addr() + "/" + p
}

func (c Curl) args(t Target, extra ...string) []string {
	user, password := t.login()
	a := []string{"curl", "-sS", "--max-time", "170", "--connect-timeout", "10",
		"--interface", t.Source, "--user", user + ":" + password, "--ftp-method", "multicwd"}
	switch t.Mode {
	case "epsv":
		a = append(a, "--ftp-pasv")
	case "pasv":
		a = append(a, "--ftp-pasv", "--disable-epsv")
	case "port":
		a = append(a, "-P", t.Source, "--disable-eprt")
	case "eprt":
		a = append(a, "-P", t.Source)
	}
	return append(a, extra...)
}

// PWD implements Client.
func (c Curl) PWD(ctx context.Context, t Target) (string, error) {
	return c.CWD(ctx, t, "")
}

var curlPWD = regexp.MustCompile(`(?m)^< 257 "([^"]*)"`)

// CWD lists dir with -v and reports the directory the server printed for
// the PWD curl sends after login; the CWD shows as a successful listing.
func (c Curl) CWD(ctx context.Context, t Target, dir string) (string, error) {
	p := dir
	if p != "" {
		p += "/"
	}
	argv := c.args(t, "-v", "-o", "/dev/null", c.url(t, p))
	ctx, cancel := context.WithTimeout(ctx, OpTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s: %v\n%s", ShellQuote(argv), err, Tail(string(out), 1500))
	}
	m := curlPWD.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("no PWD reply in curl's trace:\n%s", Tail(string(out), 1500))
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

// List implements Client.
func (c Curl) List(ctx context.Context, t Target, dir string) (string, error) {
	return RunTool(ctx, OpTimeout, c.args(t, c.url(t, dir+"/"))...)
}

// NLST implements Client with --list-only.
func (c Curl) NLST(ctx context.Context, t Target, dir string) (string, error) {
	return RunTool(ctx, OpTimeout, c.args(t, "--list-only", c.url(t, dir+"/"))...)
}

// MLSD fails: curl has no MLSD.
func (Curl) MLSD(context.Context, Target, string) (string, error) {
	return "", fmt.Errorf("curl has no MLSD")
}

// Get implements Client; a resume uses -C.
func (c Curl) Get(ctx context.Context, t Target, remote, local string, offset int64) error {
	extra := []string{"-o", local}
	if offset > 0 {
		extra = append(extra, "-C", strconv.FormatInt(offset, 10))
	}
	_, err := RunTool(ctx, OpTimeout, c.args(t, append(extra, c.url(t, remote))...)...)
	return err
}

// Put implements Client; a resume uses -C.
func (c Curl) Put(ctx context.Context, t Target, local, remote string, offset int64) error {
	extra := []string{"-T", local}
	if offset > 0 {
		extra = append(extra, "-C", strconv.FormatInt(offset, 10))
	}
	_, err := RunTool(ctx, OpTimeout, c.args(t, append(extra, c.url(t, remote))...)...)
	return err
}

// APPE implements Client with --append.
func (c Curl) APPE(ctx context.Context, t Target, local, remote string) error {
	_, err := RunTool(ctx, OpTimeout, c.args(t, "--append", "-T", local, c.url(t, remote))...)
	return err
}

// Quote sends raw commands after login with -Q and --head, so that no
// transfer follows.
func (c Curl) Quote(ctx context.Context, t Target, cmds ...string) error {
	var extra []string
	for _, q := range cmds {
		extra = append(extra, "-Q", q)
	}
	extra = append(extra, "--head", "-o", "/dev/null", c.url(t, ""))
	_, err := RunTool(ctx, OpTimeout, c.args(t, extra...)...)
	return err
}

// MKD implements Client.
func (c Curl) MKD(ctx context.Context, t Target, dir string) error {
	return c.Quote(ctx, t, "MKD "+dir)
}

// RMD implements Client.
func (c Curl) RMD(ctx context.Context, t Target, dir string) error {
	return c.Quote(ctx, t, "RMD "+dir)
}

// DELE implements Client.
func (c Curl) DELE(ctx context.Context, t Target, file string) error {
	return c.Quote(ctx, t, "DELE "+file)
}

// Rename implements Client.
func (c Curl) Rename(ctx context.Context, t Target, from, to string) error {
	return c.Quote(ctx, t, "RNFR "+from, "RNTO "+to)
}

// head runs curl --head on a file: curl sends MDTM and SIZE and prints
// them as Last-Modified and Content-Length.
func (c Curl) head(ctx context.Context, t Target, file string) (string, error) {
	return RunTool(ctx, OpTimeout, c.args(t, "--head", c.url(t, file))...)
}

var curlLength = regexp.MustCompile(`(?mi)^Content-Length: (\d+)`)
var curlModified = regexp.MustCompile(`(?mi)^Last-Modified: (.+?)\r?$`)

// Size implements Client from the Content-Length of --head.
func (c Curl) Size(ctx context.Context, t Target, file string) (int64, error) {
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

// MDTM implements Client from the Last-Modified of --head.
func (c Curl) MDTM(ctx context.Context, t Target, file string) (time.Time, error) {
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

// Lftp drives lftp. Modes: passive (PASV) and active (PORT). TLS is left
// at lftp's defaults: lftp offers AUTH TLS and must carry on in the clear
// when the server or the proxy refuses it.
type Lftp struct{}

var _ Client = Lftp{}

// Name returns "lftp".
func (Lftp) Name() string { return "lftp" }

// Modes returns passive and active.
func (Lftp) Modes() []string { return []string{"passive", "active"} }

// Has reports "mlsd" and "mirror".
func (Lftp) Has(op string) bool { return op == "mlsd" || op == "mirror" }

func (Lftp) script(t Target, cmds ...string) []string {
	passive := "on"
	if t.Mode == "active" {
		passive = "off"
	}
	bind := "net:socket-bind-ipv4"
	if isIPv6(t.Source) {
		bind = "net:socket-bind-ipv6"
	}
	user, password := t.login()
	pre := []string{
		"set " + bind + " " + t.Source,
		"set ftp:passive-mode " + passive,
		"set ftp:prefer-epsv no",
		"set net:max-retries 2",
		"set net:reconnect-interval-base 1",
		"set net:timeout 30",
		"set xfer:clobber on",
		"set cmd:fail-exit yes",
		"set ftp:use-mlsd yes",
		fmt.Sprintf("open -u %s,%s -p %d %s", user, password, t.Port, t.Host),
	}
	return []string{"lftp", "-c", strings.Join(append(pre, cmds...), "; ")}
}

// Run runs lftp commands (joined with "; ") after the settings for t and
// the open, and returns lftp's stdout.
func (l Lftp) Run(ctx context.Context, t Target, cmds ...string) (string, error) {
	return RunTool(ctx, OpTimeout, l.script(t, cmds...)...)
}

var quoted257 = regexp.MustCompile(`257 "([^"]*)"`)

// PWD implements Client.
func (l Lftp) PWD(ctx context.Context, t Target) (string, error) {
	return l.CWD(ctx, t, "")
}

// CWD implements Client with cd and quote PWD.
func (l Lftp) CWD(ctx context.Context, t Target, dir string) (string, error) {
	cmds := []string{}
	if dir != "" {
		cmds = append(cmds, "cd "+dir)
	}
	out, err := l.Run(ctx, t, append(cmds, "quote PWD")...)
	if err != nil {
		return "", err
	}
	m := quoted257.FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("no 257 reply in %q", out)
	}
	return m[1], nil
}

// List implements Client with ls.
func (l Lftp) List(ctx context.Context, t Target, dir string) (string, error) {
	return l.Run(ctx, t, "ls "+dir)
}

// NLST implements Client with nlist.
func (l Lftp) NLST(ctx context.Context, t Target, dir string) (string, error) {
	return l.Run(ctx, t, "nlist "+dir)
}

// MLSD lists with cls, which lftp serves with MLSD when the server's FEAT
// advertises it (ftp:use-mlsd).
func (l Lftp) MLSD(ctx context.Context, t Target, dir string) (string, error) {
	return l.Run(ctx, t, "cls -1 "+dir+"/")
}

// Get implements Client; a resume uses get -c.
func (l Lftp) Get(ctx context.Context, t Target, remote, local string, offset int64) error {
	c := "get "
	if offset > 0 {
		c = "get -c "
	}
	_, err := l.Run(ctx, t, c+remote+" -o "+local)
	return err
}

// Put implements Client; a resume uses put -c.
func (l Lftp) Put(ctx context.Context, t Target, local, remote string, offset int64) error {
	c := "put "
	if offset > 0 {
		c = "put -c "
	}
	_, err := l.Run(ctx, t, c+local+" -o "+remote)
	return err
}

// APPE fails: lftp has no APPE command.
func (Lftp) APPE(context.Context, Target, string, string) error {
	return fmt.Errorf("lftp has no APPE command")
}

// MKD implements Client with mkdir.
func (l Lftp) MKD(ctx context.Context, t Target, dir string) error {
	_, err := l.Run(ctx, t, "mkdir "+dir)
	return err
}

// RMD implements Client with rmdir.
func (l Lftp) RMD(ctx context.Context, t Target, dir string) error {
	_, err := l.Run(ctx, t, "rmdir "+dir)
	return err
}

// DELE implements Client with rm.
func (l Lftp) DELE(ctx context.Context, t Target, file string) error {
	_, err := l.Run(ctx, t, "rm "+file)
	return err
}

// Rename implements Client with mv.
func (l Lftp) Rename(ctx context.Context, t Target, from, to string) error {
	_, err := l.Run(ctx, t, "mv "+from+" "+to)
	return err
}

var reply213 = regexp.MustCompile(`213 (\S+)`)

func (l Lftp) quote213(ctx context.Context, t Target, cmd string) (string, error) {
	out, err := l.Run(ctx, t, "quote TYPE I", "quote "+cmd)
	if err != nil {
		return "", err
	}
	m := reply213.FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("no 213 reply to %s in %q", cmd, out)
	}
	return m[1], nil
}

// Size implements Client with quote SIZE.
func (l Lftp) Size(ctx context.Context, t Target, file string) (int64, error) {
	v, err := l.quote213(ctx, t, "SIZE "+file)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(v, 10, 64)
}

// MDTM implements Client with quote MDTM.
func (l Lftp) MDTM(ctx context.Context, t Target, file string) (time.Time, error) {
	v, err := l.quote213(ctx, t, "MDTM "+file)
	if err != nil {
		return time.Time{}, err
	}
	return time.Parse("20060102150405", v[:min(len(v), 14)])
}

// Mirror copies a remote directory to a local one, or with reverse a local
// directory to a remote one.
func (l Lftp) Mirror(ctx context.Context, t Target, from, to string, reverse bool) error {
	c := "mirror --no-perms "
	if reverse {
		c = "mirror -R --no-perms "
	}
	_, err := l.Run(ctx, t, c+from+" "+to)
	return err
}

// --- Python ftplib ------------------------------------------------------------

// Ftplib drives the ftplib client script (clients/ftplib_client.py).
// Modes: pasv, epsv, port, eprt.
type Ftplib struct {
	// Script is the path of ftplib_client.py.
	Script string
}

var _ Client = Ftplib{}

// Name returns "ftplib".
func (Ftplib) Name() string { return "ftplib" }

// Modes returns pasv, epsv, port and eprt.
func (Ftplib) Modes() []string { return []string{"pasv", "epsv", "port", "eprt"} }

// Has reports "appe" and "mlsd".
func (Ftplib) Has(op string) bool { return op == "appe" || op == "mlsd" }

func (f Ftplib) argv(t Target, timeout int, op string, args ...string) []string {
	user, password := t.login()
	argv := []string{"python3", f.Script, "--host", t.Host, "--port", strconv.Itoa(t.Port),
		"--user", user, "--password", password, "--source", t.Source, "--mode", t.Mode, "--timeout", strconv.Itoa(timeout), op}
	return append(argv, args...)
}

// Run runs one operation of the script (see its usage) with a 60 s socket
// timeout and returns its stdout.
func (f Ftplib) Run(ctx context.Context, t Target, op string, args ...string) (string, error) {
	return RunTool(ctx, OpTimeout, f.argv(t, 60, op, args...)...)
}

// PWD implements Client.
func (f Ftplib) PWD(ctx context.Context, t Target) (string, error) {
	out, err := f.Run(ctx, t, "pwd")
	return strings.TrimSpace(out), err
}

// CWD implements Client.
func (f Ftplib) CWD(ctx context.Context, t Target, dir string) (string, error) {
	out, err := f.Run(ctx, t, "cwd", dir)
	return strings.TrimSpace(out), err
}

// List implements Client.
func (f Ftplib) List(ctx context.Context, t Target, dir string) (string, error) {
	return f.Run(ctx, t, "list", dir)
}

// NLST implements Client.
func (f Ftplib) NLST(ctx context.Context, t Target, dir string) (string, error) {
	return f.Run(ctx, t, "nlst", dir)
}

// MLSD implements Client.
func (f Ftplib) MLSD(ctx context.Context, t Target, dir string) (string, error) {
	return f.Run(ctx, t, "mlsd", dir)
}

// Get implements Client; a resume sends REST.
func (f Ftplib) Get(ctx context.Context, t Target, remote, local string, offset int64) error {
	args := []string{remote, local}
	if offset > 0 {
		args = append(args, strconv.FormatInt(offset, 10))
	}
	_, err := f.Run(ctx, t, "get", args...)
	return err
}

// Put implements Client; a resume sends REST.
func (f Ftplib) Put(ctx context.Context, t Target, local, remote string, offset int64) error {
	args := []string{local, remote}
	if offset > 0 {
		args = append(args, strconv.FormatInt(offset, 10))
	}
	_, err := f.Run(ctx, t, "put", args...)
	return err
}

// APPE implements Client.
func (f Ftplib) APPE(ctx context.Context, t Target, local, remote string) error {
	_, err := f.Run(ctx, t, "append", local, remote)
	return err
}

// MKD implements Client.
func (f Ftplib) MKD(ctx context.Context, t Target, dir string) error {
	_, err := f.Run(ctx, t, "mkd", dir)
	return err
}

// RMD implements Client.
func (f Ftplib) RMD(ctx context.Context, t Target, dir string) error {
	_, err := f.Run(ctx, t, "rmd", dir)
	return err
}

// DELE implements Client.
func (f Ftplib) DELE(ctx context.Context, t Target, file string) error {
	_, err := f.Run(ctx, t, "dele", file)
	return err
}

// Rename implements Client.
func (f Ftplib) Rename(ctx context.Context, t Target, from, to string) error {
	_, err := f.Run(ctx, t, "rename", from, to)
	return err
}

// Size implements Client.
func (f Ftplib) Size(ctx context.Context, t Target, file string) (int64, error) {
	out, err := f.Run(ctx, t, "size", file)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(out), 10, 64)
}

// MDTM implements Client.
func (f Ftplib) MDTM(ctx context.Context, t Target, file string) (time.Time, error) {
	out, err := f.Run(ctx, t, "mdtm", file)
	if err != nil {
		return time.Time{}, err
	}
	v := strings.TrimSpace(out)
	return time.Parse("20060102150405", v[:min(len(v), 14)])
}

// Concurrent runs n parallel sessions that each store nbytes random bytes
// as dir/c<i>.bin and read them back; it returns the "name sha256" lines
// the script printed, one per session.
func (f Ftplib) Concurrent(ctx context.Context, t Target, n, nbytes int, dir string) (string, error) {
	return RunTool(ctx, OpTimeout, f.argv(t, 120, "concurrent", strconv.Itoa(n), strconv.Itoa(nbytes), dir)...)
}
