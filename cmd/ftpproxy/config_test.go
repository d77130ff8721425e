package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"io"
	"io/fs"
	"math/big"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ftpproxy/ftpproxy/nat"
)

const examplePath = "../../examples/ftpproxy.yaml"

// writeConfigFile writes text to ftpproxy.yaml in a new directory and returns
// its path.
func writeConfigFile(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ftpproxy.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigFileErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		args []string // more flags, after --config
		want string   // the error after "config PATH:"
	}{
		// Keys.
		{"unknown key, close to a flag", "upstream: h:21\npassive_port: 21000\n", nil,
			`2: unknown key "passive_port" (did you mean passive-ports?)`},
		{"unknown key written as a flag", "--max-sessions: 5\n", nil,
			`1: unknown key "--max-sessions" (did you mean max-sessions?)`},
		{"unknown key", "upstream: h:21\n\ncolour: red\n", nil, `3: unknown key "colour"`},
		{"config in the file", "upstream: h:21\nconfig: other.yaml\n", nil,
			"2: config: not allowed in the configuration file"},
		{"duplicate key", "upstream: h:21\nmax-sessions: 1\nmax-sessions: 2\n", nil,
			`3: duplicate key "max-sessions" (first at line 2)`},
		{"not a mapping", "- upstream\n", nil,
			`1: want a mapping of setting names to values, such as "upstream: 10.0.0.5:21"`},
		{"a list as a key", "upstream: h:21\n? [a, b]\n: c\n", nil, "2: a key must be a setting name"},

		// Types.
		{"string for an integer", "upstream: h:21\nmax-sessions: \"100\"\n", nil, "2: max-sessions: want an integer"},
		{"float for an integer", "max-sessions: 1.5\n", nil, "1: max-sessions: want an integer"},
		{"integer out of range", "max-sessions: 99999999999999999999\n", nil, "1: max-sessions: want an integer"},
		{"nothing for an integer", "max-sessions:\n", nil, "1: max-sessions: want an integer"},
		{"list for an integer", "max-sessions: [1]\n", nil, "1: max-sessions: want an integer"},
		{"string for a bool", "proxy-protocol-chained: \"true\"\n", nil, "1: proxy-protocol-chained: want true or false"},
		{"yes for a bool", "proxy-protocol-chained: yes\n", nil, "1: proxy-protocol-chained: want true or false"},
		{"integer for a bool", "proxy-protocol-chained: 1\n", nil, "1: proxy-protocol-chained: want true or false"},
		{"list for a string", "upstream-data-mode: [same]\n", nil, "1: upstream-data-mode: want a string"},
		{"mapping for a string", "upstream-ca:\n  file: h\n  path: 21\n", nil, "2: upstream-ca: want a string"},
		{"mapping for upstream", "upstream:\n  host: h\n  port: 21\n", nil, "2: upstream: want a string or a list of strings"},
		{"bool for a string", "upstream: h:21\nlog-level: true\n", nil, "2: log-level: want a string"},
		{"integer for a duration", "upstream: h:21\ndrain-timeout: 30\n", nil, `2: drain-timeout: want a duration such as "30s"`},
		{"mapping for a list", "listen: {a: b}\n", nil, "1: listen: want a string or a list of strings"},
		{"mapping in a list", "listen:\n  - :21\n  - {a: b}\n", nil, "3: listen: want a string or a list of strings"},
		{"list in a comma list", "allow: [[10.0.0.0/8]]\n", nil, "1: allow: want a string or a list of strings"},
		{"an alias to a mapping", "x: &m {a: b}\n", nil, `1: unknown key "x"`},

		// Values, refused by the flag itself or by parseFlags' checks.
		{"bad duration", "upstream: h:21\ndrain-timeout: soon\n", nil, `2: drain-timeout: "soon": want a duration such as "30s"`},
		{"negative duration", "upstream: h:21\nidle-timeout: -1s\n", nil, "2: idle-timeout -1s: want a positive duration such as 30s"},
		{"negative integer", "upstream: h:21\nmax-sessions: -1\n", nil, "2: max-sessions -1: want 0 or more"},
		{"bad port range", "upstream: h:21\npassive-ports: 30000-20000\n", nil,
			`2: passive-ports: nat: bad port range: "30000-20000", want LO-HI with 1 <= LO <= HI <= 65535`},
		{"bad item of a repeatable flag", "upstream: h:21\nlisten:\n  - :21\n  - 2121\n", nil,
			`4: listen "2121": want host:port, e.g. :2121 or [::1]:2121`},
		{"bad item of a comma list", "upstream: h:21\nallow:\n  - 10.0.0.0/8\n  - x\n", nil, `4: allow: nat: bad network: "x": want an IP address or CIDR network`},
		{"bad network in a string", "upstream: h:21\ndeny: 10.0.0.0/8,::/129\n", nil, `2: deny: nat: bad network: "::/129": want an IP address or CIDR network`},
		{"bad advertise rule", "upstream: h:21\nadvertise:\n  - 203.0.113.7\n  - 10.0.0.0/33=10.1.1.1\n", nil,
			`4: advertise nat: bad advertised address: "10.0.0.0/33=10.1.1.1": "10.0.0.0/33" is not a CIDR`},
		{"check across two keys", "upstream: h:21\nproxy-protocol-chained: true\n", nil,
			"2: proxy-protocol-chained needs --proxy-protocol-from: it names the chained peers"},
		{"bad upstream", "upstream: 21\n", nil, `1: upstream "21": want HOST:PORT, e.g. 10.0.0.5:21`},
		{"bad value given on the command line too", "upstream: h:21\nmax-sessions: many\n", []string{"--max-sessions", "5"},
			"2: max-sessions: want an integer"},

		// The file as a whole.
		{"syntax", "upstream: h:21\nlisten: a: b\n", nil, "2: mapping values are not allowed in this context"},
		{"two documents", "upstream: h:21\n---\nmax-sessions: 1\n", nil, "2: more than one YAML document"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkConfigError(t, tt.file, tt.args, tt.want) })
	}
}

