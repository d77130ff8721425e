package peers

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Test credentials every server accepts.
const (
	User     = "ftptest"
	Password = "s3cret-interop"
)

// Kind describes one FTP server implementation that StartServer can run.
type Kind struct {
	// Name is "vsftpd", "pure-ftpd" or "proftpd".
	Name string
	// PasvLo and PasvHi bound the server's passive data ports unless
	// StartServer is given PassivePorts.
	PasvLo, PasvHi int
	// MLSD tells whether the server implements MLSD.
	MLSD bool
	// prepare writes the server's configuration into s.Dir and returns
	// the command line that runs it in the foreground, bound to
	// s.Host:s.Port and serving s.Root as the test user's "/".
	prepare func(s *Server) ([]string, error)
}

// The server kinds, with their default passive port ranges.
var (
	// Vsftpd is vsftpd 3 with a PAM-checked virtual user.
	Vsftpd = Kind{Name: "vsftpd", PasvLo: 22000, PasvHi: 22099, MLSD: false, prepare: prepareVsftpd}
	// PureFTPd is pure-ftpd with a PureDB virtual user. Its range is 200
	// ports because pure-ftpd caps its clients at half its passive ports,
	// and the suites run 50-session cases beside others.
	PureFTPd = Kind{Name: "pure-ftpd", PasvLo: 22300, PasvHi: 22499, MLSD: true, prepare: preparePureFTPd}
	// ProFTPd is proftpd with AuthUserFile/AuthGroupFile.
	ProFTPd = Kind{Name: "proftpd", PasvLo: 22200, PasvHi: 22299, MLSD: true, prepare: prepareProFTPd}
)

// Kinds returns every server kind, in the suite's order.
func Kinds() []Kind { return []Kind{Vsftpd, PureFTPd, ProFTPd} }

// KindByName returns the server kind called name.
func KindByName(name string) (Kind, bool) {
	for _, k := range Kinds() {
		if k.Name == name {
			return k, true
		}
	}
	return Kind{}, false
}

// ServerOption adjusts a server before StartServer configures it.
type ServerOption func(*Server)

// PassivePorts makes the server offer passive data ports lo..hi instead of
// its kind's default range, so that servers of several suites can run at
// the same time. The range must hold at least two ports: proftpd refuses a
// range of one, and pure-ftpd 1.0.50 crashes on every session with one.
func PassivePorts(lo, hi int) ServerOption {
	return func(s *Server) { s.PasvLo, s.PasvHi = lo, hi }
}

// Server is one running FTP server process.
type Server struct {
	Kind  Kind
	Peers string // the unpacked packages (interop/.peers)
	Dir   string // work directory: configuration, logs
	Root  string // the test user's home; its "/" after chroot
	Host  string
	Port  int
	// PasvLo and PasvHi bound the passive data ports the server offers.
	PasvLo, PasvHi int
	// UID and GID own Root: the account the server runs sessions as.
	UID, GID int
	// LogPath holds the server process's stdout and stderr.
	LogPath string
	// TLS, if not nil, is how the server speaks FTPS (option TLS).
	TLS *TLSOptions

	cmd     *exec.Cmd
	waitErr chan error
	cleanup []func()
}

