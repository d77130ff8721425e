//go:build interop

package interop

import (
	"bufio"
	"context"
	"errors"
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

// Test credentials shared by every server.
const (
	ftpUser = "ftptest"
	ftpPass = "s3cret-interop"
)

// serverKind describes one FTP server implementation the suite can run.
type serverKind struct {
	name string
	// pasvLo and pasvHi bound the server's passive data ports.
	pasvLo, pasvHi int
	// mlsd tells whether the server implements MLSD.
	mlsd bool
	// prepare writes the server's configuration into dir and returns the
	// command line that runs it in the foreground, bound to host:port and
	// serving root as the test user's "/".
	prepare func(s *server) ([]string, error)
}

var serverKinds = []serverKind{
	{name: "vsftpd", pasvLo: 22000, pasvHi: 22099, mlsd: false, prepare: prepareVsftpd},
	{name: "pure-ftpd", pasvLo: 22100, pasvHi: 22199, mlsd: true, prepare: preparePureFTPd},
	{name: "proftpd", pasvLo: 22200, pasvHi: 22299, mlsd: true, prepare: prepareProFTPd},
}

// server is one running FTP server process.
type server struct {
	kind  serverKind
	peers string // the unpacked packages, interop/.peers
	dir   string // work directory: configuration, logs
	root  string // the test user's home; its "/" after chroot
	host  string
	port  int
	// uid and gid own root: the account the server runs sessions as.
	uid, gid int

	cmd     *exec.Cmd
	waitErr chan error
	logPath string
	cleanup []func()
}

func (s *server) addr() string { return net.JoinHostPort(s.host, strconv.Itoa(s.port)) }

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

// startServer prepares and starts a server of the given kind on host:port
// with a fresh root under workDir. The server runs in the foreground in its
// own process group, so stop can end it and its session processes by its
// own PID.
func startServer(ctx context.Context, kind serverKind, peers, workDir, host string, port int) (*server, error) {
	uid, gid, err := sessionAccount()
	if err != nil {
		return nil, fmt.Errorf("session account: %w", err)
	}
	dir, err := os.MkdirTemp(workDir, kind.name+"-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	s := &server{kind: kind, peers: peers, dir: dir, root: filepath.Join(dir, "root"), host: host, port: port, uid: uid, gid: gid}
	if err := os.Mkdir(s.root, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chown(s.root, uid, gid); err != nil {
		return nil, err
	}
	argv, err := kind.prepare(s)
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("%s: prepare: %w", kind.name, err)
	}
	s.logPath = filepath.Join(dir, "server.out")
	out, err := os.Create(s.logPath)
	if err != nil {
		s.stop()
		return nil, err
	}
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = out, out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		out.Close()
		s.stop()
		return nil, fmt.Errorf("%s: start: %w", kind.name, err)
	}
	s.waitErr = make(chan error, 1)
	go func() { s.waitErr <- s.cmd.Wait(); out.Close() }()
	if err := waitGreeting(ctx, s.addr(), 10*time.Second, s.waitErr); err != nil {
		s.stop()
		logTail, _ := os.ReadFile(s.logPath)
		return nil, fmt.Errorf("%s on %s did not come up: %w\n%s", kind.name, s.addr(), err, logTail)
	}
	return s, nil
}

// waitGreeting polls addr until it answers with a 220 greeting.
func waitGreeting(ctx context.Context, addr string, limit time.Duration, exited <-chan error) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("process exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(3 * time.Second))
			line, rerr := bufio.NewReader(c).ReadString('\n')
			c.Write([]byte("QUIT\r\n"))
			c.Close()
			if rerr == nil && strings.HasPrefix(line, "220") {
				return nil
			}
			last = fmt.Errorf("greeting %q: %v", line, rerr)
		} else {
			last = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("timed out: %v", last)
}

// stop ends the server: SIGTERM to its process group, SIGKILL after 5 s.
func (s *server) stop() {
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
	}
	for i := len(s.cleanup) - 1; i >= 0; i-- {
		s.cleanup[i]()
	}
	s.cleanup = nil
}

// path maps a path as the FTP user sees it to the file on disk.
func (s *server) path(remote string) string {
	return filepath.Join(s.root, filepath.FromSlash(strings.TrimPrefix(remote, "/")))
}

func isIPv6(host string) bool { return strings.Contains(host, ":") }