// checkConfigError checks that the configuration file with text file,
// with args on the command line, is refused with exactly "config PATH:"
// and want.
func checkConfigError(t *testing.T, file string, args []string, want string) {
	t.Helper()
	path := writeConfigFile(t, file)
	_, err := parseFlags(append([]string{"--config", path}, args...), io.Discard)
	if err == nil {
		t.Fatal("accepted")
	}
	if want := "config " + path + ":" + want; err.Error() != want {
		t.Fatalf("error\n %s\nwant\n %s", err, want)
	}
}

func TestConfigFileErrorsKeepTheirCause(t *testing.T) {
	path := writeConfigFile(t, "upstream: h:21\npassive-ports: 0-10\n")
	if _, err := parseFlags([]string{"--config", path}, io.Discard); !errors.Is(err, nat.ErrPortRange) {
		t.Errorf("error %v is not nat.ErrPortRange", err)
	}
	_, err := parseFlags([]string{"--config", filepath.Join(t.TempDir(), "none.yaml")}, io.Discard)
	if !errors.Is(err, fs.ErrNotExist) || !strings.HasPrefix(err.Error(), "--config: ") {
		t.Errorf("missing file: %v", err)
	}
}

// An error about a value from the command line names the flag, not the
// file, even when the file has the same key.
func TestConfigFileCommandLineErrorsAreNotLocated(t *testing.T) {
	path := writeConfigFile(t, "upstream: h:21\nmax-sessions: 5\n")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-sessions", "-1"}, "--max-sessions -1: want 0 or more"},
		{[]string{"--upstream", "nohostport"}, `--upstream "nohostport": want HOST:PORT, e.g. 10.0.0.5:21`},
	} {
		_, err := parseFlags(append([]string{"--config", path}, tt.args...), io.Discard)
		if err == nil || err.Error() != tt.want {
			t.Errorf("%v: error %v, want %s", tt.args, err, tt.want)
		}
	}
	empty := writeConfigFile(t, "# nothing yet\n")
	if _, err := parseFlags([]string{"--config", empty}, io.Discard); err == nil || !strings.HasPrefix(err.Error(), "--upstream is required") {
		t.Errorf("empty file without --upstream: %v", err)
	}
}

