package proxy

import (
	"strings"
	"testing"
)

const testUsers = "# proxy accounts\n\npx:$2a$04$d6lRPBXjLmhVKLILwq/K7eKZJ7TozDDjg6YWuOUivCK3CuXV3BIFK\n"

func TestProxyUsers(t *testing.T) {
	u, err := ParseProxyUsers(strings.NewReader(testUsers))
	if err != nil {
		t.Fatal(err)
	}
	if u.Len() != 1 {
		t.Fatalf("%d users, want 1", u.Len())
	}
	for _, tt := range []struct {
		name, pass string
		ok         bool
	}{
		{"px", "proxy-secret", true},
		{"px", "proxy-secreT", false},
		{"px", "", false},
		{"nobody", "proxy-secret", false},
		{"", "", false},
	} {
		if got := u.Verify(tt.name, tt.pass); got != tt.ok {
			t.Errorf("Verify(%q, %q) = %v, want %v", tt.name, tt.pass, got, tt.ok)
		}
	}
}

func TestParseProxyUsersErrors(t *testing.T) {
	for _, tt := range []struct{ file, want string }{
		{"", "no user listed"},
		{"# only a comment\n", "no user listed"},
		{"px\n", "line 1: want name:bcrypt-hash"},
		{"a@b:$2a$04$d6lRPBXjLmhVKLILwq/K7eKZJ7TozDDjg6YWuOUivCK3CuXV3BIFK\n", "without @"},
		{"px:secret\n", "line 1 (px): not a bcrypt hash"},
		{"px:$2a$17$d6lRPBXjLmhVKLILwq/K7eKZJ7TozDDjg6YWuOUivCK3CuXV3BIFK\n", "line 1 (px): bcrypt cost 17, at most 16: each login would take 7.68s or more"},
		{"px:$2a$31$d6lRPBXjLmhVKLILwq/K7eKZJ7TozDDjg6YWuOUivCK3CuXV3BIFK\n", "bcrypt cost 31, at most 16"},
		{"px:$2a$04$d6lRPBXjLmhVKLILwq/K7eKZJ7TozDDjg6YWuOUivCK3CuXV3BIFK\npx:$2a$04$d6lRPBXjLmhVKLILwq/K7eKZJ7TozDDjg6YWuOUivCK3CuXV3BIFK\n", "listed twice"},
	} {
		_, err := ParseProxyUsers(strings.NewReader(tt.file))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want an error with %q", tt.file, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("%q: the error quotes the file's secret: %v", tt.file, err)
		}
	}
}