// Addr returns the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// PID returns the process ID of the server's main process (also its process
// group), or 0 once stopped.
func (s *Server) PID() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// sessionAccount is the system account the servers run the test user's
// sessions as. "daemon" (uid 1) exists on every Debian system and has an
// existing home directory, which vsftpd insists on entering before it
// changes to local_root.
func sessionAccount() (uid, gid int, err error) {
	u, err := user.Lookup("daemon")
	if err != nil {
		return 0, 0, err
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid, nil
}

// StartServer prepares and starts a server of the given kind on host:port,
// with the binaries unpacked under peersDir and a fresh work directory (and
// root) under workDir, and waits for its greeting. workDir must be
// searchable by others (mode 0755, unlike os.MkdirTemp's 0700): sessions
// run as "daemon". The server runs in the
// foreground in its own process group, so Stop can end it and its session
// processes by its own PID. It needs root.
func StartServer(ctx context.Context, kind Kind, peersDir, workDir, host string, port int, opts ...ServerOption) (*Server, error) {
	if kind.prepare == nil {
		return nil, fmt.Errorf("server kind %q: use one of Kinds()", kind.Name)
	}
	s := &Server{Kind: kind, Peers: peersDir, Host: host, Port: port, PasvLo: kind.PasvLo, PasvHi: kind.PasvHi}
	for _, o := range opts {
		o(s)
	}
	if s.PasvLo <= 0 || s.PasvHi <= s.PasvLo || s.PasvHi > 65535 {
		return nil, fmt.Errorf("%s: passive ports %d-%d: want a range of at least two ports", kind.Name, s.PasvLo, s.PasvHi)
	}
	if err := checkTLS(s); err != nil {
		return nil, fmt.Errorf("%s: %w", kind.Name, err)
	}
	if fi, err := os.Stat(workDir); err != nil {
		return nil, err
	} else if fi.Mode().Perm()&0o001 == 0 {
		return nil, fmt.Errorf("work directory %s: mode %v; the session account must be able to enter it (chmod 755)", workDir, fi.Mode().Perm())
	}
	uid, gid, err := sessionAccount()
	if err != nil {
		return nil, fmt.Errorf("session account: %w", err)
	}
	s.UID, s.GID = uid, gid
	dir, err := os.MkdirTemp(workDir, kind.Name+"-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	s.Dir, s.Root = dir, filepath.Join(dir, "root")
	if err := os.Mkdir(s.Root, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chown(s.Root, uid, gid); err != nil {
		return nil, err
	}
	argv, err := kind.prepare(s)
	if err != nil {
		s.Stop()
		return nil, fmt.Errorf("%s: prepare: %w", kind.Name, err)
	}
	s.LogPath = filepath.Join(dir, "server.out")
	out, err := os.Create(s.LogPath)
	if err != nil {
		s.Stop()
		return nil, err
	}
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = out, out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		out.Close()
		s.cmd = nil
		s.Stop()
		return nil, fmt.Errorf("%s: start: %w", kind.Name, err)
	}
	s.waitErr = make(chan error, 1)
	go func() { s.waitErr <- s.cmd.Wait(); out.Close() }()
	if err := waitGreetingTLS(ctx, s.Addr(), "", s.greetingTLS(), 10*time.Second, s.waitErr); err != nil {
		s.Stop()
		logTail, _ := os.ReadFile(s.LogPath)
		return nil, fmt.Errorf("%s on %s did not come up: %w\n%s", kind.Name, s.Addr(), err, logTail)
	}
	return s, nil
}

// Stop ends the server: SIGTERM to its process group, SIGKILL after 5 s,
// then SIGKILL to whatever session processes are left in the group. It
// removes what the server installed outside its work directory (vsftpd's
// PAM service file). Calling it again does nothing.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		pgid := s.cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-s.waitErr:
		case <-time.After(5 * time.Second):
			syscall.Kill(-pgid, syscall.SIGKILL)
			select {
			case <-s.waitErr:
			case <-time.After(5 * time.Second):
			}
		}
		// Session processes left in the group (vsftpd and proftpd fork
		// one per client) are ended too.
		syscall.Kill(-pgid, syscall.SIGKILL)
		s.cmd = nil
		// And those that left the group: a vsftpd session with TLS makes
		// itself a session leader, and outlived the server's group.
		killWithArgUnder(s.Dir)
	}
	for i := len(s.cleanup) - 1; i >= 0; i-- {
		s.cleanup[i]()
	}
	s.cleanup = nil
}

// killWithArgUnder sends SIGKILL to every process with an argument in
// dir: the server's own configuration lives there, so only its processes
// (forked, they keep its command line) have one.
func killWithArgUnder(dir string) {
	if dir == "" {
		return
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		for _, arg := range strings.Split(string(b), "\x00") {
			if strings.HasPrefix(arg, dir+string(filepath.Separator)) {
				if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
				break
			}
		}
	}
}

// Path maps a path as the FTP user sees it to the file on disk.
func (s *Server) Path(remote string) string {
	return filepath.Join(s.Root, filepath.FromSlash(strings.TrimPrefix(remote, "/")))
}

