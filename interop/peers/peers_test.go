package peers

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestReadTransfers(t *testing.T) {
	log := strings.Join([]string{
		`{"level":"info","message":"session start","client":"127.0.0.4:5000"}`,
		`{"level":"info","message":"transfer","down":67108864,"up":0}`,
		`not json at all`,
		`{"level":"info","message":"transfer","up":1048576}`,
		`{"level":"debug","message":"transfer done","down":5}`,
		`{"level":"info","message":"transfer","down":1}`,
		``,
	}, "\n")
	p := filepath.Join(t.TempDir(), "ftpproxy.log")
	if err := os.WriteFile(p, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	downs, ups, err := ReadTransfers(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int64{67108864, 1}; !slices.Equal(downs, want) {
		t.Errorf("downs %v, want %v", downs, want)
	}
	if want := []int64{0, 1048576}; !slices.Equal(ups, want) {
		t.Errorf("ups %v, want %v", ups, want)
	}
	if _, _, err := ReadTransfers(filepath.Join(t.TempDir(), "missing.log")); err == nil {
		t.Error("no error for a missing log")
	}
}

func TestKinds(t *testing.T) {
	for _, want := range []struct {
		name   string
		lo, hi int
		mlsd   bool
	}{{"vsftpd", 22000, 22099, false}, {"pure-ftpd", 22300, 22499, true}, {"proftpd", 22200, 22299, true}} {
		k, ok := KindByName(want.name)
		if !ok || k.PasvLo != want.lo || k.PasvHi != want.hi || k.MLSD != want.mlsd || k.prepare == nil {
			t.Errorf("KindByName(%q) = %+v, %v", want.name, k, ok)
		}
	}
	if _, ok := KindByName("wu-ftpd"); ok {
		t.Error("KindByName found an unknown server")
	}
}

// testServer is a Server as StartServer fills it in before prepare runs.
func testServer(kind Kind, opts ...ServerOption) *Server {
	s := &Server{Kind: kind, Peers: "/peers", Dir: "/work/x", Root: "/work/x/root", Host: "127.0.0.3", Port: 2100,
		PasvLo: kind.PasvLo, PasvHi: kind.PasvHi, UID: 1, GID: 1}
	for _, o := range opts {
		o(s)
	}
	return s
}

func TestServerConfigPassivePorts(t *testing.T) {
	for _, c := range []struct {
		opts   []ServerOption
		lo, hi string
	}{{nil, "", ""}, {[]ServerOption{PassivePorts(23000, 23049)}, "23000", "23049"}} {
		vs := testServer(Vsftpd, c.opts...)
		lo, hi := c.lo, c.hi
		if lo == "" {
			lo, hi = "22000", "22099"
		}
		conf := vsftpdConfig(vs, "/work/x/empty", "svc")
		for _, line := range []string{"pasv_min_port=" + lo, "pasv_max_port=" + hi, "listen_address=127.0.0.3", "listen_port=2100", "local_root=/work/x/root", "pam_service_name=svc"} {
			if !strings.Contains(conf, "\n"+line+"\n") {
				t.Errorf("vsftpd.conf lacks %q:\n%s", line, conf)
			}
		}

		pf := testServer(PureFTPd, c.opts...)
		lo, hi = c.lo, c.hi
		if lo == "" {
			lo, hi = "22300", "22499"
		}
		args := pureFTPdArgs(pf, "/work/x/pureftpd.pdb")
		if i := slices.Index(args, "-p"); i < 0 || args[i+1] != lo+":"+hi {
			t.Errorf("pure-ftpd arguments %q: want -p %s:%s", args, lo, hi)
		}
		if i := slices.Index(args, "-S"); i < 0 || args[i+1] != "127.0.0.3,2100" {
			t.Errorf("pure-ftpd arguments %q: want -S 127.0.0.3,2100", args)
		}

		pr := testServer(ProFTPd, c.opts...)
		lo, hi = c.lo, c.hi
		if lo == "" {
			lo, hi = "22200", "22299"
		}
		conf = proftpdConfig(pr, "/work/x/ftpd.passwd", "/work/x/ftpd.group")
		for _, line := range []string{"PassivePorts " + lo + " " + hi, "Port 2100", "DefaultAddress 127.0.0.3", "AuthUserFile /work/x/ftpd.passwd", "PidFile /work/x/proftpd.pid"} {
			if !strings.Contains(conf, "\n"+line+"\n") {
				t.Errorf("proftpd.conf lacks %q:\n%s", line, conf)
			}
		}
	}
}

func TestVsftpdIPv6(t *testing.T) {
	s := testServer(Vsftpd)
	s.Host = "::1"
	conf := vsftpdConfig(s, "/e", "svc")
	if !strings.HasPrefix(conf, "listen=NO\nlisten_ipv6=YES\nlisten_address6=::1\n") {
		t.Errorf("IPv6 vsftpd.conf starts:\n%s", conf[:80])
	}
}

func TestPasswdLines(t *testing.T) {
	s := testServer(PureFTPd)
	if got, want := pureFTPdPasswd(s, "$6$salt$hash"), "ftptest:$6$salt$hash:1:1::/work/x/root/./::::::::::::\n"; got != want {
		t.Errorf("pure-ftpd passwd line %q, want %q", got, want)
	}
	if got := vsftpdPAM("/work/x/users"); !strings.Contains(got, "auth required pam_userdb.so db=/work/x/users\n") {
		t.Errorf("PAM file %q", got)
	}
}

func TestCryptSHA512(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("no openssl")
	}
	h, err := cryptSHA512(Password)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$6$interopsalt$") || len(h) != len("$6$interopsalt$")+86 {
		t.Errorf("hash %q is not crypt(3) SHA-512 with the salt interopsalt", h)
	}
	if h2, _ := cryptSHA512(Password); h2 != h {
		t.Errorf("hash not stable: %q, then %q", h, h2)
	}
}

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	a, err := WriteRandom(filepath.Join(dir, "a.bin"), 3<<20+5, 7)
	if err != nil {
		t.Fatal(err)
	}
	b, err := WriteRandom(filepath.Join(dir, "b.bin"), 3<<20+5, 7)
	if err != nil {
		t.Fatal(err)
	}
	c, err := WriteRandom(filepath.Join(dir, "c.bin"), 3<<20+5, 8)
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "a.bin" || a.Size != 3<<20+5 || a.Sum != b.Sum || a.Sum == c.Sum {
		t.Errorf("a %+v, b %+v, c %+v: same seed must give the same bytes, another seed others", a, b, c)
	}
	if err := SameContent(b.Path, a.Size, a.Sum); err != nil {
		t.Error(err)
	}
	if err := SameContent(c.Path, a.Size, a.Sum); err == nil {
		t.Error("SameContent accepted different bytes")
	}
	if err := SameContent(a.Path, a.Size-1, a.Sum); err == nil {
		t.Error("SameContent accepted another size")
	}
	data, err := os.ReadFile(a.Path)
	if err != nil {
		t.Fatal(err)
	}
	if SumBytes(data) != a.Sum {
		t.Error("SumBytes differs from WriteRandom's sum")
	}
	empty, err := WriteRandom(filepath.Join(dir, "empty.bin"), 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if empty.Sum != SumBytes(nil) {
		t.Errorf("empty file sum %s", empty.Sum)
	}
}

