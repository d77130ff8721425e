package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// testProxyUserLine is a --forward-users line: proxy user "px" with the
// password "proxy-secret", hashed at bcrypt's lowest cost to keep tests
// fast.
const testProxyUserLine = "px:$2a$04$d6lRPBXjLmhVKLILwq/K7eKZJ7TozDDjg6YWuOUivCK3CuXV3BIFK\n"

func TestForwardFlags(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("# proxy accounts\n"+testProxyUserLine), 0o600); err != nil {
		t.Fatal(err)
	}
	badUsers := filepath.Join(dir, "bad")
	if err := os.WriteFile(badUsers, []byte("px:plaintext\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"forward alone", []string{"--forward", "--allow-dest", "203.0.113.0/24"}, ""},
		{"forward with users", []string{"--forward", "--allow-dest", "ftp.example.com:2121,[2001:db8::1]:21", "--forward-users", users, "--forward-from", "192.0.2.0/24"}, ""},
		{"forward beside an upstream", []string{"--forward", "--upstream", "10.0.0.5:21", "--allow-dest", "10.1.0.0/16"}, ""},
		{"no upstream, no forward", []string{"--listen", ":2121"}, "--upstream is required"},
		{"allow-dest without forward", []string{"--upstream", "h:21", "--allow-dest", "10.0.0.0/8"}, "need --forward"},
		{"bad allow-dest", []string{"--forward", "--allow-dest", "not a host"}, "--allow-dest"},
		{"bad forward port", []string{"--forward", "--forward-ports", "21,x"}, "--allow-dest/--forward-ports"},
		{"bad forward-from", []string{"--forward", "--forward-from", "10.0.0.0/99"}, "--forward-from"},
		{"missing users file", []string{"--forward", "--forward-users", filepath.Join(dir, "none")}, "--forward-users"},
		{"plaintext in users file", []string{"--forward", "--forward-users", badUsers}, "not a bcrypt hash"},
		{"reply address in forward mode", []string{"--forward", "--upstream-pasv-address", "reply"}, "cannot go with --forward"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseFlags(tt.args, io.Discard)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if o.proxyConfig().Forward == nil {
					t.Fatal("forward mode is off")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %v, want one with %q", err, tt.wantErr)
			}
		})
	}
}

func TestPasswdCommand(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := passwdMain([]string{"alice"}, strings.NewReader("s3cret pass\n"), &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	name, hash, ok := strings.Cut(strings.TrimSpace(out.String()), ":")
	if !ok || name != "alice" {
		t.Fatalf("output %q, want alice:HASH", out.String())
	}
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte("s3cret pass")); err != nil {
		t.Fatalf("the hash does not verify the password: %v", err)
	}
	if strings.Contains(out.String()+errOut.String(), "s3cret") {
		t.Fatal("the password was printed")
	}
	for _, args := range [][]string{nil, {"a@b"}, {"a:b"}, {"-h"}, {"a", "b"}} {
		if code := passwdMain(args, strings.NewReader("x\n"), io.Discard, io.Discard); code != 64 {
			t.Errorf("passwd %q: exit %d, want 64", args, code)
		}
	}
	if code := passwdMain([]string{"bob"}, strings.NewReader("\n"), io.Discard, io.Discard); code != 1 {
		t.Errorf("an empty password: exit %d, want 1", code)
	}
}
