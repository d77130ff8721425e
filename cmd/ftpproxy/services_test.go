package main

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// twoServices is a good file with two services, for the cases that change
// one thing of it.
const twoServices = `log-level: debug
idle-timeout: 1m
services:
  files:
    listen: 127.0.0.1:2121
    upstream: 10.0.0.5:21
    passive-ports: 21000-21099
  archive:
    listen: ["127.0.0.1:2122", "[::1]:2122"]
    upstream: [10.0.1.5:21, 10.0.1.6:21]
    passive-ports: 21100-21199
    idle-timeout: 5m
`

func TestServicesConfigErrors(t *testing.T) {
	cert, key := exampleTestCertificate(t)
	tests := []struct {
		name string
		file string
		args []string
		want string // the error after "config PATH:"
	}{
		{"unknown key in a service", "services:\n  a:\n    upstream: h:21\n    passive_port: 21000\n", nil,
			`4: service "a": unknown key "passive_port" (did you mean passive-ports?)`},
		{"process-wide key in a service", "services:\n  a:\n    upstream: h:21\n    log-level: debug\n", nil,
			`4: service "a": log-level: a setting of the whole process, at the top level only`},
		{"health in a service", "services:\n  a:\n    health: 127.0.0.1:8021\n", nil,
			`3: service "a": health: a setting of the whole process, at the top level only`},
		{"data path in a service", "services:\n  a:\n    upstream: h:21\n    data-path: kernel\n", nil,
			`4: service "a": data-path: a setting of the whole process, at the top level only`},
		{"services in a service", "services:\n  a:\n    services: {}\n", nil,
			`3: service "a": services: a setting of the whole process, at the top level only`},
		{"config in a service", "services:\n  a:\n    config: x.yaml\n", nil,
			`3: service "a": config: not allowed in the configuration file`},
		{"duplicate key in a service", "services:\n  a:\n    upstream: h:21\n    upstream: g:21\n", nil,
			`4: service "a": duplicate key "upstream" (first at line 3)`},
		{"duplicate service", "services:\n  a:\n    upstream: h:21\n  b:\n    upstream: h:21\n  a:\n    upstream: g:21\n", nil,
			`6: duplicate service "a" (first at line 2)`},
		{"duplicate services key", "services:\n  a: {upstream: h:21}\nservices:\n  b: {upstream: h:21}\n", nil,
			`3: duplicate key "services" (first at line 1)`},
		{"bad service name", "services:\n  Files:\n    upstream: h:21\n", nil,
			`2: service name "Files": want lower-case letters, digits, '.', '_' and '-', at most 63`},
		{"no services", "services: {}\n", nil,
			`1: services: want a mapping of service names to their settings, such as "files: {listen: \":21\", upstream: 10.0.0.5:21}"`},
		{"services as a list", "services:\n  - name: a\n    upstream: h:21\n", nil,
			`1: services: want a mapping of service names to their settings, such as "files: {listen: \":21\", upstream: 10.0.0.5:21}"`},
		{"a service that is not a mapping", "services:\n  a: h:21\n", nil,
			`2: service "a": want a mapping of settings, such as "upstream: 10.0.0.5:21"`},
		{"upstream missing", "services:\n  a:\n    listen: :2121\n", nil,
			`2: service "a": upstream is required: the FTP server's HOST:PORT (or --forward)`},
		{"bad upstream in a pool", "services:\n  a:\n    upstream:\n      - h:21\n      - h\n", nil,
			`5: service "a": upstream "h": want HOST:PORT, e.g. 10.0.0.5:21`},
		{"a server twice in a pool", "services:\n  a:\n    upstream: [h:21, g:21, h:21]\n", nil,
			`3: service "a": upstream "h:21": named twice`},
		{"listen at the top level", "listen: :21\nservices:\n  a:\n    upstream: h:21\n", nil,
			"1: listen: with services, set it in each service"},
		{"upstream at the top level", "upstream: h:21\nservices:\n  a:\n    upstream: h:21\n", nil,
			"1: upstream: with services, set it in each service"},
		{"passive-ports at the top level", "services:\n  a:\n    upstream: h:21\npassive-ports: 21000-21099\n", nil,
			"4: passive-ports: with services, set it in each service"},
		{"unknown key at the top level", "services:\n  a:\n    upstream: h:21\ncolour: red\n", nil, `4: unknown key "colour"`},
		{"bad type at the top level", "max-sessions: many\nservices:\n  a:\n    upstream: h:21\n", nil,
			"1: max-sessions: want an integer"},
		{"bad type in a service", "services:\n  a:\n    upstream: h:21\n    max-sessions: many\n", nil,
			`4: service "a": max-sessions: want an integer`},
		{"bad value in a service", "services:\n  a:\n    upstream: h:21\n    max-sessions: -1\n", nil,
			`4: service "a": max-sessions -1: want 0 or more`},
		{"bad shared value, named with the first service", "max-sessions: -1\nservices:\n  a:\n    upstream: h:21\n", nil,
			`1: service "a": max-sessions -1: want 0 or more`},
		{"two services on one address", "services:\n  a:\n    listen: 127.0.0.1:2121\n    upstream: h:21\n  b:\n    listen: [127.0.0.1:2122, 127.0.0.1:2121]\n    upstream: h:21\n", nil,
			`6: service "b": listen 127.0.0.1:2121: service "a" listens there too (listen 127.0.0.1:2121)`},
		{"a wildcard and an address on one port", "services:\n  a:\n    listen: 127.0.0.1:2121\n    upstream: h:21\n  b:\n    listen: :2121\n    upstream: h:21\n", nil,
			`6: service "b": listen :2121: service "a" listens there too (listen 127.0.0.1:2121)`},
		{"plain and implicit on one address", "tls-cert: " + cert + "\ntls-key: " + key + "\nservices:\n  a:\n    listen: 127.0.0.1:2121\n    upstream: h:21\n  b:\n    listen: 127.0.0.1:2122\n    listen-implicit: 127.0.0.1:2121\n    upstream: h:21\n", nil,
			`9: service "b": listen-implicit 127.0.0.1:2121: service "a" listens there too (listen 127.0.0.1:2121)`},
		{"the default listen address twice", "services:\n  a:\n    upstream: h:21\n  b:\n    upstream: h:21\n", nil,
			`4: service "b": listen :21: service "a" listens there too (listen :21)`},
		{"overlapping passive ranges", "services:\n  a:\n    listen: :2121\n    upstream: h:21\n    passive-ports: 21000-21099\n  b:\n    listen: :2122\n    upstream: h:21\n    passive-ports: 21099-21199\n", nil,
			`9: service "b": passive-ports 21099-21199: overlaps the passive-ports 21000-21099 of service "a"`},
		{"overlapping active ranges", "services:\n  a:\n    listen: :2121\n    upstream: h:21\n    active-ports: 20000-20099\n  b:\n    listen: :2122\n    upstream: h:21\n    active-ports: 20050-20059\n", nil,
			`9: service "b": active-ports 20050-20059: overlaps the active-ports 20000-20099 of service "a"`},
		{"a passive range over an active one", "services:\n  a:\n    listen: :2121\n    upstream: h:21\n    active-ports: 20000-20099\n  b:\n    listen: :2122\n    upstream: h:21\n    passive-ports: 20099-20100\n", nil,
			`9: service "b": passive-ports 20099-20100: overlaps the active-ports 20000-20099 of service "a"`},
		{"missing certificate file", "services:\n  a:\n    upstream: h:21\n    tls-cert: /nonexistent/cert.pem\n    tls-key: /nonexistent/key.pem\n", nil,
			`4: service "a": tls-cert /nonexistent/cert.pem / --tls-key /nonexistent/key.pem: open /nonexistent/cert.pem: no such file or directory`},
		{"a check across keys in a service", "services:\n  a:\n    upstream: h:21\n    proxy-protocol-chained: true\n", nil,
			`4: service "a": proxy-protocol-chained needs --proxy-protocol-from: it names the chained peers`},
		{"a bad value given on the command line too", "services:\n  a:\n    upstream: h:21\n    max-sessions: many\n", []string{"--max-sessions", "5"},
			`4: service "a": max-sessions: want an integer`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkConfigError(t, tt.file, tt.args, tt.want) })
	}
}

