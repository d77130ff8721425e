package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestProbeUsage(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	notPEM := filepath.Join(dir, "ca.pem")
	for _, f := range []string{empty, notPEM} {
		if err := os.WriteFile(f, []byte("\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		args []string
		want string // in the message on stderr
	}{
		{nil, "want one HOST[:PORT]"},
		{[]string{"a.example", "b.example"}, "got 2 arguments"},
		{[]string{"a.example:0"}, "port from 1 to 65535"},
		{[]string{"--bogus", "a.example"}, "flag provided but not defined"},
		{[]string{"a.example", "--timeout", "0s"}, "--timeout"},
		{[]string{"a.example", "--deadline", "-1s"}, "--deadline"},
		{[]string{"a.example", "--ports", "21,x"}, "--ports"},
		{[]string{"a.example", "--ports", "70000"}, "--ports"},
		{[]string{"a.example", "--through", "[::1"}, "--through"},
		{[]string{"--user", "alice", "a.example"}, "--user alice needs a password"},
		{[]string{"--password-file", filepath.Join(dir, "missing"), "a.example"}, "--password-file"},
		{[]string{"--password-file", empty, "a.example"}, "first line is empty"},
		{[]string{"--ca", notPEM, "a.example"}, "no PEM certificate"},
	} {
		var out, errOut bytes.Buffer
		code := probeMain(tc.args, &out, &errOut, func(string) string { return "" })
		if code != exitUsage || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("probe %q: exit %d, stderr %q; want %d and %q", tc.args, code, errOut.String(), exitUsage, tc.want)
		}
		if out.Len() != 0 {
			t.Errorf("probe %q: a usage error printed a report: %q", tc.args, out.String())
		}
	}
	var out, errOut bytes.Buffer
	if code := probeMain([]string{"-h"}, &out, &errOut, os.Getenv); code != 0 || !strings.Contains(errOut.String(), "ftpproxy probe [options] HOST[:PORT]") {
		t.Errorf("probe -h: exit %d, %q", code, errOut.String())
	}
}

func TestProbePasswordSources(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(file, []byte("from-file\r\nsecond line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(k string) string {
		if k == passwordEnv {
			return "from-env"
		}
		return ""
	}
	for _, tc := range []struct {
		args []string
		env  func(string) string
		want string
	}{
		{[]string{"--password-file", file, "h"}, env, "from-file"},
		{[]string{"h", "--user", "alice"}, env, "from-env"},
		{[]string{"h"}, func(string) string { return "" }, ""}, // anonymous: the probe's default
	} {
		o, err := parseProbeFlags(tc.args, &bytes.Buffer{}, tc.env)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if o.cfg.Password != tc.want {
			t.Errorf("%q: password %q, want %q", tc.args, o.cfg.Password, tc.want)
		}
	}
}

// TestProbeCommand runs the command against a server that refuses every
// login and quotes the password back: the report fails the login, exits
// 2, and shows the password nowhere, in text, transcript or JSON.
func TestProbeCommand(t *testing.T) {
	const password = "correct-horse-battery"
	addr := startRefusingServer(t)
	_, port, _ := net.SplitHostPort(addr)
	env := func(k string) string {
		if k == passwordEnv {
			return password
		}
		return ""
	}
	for _, mode := range []string{"--transcript", "--json"} {
		var out, errOut bytes.Buffer
		code := probeMain([]string{"--user", "alice", "127.0.0.1:" + port, mode, "--ports", "", "--timeout", "5s"}, &out, &errOut, env)
		if code != 2 {
			t.Errorf("%s: exit %d, want 2\n%s%s", mode, code, out.String(), errOut.String())
		}
		if strings.Contains(out.String()+errOut.String(), password) {
			t.Errorf("%s: the password appears in the output:\n%s", mode, out.String())
		}
		if mode == "--json" {
			var rep struct {
				Schema   int `json:"schema"`
				ExitCode int `json:"exit_code"`
				Results  []struct {
					Check, Status string
				} `json:"results"`
			}
			if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
				t.Fatalf("JSON: %v\n%s", err, out.String())
			}
			if rep.Schema != 1 || rep.ExitCode != 2 || len(rep.Results) == 0 {
				t.Errorf("JSON report: %+v", rep)
			}
			continue
		}
		for _, want := range []string{"-> PASS ****", "FAIL login: the login as alice was refused", "OK greeting: 220"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("%s: output lacks %q:\n%s", mode, want, out.String())
			}
		}
	}
}

// startRefusingServer runs an FTP server on 127.0.0.1 that greets, asks
// for a password after USER and answers everything else with a 530 that
// quotes the command.
func startRefusingServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				conn.Write([]byte("220 refusing server\r\n"))
				sc := bufio.NewScanner(conn)
				for sc.Scan() {
					line := strings.TrimRight(sc.Text(), "\r")
					reply := "530 you said: " + strconv.Quote(line)
					if strings.HasPrefix(line, "USER ") {
						reply = "331 password please"
					}
					if _, err := conn.Write([]byte(reply + "\r\n")); err != nil {
						return
					}
				}
			})
		}
	})
	return ln.Addr().String()
}