// cryptSHA512 returns a crypt(3) SHA-512 hash of the test password, made by
// openssl so that no hashing code has to live here.
func cryptSHA512(password string) (string, error) {
	out, err := exec.Command("openssl", "passwd", "-6", "-salt", "interopsalt", password).Output()
	if err != nil {
		return "", fmt.Errorf("openssl passwd: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// prepareVsftpd configures vsftpd with a virtual user.
//
// Authentication: vsftpd authenticates local users through PAM only, so the
// suite writes a PAM service file of its own, /etc/pam.d/ftpproxy-interop-
// <pid>-<n>, that checks the password with pam_userdb against a Berkeley DB
// file in the server's work directory (made with db5.3_load), and removes it
// when the server stops. The authenticated user is mapped to the system
// account "daemon" with guest_enable, and chrooted to the fresh root. No
// system user is created. pam_exec is not used: the helper process it forks
// confuses vsftpd's privileged parent, which then stops answering its
// session process (EPSV hangs).
//
// Container notes: seccomp_sandbox=NO, isolate=NO and isolate_network=NO
// keep vsftpd from using kernel features that sandboxes refuse; listen=YES
// and background=NO run it standalone in the foreground.
func prepareVsftpd(s *server) ([]string, error) {
	dbLoad, err := firstInPath("db5.3_load", "db_load")
	if err != nil {
		return nil, fmt.Errorf("%w (install db5.3-util: interop/install-peers.sh)", err)
	}
	dbBase := filepath.Join(s.dir, "users")
	load := exec.Command(dbLoad, "-T", "-t", "hash", dbBase+".db")
	load.Stdin = strings.NewReader(ftpUser + "\n" + ftpPass + "\n")
	if out, err := load.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%s: %v: %s", dbLoad, err, out)
	}
	pamService := fmt.Sprintf("ftpproxy-interop-%d-%s", os.Getpid(), filepath.Base(s.dir))
	pamFile := filepath.Join("/etc/pam.d", pamService)
	pam := fmt.Sprintf("auth required pam_userdb.so db=%s\naccount required pam_userdb.so db=%s\nsession required pam_permit.so\npassword required pam_deny.so\n", dbBase, dbBase)
	if err := os.WriteFile(pamFile, []byte(pam), 0o644); err != nil {
		return nil, fmt.Errorf("PAM service file: %w", err)
	}
	s.cleanup = append(s.cleanup, func() { os.Remove(pamFile) })
	empty := filepath.Join(s.dir, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		return nil, err
	}
	listen := "listen=YES\nlisten_ipv6=NO\nlisten_address=" + s.host
	if isIPv6(s.host) {
		listen = "listen=NO\nlisten_ipv6=YES\nlisten_address6=" + s.host
	}
	conf := fmt.Sprintf(`%s
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
`, listen, s.port, s.root, empty, pamService, s.kind.pasvLo, s.kind.pasvHi, filepath.Join(s.dir, "vsftpd.log"))
	confPath := filepath.Join(s.dir, "vsftpd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	return []string{filepath.Join(s.peers, "vsftpd/usr/sbin/vsftpd"), confPath}, nil
}

// preparePureFTPd configures pure-ftpd with a virtual user in a PureDB file
// made by its own pure-pw (from a passwd line carrying a crypt(3) hash, so
// that logins stay fast; pure-pw's own argon2 hashes cost about a second of
// CPU each).
func preparePureFTPd(s *server) ([]string, error) {
	hash, err := cryptSHA512(ftpPass)
	if err != nil {
		return nil, err
	}
	passwd := filepath.Join(s.dir, "pureftpd.passwd")
	pdb := filepath.Join(s.dir, "pureftpd.pdb")
	line := fmt.Sprintf("%s:%s:%d:%d::%s/./::::::::::::\n", ftpUser, hash, s.uid, s.gid, s.root)
	if err := os.WriteFile(passwd, []byte(line), 0o600); err != nil {
		return nil, err
	}
	pw := filepath.Join(s.peers, "pure-ftpd/usr/bin/pure-pw")
	if out, err := exec.Command(pw, "mkdb", pdb, "-f", passwd).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pure-pw mkdb: %v: %s", err, out)
	}
	return []string{
		filepath.Join(s.peers, "pure-ftpd/usr/sbin/pure-ftpd"),
		"-S", s.host + "," + strconv.Itoa(s.port),
		"-l", "puredb:" + pdb,
		"-E", // no anonymous logins
		"-H", // no reverse DNS
		"-p", fmt.Sprintf("%d:%d", s.kind.pasvLo, s.kind.pasvHi),
		"-u", strconv.Itoa(s.uid), // lowest uid allowed to log in
		"-c", "200", "-C", "200", // clients in total and per IP
		"-U", "133:022",
		"-g", filepath.Join(s.dir, "pure-ftpd.pid"),
		"-O", "clf:" + filepath.Join(s.dir, "transfer.log"),
	}, nil
}

// prepareProFTPd configures proftpd with AuthUserFile/AuthGroupFile (no
// system accounts involved) and runs it with -n (foreground).
func prepareProFTPd(s *server) ([]string, error) {
	hash, err := cryptSHA512(ftpPass)
	if err != nil {
		return nil, err
	}
	passwd := filepath.Join(s.dir, "ftpd.passwd")
	group := filepath.Join(s.dir, "ftpd.group")
	if err := os.WriteFile(passwd, []byte(fmt.Sprintf("%s:%s:%d:%d::%s:/bin/false\n", ftpUser, hash, s.uid, s.gid, s.root)), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(group, []byte(fmt.Sprintf("%s:x:%d:\n", ftpUser, s.gid)), 0o600); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`ServerName "interop"
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
`, s.port, s.host, s.dir, passwd, group, s.kind.pasvLo, s.kind.pasvHi)
	confPath := filepath.Join(s.dir, "proftpd.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	return []string{filepath.Join(s.peers, "proftpd/usr/sbin/proftpd"), "-n", "-c", confPath}, nil
}

func firstInPath(names ...string) (string, error) {
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p, nil
		}
	}
	return "", errors.New("none of " + strings.Join(names, ", ") + " found in PATH")
}