// Flags on the command line that each service names for itself are
// refused with services: they would apply to all of them at once.
func TestServicesCommandLine(t *testing.T) {
	path := writeConfigFile(t, twoServices)
	for _, flag := range []string{"--listen", "--upstream", "--listen-implicit", "--passive-ports", "--active-ports"} {
		_, err := parseFlags([]string{"--config", path, flag, "1000-1001"}, io.Discard)
		if want := flag + ": " + path + " has services, and each names its own"; err == nil || err.Error() != want {
			t.Errorf("%s: error %v, want %s", flag, err, want)
		}
	}
	// Any other flag wins over the file, for every service.
	o, err := parseFlags([]string{"--config", path, "--idle-timeout", "2m", "--log-level", "warn"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.logLevel != zerolog.WarnLevel || o.services[0].idleTimeout != 2*time.Minute || o.services[1].idleTimeout != 2*time.Minute {
		t.Errorf("log level %v, idle timeouts %v %v", o.logLevel, o.services[0].idleTimeout, o.services[1].idleTimeout)
	}
}

func TestServicesConfigValues(t *testing.T) {
	o, err := parseFlags([]string{"--config", writeConfigFile(t, twoServices)}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.logLevel != zerolog.DebugLevel || len(o.services) != 2 {
		t.Fatalf("top level: %+v", o)
	}
	files, archive := o.services[0], o.services[1]
	if files.name != "files" || !slices.Equal(files.listen, []string{"127.0.0.1:2121"}) || files.upstream != "10.0.0.5:21" ||
		files.pool != nil || files.idleTimeout != time.Minute {
		t.Errorf("files: %+v", files)
	}
	if lo, hi := files.passivePorts.Range(); lo != 21000 || hi != 21099 {
		t.Errorf("files: passive ports %d-%d", lo, hi)
	}
	if archive.name != "archive" || !slices.Equal(archive.listen, []string{"127.0.0.1:2122", "[::1]:2122"}) ||
		!slices.Equal(archive.pool, []string{"10.0.1.5:21", "10.0.1.6:21"}) || archive.upstream != "10.0.1.5:21" ||
		archive.idleTimeout != 5*time.Minute {
		t.Errorf("archive: %+v", archive)
	}
	// The services know nothing of the process's own settings.
	if archive.logLevel != zerolog.InfoLevel {
		t.Errorf("archive has the log level %v", archive.logLevel)
	}
}

func TestUpstreamPoolFlag(t *testing.T) {
	tests := []struct {
		args []string
		one  string
		pool []string
		err  string
	}{
		{[]string{"--upstream", "a:21"}, "a:21", nil, ""},
		{[]string{"--upstream", "a:21", "--upstream", "b:21"}, "a:21", []string{"a:21", "b:21"}, ""},
		{[]string{"--upstream", "a:21, b:21,c:21"}, "a:21", []string{"a:21", "b:21", "c:21"}, ""},
		{[]string{"--upstream", "a:21,"}, "", nil, `--upstream "": want HOST:PORT, e.g. 10.0.0.5:21`},
		{[]string{"--upstream", "a:21", "--upstream", "a:21"}, "", nil, `--upstream "a:21": named twice`},
		{[]string{"--upstream", "a:21,b:21", "--upstream-tls", "explicit"}, "", nil,
			"--upstream-tls with a pool of several hosts needs --upstream-server-name: the name their certificates carry"},
		{[]string{"--upstream", "a:21,a:2121", "--upstream-tls", "explicit"}, "a:21", []string{"a:21", "a:2121"}, ""},
		{[]string{"--upstream", "a:21,b:21", "--upstream-tls", "explicit", "--upstream-server-name", "ftp"}, "a:21", []string{"a:21", "b:21"}, ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			o, err := parseFlags(tt.args, io.Discard)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("error %v, want %s", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.upstream != tt.one || !slices.Equal(o.pool, tt.pool) {
				t.Errorf("upstream %q pool %v, want %q %v", o.upstream, o.pool, tt.one, tt.pool)
			}
		})
	}
}

// The services example in examples/ftpproxy.yaml (a block indented in the
// comments) is a valid file.
func TestExampleConfigServices(t *testing.T) {
	var block []string
	in := false
	for _, line := range strings.Split(readExampleConfig(t), "\n") {
		switch {
		case line == "#   services:":
			in = true
		case in && !strings.HasPrefix(line, "#   "):
			in = false
		}
		if in {
			block = append(block, strings.TrimPrefix(line, "#   "))
		}
	}
	if len(block) < 5 {
		t.Fatalf("no services block in %s", examplePath)
	}
	o, err := parseFlags([]string{"--config", writeConfigFile(t, strings.Join(block, "\n")+"\n")}, io.Discard)
	if err != nil {
		t.Fatalf("%v\n%s", err, strings.Join(block, "\n"))
	}
	if len(o.services) != 2 || len(o.services[1].pool) != 2 || o.services[1].maxSessions != 20 {
		t.Errorf("services of the example: %+v", o.services)
	}
}