func TestShellQuoteTail(t *testing.T) {
	if got, want := ShellQuote([]string{"curl", "-Q", "RNFR a b", "", "it's"}), `curl -Q 'RNFR a b' '' 'it'\''s'`; got != want {
		t.Errorf("ShellQuote = %s, want %s", got, want)
	}
	if got := Tail("  abcdef \n", 3); got != "...def" {
		t.Errorf("Tail = %q", got)
	}
	if got := Tail(" abc ", 3); got != "abc" {
		t.Errorf("Tail = %q", got)
	}
}

func TestTargetLogin(t *testing.T) {
	u, p := Target{}.login()
	if u != User || p != Password {
		t.Errorf("defaults %q %q", u, p)
	}
	u, p = Target{User: "other", Password: "wrong"}.login()
	if u != "other" || p != "wrong" {
		t.Errorf("explicit %q %q", u, p)
	}
	f := Ftplib{Script: "/s.py"}
	argv := f.argv(Target{Host: "h", Port: 21, Source: "127.0.0.4", Mode: "epsv"}, 60, "get", "r", "l")
	want := []string{"python3", "/s.py", "--host", "h", "--port", "21", "--user", User, "--password", Password,
		"--source", "127.0.0.4", "--mode", "epsv", "--timeout", "60", "get", "r", "l"}
	if !slices.Equal(argv, want) {
		t.Errorf("ftplib argv %q, want %q", argv, want)
	}
	if a := (Curl{}).args(Target{Source: "127.0.0.4", Mode: "port"}); !slices.Contains(a, "--disable-eprt") || a[slices.Index(a, "-P")+1] != "127.0.0.4" {
		t.Errorf("curl port args %q", a)
	}
}

func TestStartServerRefuses(t *testing.T) {
	ctx := context.Background()
	open := t.TempDir()
	if err := os.Chmod(open, 0o755); err != nil {
		t.Fatal(err)
	}
	closed := t.TempDir()
	if err := os.Chmod(closed, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		kind Kind
		work string
		opts []ServerOption
		want string
	}{
		{Kind{Name: "wu-ftpd"}, open, nil, "use one of Kinds()"},
		{ProFTPd, open, []ServerOption{PassivePorts(23000, 23000)}, "at least two ports"},
		{PureFTPd, open, []ServerOption{PassivePorts(0, 10)}, "at least two ports"},
		{Vsftpd, open, []ServerOption{PassivePorts(65000, 65536)}, "at least two ports"},
		{Vsftpd, closed, nil, "chmod 755"},
	} {
		s, err := StartServer(ctx, c.kind, "/nonexistent", c.work, "127.0.0.1", 1, c.opts...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			if s != nil {
				s.Stop()
			}
			t.Errorf("StartServer(%s, %s): %v, want an error with %q", c.kind.Name, c.work, err, c.want)
		}
	}
	if ents, _ := os.ReadDir(open); len(ents) != 0 {
		t.Errorf("refused starts left %d entries in the work directory", len(ents))
	}
}