func TestConfigFileValues(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		check func(*options) bool
	}{
		{"empty file", "", func(o *options) bool { return slices.Equal(o.listen, []string{":21"}) }},
		{"only comments", "# upstream: x:21\n", func(o *options) bool { return o.upstream == "h:21" }},
		{"listen as a string", "listen: 127.0.0.1:2121\n", func(o *options) bool {
			return slices.Equal(o.listen, []string{"127.0.0.1:2121"})
		}},
		{"listen as a flow list", `listen: [":21", "[::]:21"]` + "\n", func(o *options) bool {
			return slices.Equal(o.listen, []string{":21", "[::]:21"})
		}},
		{"listen as a block list", "listen:\n  - 127.0.0.1:2121\n  - \"[::1]:2121\"\n", func(o *options) bool {
			return slices.Equal(o.listen, []string{"127.0.0.1:2121", "[::1]:2121"})
		}},
		{"an empty list is the default", "listen: []\n", func(o *options) bool { return slices.Equal(o.listen, []string{":21"}) }},
		{"advertise as a list", "advertise: [203.0.113.7, \"10.0.0.0/8=10.1.1.1\"]\n", func(o *options) bool {
			return o.advertiser.Static == netip.MustParseAddr("203.0.113.7") && len(o.advertiser.Rules) == 1
		}},
		{"advertise as a string", "advertise: 203.0.113.7\n", func(o *options) bool {
			return o.advertiser.Static == netip.MustParseAddr("203.0.113.7") && len(o.advertiser.Rules) == 0
		}},
		{"allow as a string", "allow: 10.0.0.0/8,192.168.0.0/16\n", func(o *options) bool { return len(o.allow) == 2 }},
		{"allow as a list", "allow: [10.0.0.0/8, 192.168.0.0/16, 2001:db8::/32]\n", func(o *options) bool { return len(o.allow) == 3 }},
		{"deny as a block list", "deny:\n  - 10.9.0.0/16\n", func(o *options) bool { return len(o.deny) == 1 }},
		{"proxy-protocol-from as a list", "proxy-protocol-from: [127.0.0.1, 10.0.0.0/8]\nproxy-protocol-chained: true\n",
			func(o *options) bool { return len(o.ppFrom) == 2 && o.chained }},
		{"integers, durations and strings", "max-sessions: 100\nmax-sessions-per-ip: 0x10\nidle-timeout: 1m30s\nlog-level: debug\n",
			func(o *options) bool {
				return o.maxSessions == 100 && o.maxPerIP == 16 && o.idleTimeout == 90*time.Second && o.logLevel == zerolog.DebugLevel
			}},
		{"a number for a string flag", "passive-ports: 21000\n", func(o *options) bool { return o.passivePorts.Size() == 1 }},
		{"a bool set to false", "proxy-protocol-chained: false\n", func(o *options) bool { return !o.chained }},
		{"anchors and aliases", "passive-ports: &p 21000-21009\nactive-ports: *p\n", func(o *options) bool {
			return o.passivePorts.Size() == 10 && o.activePorts.Size() == 10
		}},
		{"an explicit document", "---\nmax-sessions: 3\n...\n", func(o *options) bool { return o.maxSessions == 3 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfigFile(t, tt.file)
			o, err := parseFlags([]string{"--upstream", "h:21", "--config", path}, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(o) {
				t.Errorf("options from %q: %+v", tt.file, o)
			}
		})
	}
}

func TestConfigFileCommandLineWins(t *testing.T) {
	path := writeConfigFile(t, `
listen: ["127.0.0.1:2121", "[::1]:2121"]
upstream: 10.0.0.5:21
max-sessions: 100
log-level: debug
proxy-protocol-from: [10.0.0.10, 10.0.0.11]
proxy-protocol-chained: true
allow: [10.0.0.0/8]
idle-timeout: 1m
`)
	tests := []struct {
		args  []string
		check func(*options) bool
	}{
		{nil, func(o *options) bool {
			return slices.Equal(o.listen, []string{"127.0.0.1:2121", "[::1]:2121"}) && o.upstream == "10.0.0.5:21" &&
				o.maxSessions == 100 && o.logLevel == zerolog.DebugLevel && len(o.ppFrom) == 2 && o.chained &&
				len(o.allow) == 1 && o.idleTimeout == time.Minute
		}},
		// A repeatable flag replaces the file's list.
		{[]string{"--listen", ":2122"}, func(o *options) bool { return slices.Equal(o.listen, []string{":2122"}) }},
		{[]string{"--listen", ":2122", "--listen", ":2123"}, func(o *options) bool {
			return slices.Equal(o.listen, []string{":2122", ":2123"})
		}},
		{[]string{"--upstream", "10.0.0.6:21"}, func(o *options) bool { return o.upstream == "10.0.0.6:21" }},
		{[]string{"--max-sessions", "0"}, func(o *options) bool { return o.maxSessions == 0 }},
		{[]string{"--log-level", "warn"}, func(o *options) bool { return o.logLevel == zerolog.WarnLevel }},
		{[]string{"--proxy-protocol-chained=false"}, func(o *options) bool { return !o.chained && len(o.ppFrom) == 2 }},
		{[]string{"--allow", "192.168.0.0/16,172.16.0.0/12"}, func(o *options) bool { return len(o.allow) == 2 }},
		{[]string{"--idle-timeout", "2m"}, func(o *options) bool { return o.idleTimeout == 2*time.Minute }},
		// The flags may come before or after --config.
		{[]string{"--max-sessions", "7", "--config", path}, func(o *options) bool { return o.maxSessions == 7 }},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			o, err := parseFlags(append([]string{"--config", path}, tt.args...), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(o) {
				t.Errorf("options: %+v", o)
			}
		})
	}
}