// cryptSHA512 returns a crypt(3) SHA-512 hash of password, made by openssl
// so that no hashing code has to live here.
func cryptSHA512(password string) (string, error) {
	out, err := exec.Command("openssl", "passwd", "-6", "-salt", "interopsalt", password).Output()
	if err != nil {
		return "", fmt.Errorf("openssl passwd: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// prepareVsftpd configures vsftpd with a virtual user.
//
// Authentication: vsftpd authenticates local users through PAM only, so a
// PAM service file of its own, /etc/pam.d/ftpproxy-interop-<pid>-<dir>,
// checks the password with pam_userdb against a Berkeley DB file in the
// server's work directory (made with db5.3_load); Stop removes it. The
// authenticated user is mapped to the system account "daemon" with
// guest_enable, and chrooted to the fresh root. No system user is created.
// pam_exec is not used: the helper process it forks confuses vsftpd's
// privileged parent, which then stops answering its session process (EPSV
// hangs).
func prepareVsftpd(s *Server) ([]string, error) {
	dbLoad, err := firstInPath("db5.3_load", "db_load")
	if err != nil {
		return nil, fmt.Errorf("%w (install db5.3-util: interop/install-peers.sh)", err)
	}
	dbBase := filepath.Join(s.Dir, "users")
	load := exec.Command(dbLoad, "-T", "-t", "hash", dbBase+".db")
	load.Stdin = strings.NewReader(User + "\n" + Password + "\n")
	if out, err := load.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%s: %v: %s", dbLoad, err, out)
	}
	pamService := fmt.Sprintf("ftpproxy-interop-%d-%s", os.Getpid(), filepath.Base(s.Dir))
	pamFile := filepath.Join("/etc/pam.d", pamService)
	if err := os.WriteFile(pamFile, []byte(vsftpdPAM(dbBase)), 0o644); err != nil {
		return nil, fmt.Errorf("PAM service file: %w", err)
	}
	s.cleanup = append(s.cleanup, func() { os.Remove(pamFile) })
	empty := filepath.Join(s.Dir, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		return nil, err
	}
	confPath := filepath.Join(s.Dir, "vsftpd.conf")
	if err := os.WriteFile(confPath, []byte(vsftpdConfig(s, empty, pamService)), 0o600); err != nil {
		return nil, err
	}
	return []string{filepath.Join(s.Peers, "vsftpd/usr/sbin/vsftpd"), confPath}, nil
}

// vsftpdPAM is the PAM service file that checks logins against the
// pam_userdb database dbBase.db.
func vsftpdPAM(dbBase string) string {
	return fmt.Sprintf("auth required pam_userdb.so db=%s\naccount required pam_userdb.so db=%s\nsession required pam_permit.so\npassword required pam_deny.so\n", dbBase, dbBase)
}

// vsftpdConfig is vsftpd.conf for s, with the secure_chroot_dir empty and
// the PAM service pamService.
//
// Container notes: seccomp_sandbox=NO, isolate=NO and isolate_network=NO
// keep vsftpd from using kernel features that sandboxes refuse; listen=YES
// and background=NO run it standalone in the foreground.
func vsftpdConfig(s *Server, empty, pamService string) string {
	listen := "listen=YES\nlisten_ipv6=NO\nlisten_address=" + s.Host
	if isIPv6(s.Host) {
		listen = "listen=NO\nlisten_ipv6=YES\nlisten_address6=" + s.Host
	}
	return fmt.Sprintf(`%s
listen_port=%d
background=NO
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
anonymous_enable=NO
local_enable=YES
write_enable=YES
local_umask=022
file_open_mode=0644
guest_enable=YES
guest_username=daemon
virtual_use_local_privs=YES
local_root=%s
chroot_local_user=YES
allow_writeable_chroot=YES
secure_chroot_dir=%s
pam_service_name=%s
session_support=NO
pasv_enable=YES
pasv_min_port=%d
pasv_max_port=%d
port_enable=YES
connect_from_port_20=NO
xferlog_enable=YES
vsftpd_log_file=%s
dual_log_enable=NO
hide_ids=NO
max_clients=0
max_per_ip=0
delay_failed_login=1
`, listen, s.Port, s.Root, empty, pamService, s.PasvLo, s.PasvHi, filepath.Join(s.Dir, "vsftpd.log")) + vsftpdTLSConfig(s)
}

// preparePureFTPd configures pure-ftpd with a virtual user in a PureDB file
// made by its own pure-pw (from a passwd line carrying a crypt(3) hash, so
// that logins stay fast; pure-pw's own argon2 hashes cost about a second of
// CPU each).
func preparePureFTPd(s *Server) ([]string, error) {
	hash, err := cryptSHA512(Password)
	if err != nil {
		return nil, err
	}
	passwd := filepath.Join(s.Dir, "pureftpd.passwd")
	pdb := filepath.Join(s.Dir, "pureftpd.pdb")
	if err := os.WriteFile(passwd, []byte(pureFTPdPasswd(s, hash)), 0o600); err != nil {
		return nil, err
	}
	pw := filepath.Join(s.Peers, "pure-ftpd/usr/bin/pure-pw")
	if out, err := exec.Command(pw, "mkdb", pdb, "-f", passwd).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pure-pw mkdb: %v: %s", err, out)
	}
	return pureFTPdArgs(s, pdb), nil
}

// pureFTPdPasswd is the pure-pw passwd line of the test user with the
// crypt(3) hash hash.
func pureFTPdPasswd(s *Server, hash string) string {
	return fmt.Sprintf("%s:%s:%d:%d::%s/./::::::::::::\n", User, hash, s.UID, s.GID, s.Root)
}

// pureFTPdArgs is the command line that runs pure-ftpd for s with the
// PureDB file pdb.
func pureFTPdArgs(s *Server, pdb string) []string {
	args := []string{
		filepath.Join(s.Peers, "pure-ftpd/usr/sbin/pure-ftpd"),
		"-S", s.Host + "," + strconv.Itoa(s.Port),
		"-l", "puredb:" + pdb,
		"-E", // no anonymous logins
		"-H", // no reverse DNS
		"-p", fmt.Sprintf("%d:%d", s.PasvLo, s.PasvHi),
		"-u", strconv.Itoa(s.UID), // lowest uid allowed to log in
		"-c", "200", "-C", "200", // clients in total and per IP
		"-U", "133:022",
		"-g", filepath.Join(s.Dir, "pure-ftpd.pid"),
		"-O", "clf:" + filepath.Join(s.Dir, "transfer.log"),
	}
	return append(args, pureFTPdTLSArgs(s)...)
}

// prepareProFTPd configures proftpd with AuthUserFile/AuthGroupFile (no
// system accounts involved) and runs it with -n (foreground).
func prepareProFTPd(s *Server) ([]string, error) {
	hash, err := cryptSHA512(Password)
	if err != nil {
		return nil, err
	}
	passwd := filepath.Join(s.Dir, "ftpd.passwd")
	group := filepath.Join(s.Dir, "ftpd.group")
	if err := os.WriteFile(passwd, []byte(fmt.Sprintf("%s:%s:%d:%d::%s:/bin/false\n", User, hash, s.UID, s.GID, s.Root)), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(group, []byte(fmt.Sprintf("%s:x:%d:\n", User, s.GID)), 0o600); err != nil {
		return nil, err
	}
	confPath := filepath.Join(s.Dir, "proftpd.conf")
	if err := os.WriteFile(confPath, []byte(proftpdConfig(s, passwd, group)), 0o600); err != nil {
		return nil, err
	}
	return []string{filepath.Join(s.Peers, "proftpd/usr/sbin/proftpd"), "-n", "-c", confPath}, nil
}

// proftpdConfig is proftpd.conf for s with the user file passwd and the
// group file group.
func proftpdConfig(s *Server, passwd, group string) string {
	return fmt.Sprintf(`ServerName "interop"
ServerType standalone
DefaultServer on
Port %d
DefaultAddress %s
SocketBindTight on
UseIPv6 on
User daemon
Group daemon
Umask 022
MaxInstances 300
PidFile %[3]s/proftpd.pid
ScoreboardFile %[3]s/proftpd.scoreboard
DelayTable none
WtmpLog off
TransferLog %[3]s/xferlog
SystemLog %[3]s/proftpd.log
AuthOrder mod_auth_file.c
AuthUserFile %[4]s
AuthGroupFile %[5]s
RequireValidShell off
UseFtpUsers off
UseReverseDNS off
TimeoutIdle 600
PassivePorts %[6]d %[7]d
DefaultRoot ~
AllowOverwrite on
AllowStoreRestart on
AllowRetrieveRestart on
`, s.Port, s.Host, s.Dir, passwd, group, s.PasvLo, s.PasvHi) + proftpdTLSConfig(s)
}

// CheckConcurrent checks the output of Ftplib.Concurrent against the
// server's disk: one "name sha256" line per session, each naming a file
// of size bytes on the server with that content.
func (s *Server) CheckConcurrent(out string, n int, size int64) error {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != n {
		return fmt.Errorf("%d sessions reported, want %d", len(lines), n)
	}
	for _, l := range lines {
		name, sum, ok := strings.Cut(l, " ")
		if !ok {
			return fmt.Errorf("bad line %q", l)
		}
		if err := SameContent(s.Path(name), size, sum); err != nil {
			return fmt.Errorf("server side: %w", err)
		}
	}
	return nil
}
