package proxy

import (
	"strings"
	"testing"
)

func TestParseForwardUSER(t *testing.T) {
	for _, tt := range []struct {
		arg       string
		proxyAuth bool
		want      forwardLogin
		bad       bool
	}{
		{arg: "alice@ftp.example.com", want: forwardLogin{user: "alice", dest: "ftp.example.com"}},
		{arg: "alice@ftp.example.com:2121", want: forwardLogin{user: "alice", dest: "ftp.example.com:2121"}},
		{arg: "me@mail.example@ftp.example.com", want: forwardLogin{user: "me@mail.example", dest: "ftp.example.com"}},
		{arg: "alice@[2001:db8::1]:21", want: forwardLogin{user: "alice", dest: "[2001:db8::1]:21"}},
		{arg: "alice", want: forwardLogin{user: "alice"}},
		{arg: "@host", bad: true},
		{arg: "alice@", bad: true},
		{arg: "", bad: true},
		// With proxy accounts, before the proxy login.
		{arg: "px", proxyAuth: true, want: forwardLogin{step: stepProxyPass, proxyUser: "px"}},
		{arg: "px@ftp.example.com", proxyAuth: true, want: forwardLogin{step: stepProxyPassHost, proxyUser: "px", dest: "ftp.example.com"}},
		{arg: "alice@px@ftp.example.com", proxyAuth: true, want: forwardLogin{step: stepJoinedPass, user: "alice", proxyUser: "px", dest: "ftp.example.com"}},
		{arg: "me@mail.example@px@h", proxyAuth: true, want: forwardLogin{step: stepJoinedPass, user: "me@mail.example", proxyUser: "px", dest: "h"}},
		{arg: "alice@ftp.example.com:21 px", proxyAuth: true, want: forwardLogin{step: stepAcctPass, user: "alice", proxyUser: "px", dest: "ftp.example.com:21"}},
		{arg: "alice@h ", proxyAuth: true, bad: true},
		{arg: "alice px", proxyAuth: true, bad: true},
		{arg: "@px@h", proxyAuth: true, bad: true},
	} {
		got, err := parseForwardUSER(tt.arg, tt.proxyAuth)
		if tt.bad {
			if err == nil {
				t.Errorf("parseForwardUSER(%q, %v) = %+v, want an error", tt.arg, tt.proxyAuth, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseForwardUSER(%q, %v) = %+v, %v; want %+v", tt.arg, tt.proxyAuth, got, err, tt.want)
		}
	}
}

// FuzzParseForwardUSER: whatever the USER, the parts it yields are pieces
// of it with no @ where none may be (the server and proxy user), and the
// server's user is never empty when a server is named.
func FuzzParseForwardUSER(f *testing.F) {
	for _, s := range []string{"alice@h", "alice@h:2121", "px", "px@h", "a@px@h", "a@h px", "@", "a@", "@h", "a@@h", " a@h px ", "a@[::1]:21"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, arg string, proxyAuth bool) {
		l, err := parseForwardUSER(arg, proxyAuth)
		if err != nil {
			return
		}
		if strings.Contains(l.dest, "@") || strings.Contains(l.proxyUser, "@") {
			t.Fatalf("%q: %+v: an @ in the server or the proxy user", arg, l)
		}
		if l.dest != "" && l.user == "" && l.step != stepProxyPassHost {
			t.Fatalf("%q: %+v: a server without a user", arg, l)
		}
		if !proxyAuth && l.step != stepNone {
			t.Fatalf("%q: %+v: a proxy login without proxy accounts", arg, l)
		}
		for _, part := range []string{l.user, l.proxyUser, l.dest} {
			if !strings.Contains(arg, part) {
				t.Fatalf("%q: %+v: %q is not from the argument", arg, l, part)
			}
		}
	})
}