// registeredFlags returns each flag parseFlags registers, with its default
// as --help shows it ("" when it has none).
func registeredFlags(t *testing.T) map[string]string {
	t.Helper()
	var help bytes.Buffer
	if _, err := parseFlags([]string{"--help"}, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	flags := map[string]string{}
	for _, block := range regexp.MustCompile(`(?m)^  -`).Split(help.String(), -1)[1:] {
		name, _, _ := strings.Cut(block, " ")
		name, _, _ = strings.Cut(name, "\n")
		def := ""
		if m := regexp.MustCompile(`\(default (.+)\)\n*$`).FindStringSubmatch(block); m != nil {
			def = m[1]
		}
		flags[name] = def
	}
	if len(flags) < 20 {
		t.Fatalf("found only %d flags in --help:\n%s", len(flags), help.String())
	}
	return flags
}

// exampleKeys returns the keys of the example, set or commented out ("#
// key: value"), and the line of each.
func exampleKeys(t *testing.T, text string) (set, commented map[string]int) {
	t.Helper()
	set, commented = map[string]int{}, map[string]int{}
	key := regexp.MustCompile(`^(# )?([a-z][a-z0-9-]*):(?: |$)`)
	for i, line := range strings.Split(text, "\n") {
		m := key.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		keys := set
		if m[1] != "" {
			keys = commented
		}
		if _, ok := set[m[2]]; ok {
			t.Errorf("line %d: %s is set above", i+1, m[2])
		}
		if _, ok := commented[m[2]]; ok {
			t.Errorf("line %d: %s is commented out above", i+1, m[2])
		}
		keys[m[2]] = i + 1
	}
	return set, commented
}

func readExampleConfig(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestExampleConfigValidates(t *testing.T) {
	o, err := parseFlags([]string{"--config", examplePath}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.upstream == "" || len(o.listen) != 2 || o.passivePorts == nil {
		t.Errorf("options from the example: %+v", o)
	}
}

// The example names every flag, once, as a key or a commented-out key, and
// nothing else.
func TestExampleConfigHasEveryFlag(t *testing.T) {
	flags := registeredFlags(t)
	set, commented := exampleKeys(t, readExampleConfig(t))
	for name := range flags {
		_, isSet := set[name]
		_, isCommented := commented[name]
		switch {
		case name == configFlag:
			if isSet || isCommented {
				t.Errorf("the example sets %s", name)
			}
		case !isSet && !isCommented:
			t.Errorf("flag --%s is missing from %s", name, examplePath)
		}
	}
	for _, keys := range []map[string]int{set, commented} {
		for name, line := range keys {
			if _, ok := flags[name]; !ok {
				t.Errorf("%s:%d: %s is not a flag", examplePath, line, name)
			}
		}
	}
}

// uncommentExample returns the example with the commented-out keys for which keep
// is true set.
func uncommentExample(text string, keep func(key string) bool) string {
	key := regexp.MustCompile(`^# ([a-z][a-z0-9-]*):`)
	lines := strings.Split(text, "\n")
	for i, line := range lines {
		if m := key.FindStringSubmatch(line); m != nil && keep(m[1]) {
			lines[i] = strings.TrimPrefix(line, "# ")
		}
	}
	return strings.Join(lines, "\n")
}

// A commented-out key whose flag has a default shows that default: setting
// them all changes nothing.
func TestExampleConfigShowsDefaults(t *testing.T) {
	flags := registeredFlags(t)
	key := regexp.MustCompile(`^# ([a-z][a-z0-9-]*):`)
	defaults := []string{"upstream: h:21"}
	for _, line := range strings.Split(readExampleConfig(t), "\n") {
		if m := key.FindStringSubmatch(line); m != nil && flags[m[1]] != "" {
			defaults = append(defaults, strings.TrimPrefix(line, "# "))
		}
	}
	if len(defaults) < 10 {
		t.Fatalf("only %d commented-out defaults found", len(defaults)-1)
	}
	want, err := parseFlags([]string{"--upstream", "h:21"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(defaults, "\n") + "\n"
	got, err := parseFlags([]string{"--config", writeConfigFile(t, text)}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the commented-out defaults differ from the flags' defaults:\n%s\n got %+v\nwant %+v", text, got, want)
	}
}

// Every commented-out value is valid too, all of them at once. The files
// they name are not here: the command line gives a certificate instead.
func TestExampleConfigCommentedValuesValidate(t *testing.T) {
	text := uncommentExample(readExampleConfig(t), func(string) bool { return true })
	cert, key := exampleTestCertificate(t)
	users := filepath.Join(t.TempDir(), "forward-users")
	if err := os.WriteFile(users, []byte(testProxyUserLine), 0o600); err != nil {
		t.Fatal(err)
	}
	// forward: false is the default the example shows; the forward-mode
	// settings beside it need it on.
	o, err := parseFlags([]string{"--config", writeConfigFile(t, text), "--tls-cert", cert, "--tls-key", key,
		"--forward", "--forward-users", users}, io.Discard)
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	if !o.advertiser.Static.IsValid() || len(o.allow) == 0 || o.activePorts == nil {
		t.Errorf("options: %+v", o)
	}
}

// exampleTestCertificate writes a self-signed certificate and its key, PEM,
// and returns their paths.
func exampleTestCertificate(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "ftpproxy.test"},
		DNSNames:     []string{"ftpproxy.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// mainArgsEnv carries the arguments for main when the test binary runs
// itself as ftpproxy, one per line.
const mainArgsEnv = "FTPPROXY_TEST_MAIN_ARGS"

// TestCheckConfigCommand runs "ftpproxy check-config" through main, in a
// child process, and checks its exit code and output.
func TestCheckConfigCommand(t *testing.T) {
	if args, ok := os.LookupEnv(mainArgsEnv); ok {
		os.Args = append([]string{"ftpproxy"}, strings.Split(args, "\n")...)
		main()
		os.Exit(0)
	}
	good := writeConfigFile(t, "upstream: 10.0.0.5:21\nlisten: [127.0.0.1:0]\npassive-ports: 21000-21099\n")
	bad := writeConfigFile(t, "upstream: 10.0.0.5:21\nmax-sessions: many\n")
	tests := []struct {
		args       []string
		code       int
		wantStdout string
		wantStderr string
	}{
		{[]string{"check-config", "--config", good}, 0, "ftpproxy: config OK\n", ""},
		{[]string{"check-config", "--config", examplePath}, 0, "ftpproxy: config OK\n", ""},
		{[]string{"check-config", "--config", bad}, 2, "", "ftpproxy: config " + bad + ":2: max-sessions: want an integer\n"},
		{[]string{"check-config", "--config", good, "--max-line-length", "10"}, 2, "",
			"ftpproxy: --max-line-length 10: want at least 512 (RFC 959 pathnames need room)\n"},
		{[]string{"check-config", "--config", good, "--advertise", "{{ NoSuchFunc }}"}, 2, "", "ftpproxy: --advertise "},
		{[]string{"check-config"}, 2, "", "ftpproxy: --upstream is required: the FTP server's HOST:PORT (or --forward)\n"},
		{[]string{"check-config", "--upstream", "10.0.0.5:21"}, 0, "ftpproxy: config OK\n", ""},
		{[]string{"check-config", "--help"}, 0, "", "Usage:"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCheckConfigCommand$")
			cmd.Env = append(os.Environ(), mainArgsEnv+"="+strings.Join(tt.args, "\n"))
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				code = exit.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.code || stdout.String() != tt.wantStdout || !strings.HasPrefix(stderr.String(), tt.wantStderr) ||
				(tt.wantStderr == "" && stderr.Len() > 0) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr %q...",
					code, stdout.String(), stderr.String(), tt.code, tt.wantStdout, tt.wantStderr)
			}
		})
	}
}
