package rewrite

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParseCommand(t *testing.T) {
	tests := []struct {
		line    string
		want    Command
		wantErr error
	}{
		{line: "NOOP", want: Command{Verb: "NOOP"}},
		{line: "noop", want: Command{Verb: "NOOP"}},
		{line: "RETR file.txt", want: Command{Verb: "RETR", Arg: "file.txt"}},
		{line: "retr My Documents/a b.txt", want: Command{Verb: "RETR", Arg: "My Documents/a b.txt"}},
		{line: "STOR  leading space", want: Command{Verb: "STOR", Arg: " leading space"}},
		{line: "STOR trailing ", want: Command{Verb: "STOR", Arg: "trailing "}},
		{line: "CWD ", want: Command{Verb: "CWD"}},
		{line: "XPWD", want: Command{Verb: "XPWD"}},
		{line: "pass secret", want: Command{Verb: "PASS", Arg: "secret"}},
		{line: "PORT 127,0,0,1,4,1", want: Command{Verb: "PORT", Arg: "127,0,0,1,4,1"}},
		{line: "EPRT |2|::1|6275|", want: Command{Verb: "EPRT", Arg: "|2|::1|6275|"}},
		{line: "OPTS UTF8 ON", want: Command{Verb: "OPTS", Arg: "UTF8 ON"}},
		{line: "RETR f\xc3\xa9.txt", want: Command{Verb: "RETR", Arg: "f\xc3\xa9.txt"}},
		{line: "ABCDEFGHIJKLMNOP x", want: Command{Verb: "ABCDEFGHIJKLMNOP", Arg: "x"}},
		{line: "Unknown", want: Command{Verb: "UNKNOWN"}},
		// Control bytes other than CR and NUL are pathname bytes to
		// vsftpd and pyftpdlib, and are relayed verbatim.
		{line: "RETR a\tb", want: Command{Verb: "RETR", Arg: "a\tb"}},
		{line: "RETR \t", want: Command{Verb: "RETR", Arg: "\t"}},
		{line: "RETR a\x7f", want: Command{Verb: "RETR", Arg: "a\x7f"}},
		{line: "RETR a\x1b[2J", want: Command{Verb: "RETR", Arg: "a\x1b[2J"}},
		{line: "STOR \x01\x08\x0b\x0c\x1f", want: Command{Verb: "STOR", Arg: "\x01\x08\x0b\x0c\x1f"}},
		// RFC 854: CR NUL is a CR that is data; it stays two bytes.
		{line: "RETR a\r\x00b", want: Command{Verb: "RETR", Arg: "a\r\x00b"}},
		{line: "RETR \r\x00", want: Command{Verb: "RETR", Arg: "\r\x00"}},
		{line: "RETR \r\x00\r\x00", want: Command{Verb: "RETR", Arg: "\r\x00\r\x00"}},
		// A 0xFF data byte, left by StripTelnet from IAC IAC.
		{line: "RETR a\xffb", want: Command{Verb: "RETR", Arg: "a\xffb"}},

		{line: "", wantErr: ErrBadCommand},
		{line: " NOOP", wantErr: ErrBadCommand},
		{line: "ABCDEFGHIJKLMNOPQ", wantErr: ErrBadCommand},
		{line: "RETR\tfile", wantErr: ErrBadCommand}, // the verb ends at a space only
		{line: "US3R x", wantErr: ErrBadCommand},
		{line: "SITE-X", wantErr: ErrBadCommand},
		{line: "\xffNOOP", wantErr: ErrBadCommand},
		{line: "\r\x00NOOP", wantErr: ErrBadCommand}, // CR NUL is data, not a verb letter
		// Bytes that would end the line early at a server.
		{line: "RETR a\x00b", wantErr: ErrBadCommand},
		{line: "RETR a\x00", wantErr: ErrBadCommand},
		{line: "\x00", wantErr: ErrBadCommand},
		{line: "RETR a\x00\rb", wantErr: ErrBadCommand},
		{line: "RETR a\r\x00\x00", wantErr: ErrBadCommand},
		{line: "RETR a\rDELE b", wantErr: ErrBadCommand},
		{line: "RETR a\r", wantErr: ErrBadCommand}, // a line sent as "RETR a\r\r\n"
		{line: "RETR a\r\rb", wantErr: ErrBadCommand},
		{line: "RETR a\r\nDELE b", wantErr: ErrBadCommand},
		{line: "RETR a\nDELE b", wantErr: ErrBadCommand},
	}
	for _, tt := range tests {
		got, err := ParseCommand([]byte(tt.line))
		if !errors.Is(err, tt.wantErr) || (tt.wantErr != nil) != (err != nil) {
			t.Errorf("ParseCommand(%q) error = %v, want %v", tt.line, err, tt.wantErr)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseCommand(%q) = %#v, want %#v", tt.line, got, tt.want)
		}
	}
}

// TestParseCommandErrorsQuoteNothing checks that errors, which get logged,
// say what is wrong without any of the line's text: the lines hold the
// secret "qzwxjv" where a password could be.
func TestParseCommandErrorsQuoteNothing(t *testing.T) {
	tests := []struct {
		line, want string
	}{
		{"PASS:qzwxjv", "verb has byte 0x3a at offset 4"},
		{"PASS\tqzwxjv", "verb has byte 0x09 at offset 4"},
		{"qzwxjvqzwxjvqzwxjv", "verb longer than 16 letters"},
		{" qzwxjv", "no verb"},
		{"PASS qzwx\rjv", "control byte 0x0d (CR) at offset 9 not followed by NUL"},
		{"PASS qzwxjv\r", "control byte 0x0d (CR) at offset 11 not followed by NUL"},
		{"PASS qzwx\x00jv", "control byte 0x00 (NUL) at offset 9 not after CR"},
		{"PASS qzwx\njv", "control byte 0x0a (LF) at offset 9"},
	}
	for _, tt := range tests {
		_, err := ParseCommand([]byte(tt.line))
		if !errors.Is(err, ErrBadCommand) {
			t.Errorf("ParseCommand(%q) error = %v, want ErrBadCommand", tt.line, err)
			continue
		}
		if msg := err.Error(); !strings.HasSuffix(msg, ": "+tt.want) || leaks(msg, "qzwxjv") {
			t.Errorf("ParseCommand(%q) error = %q, want it to end in %q and quote nothing", tt.line, msg, tt.want)
		}
	}
}

// leaks reports whether msg holds any two consecutive bytes of secret.
func leaks(msg, secret string) bool {
	for i := 0; i+2 <= len(secret); i++ {
		if strings.Contains(msg, secret[i:i+2]) {
			return true
		}
	}
	return false
}

func TestCommandRedacted(t *testing.T) {
	tests := []struct {
		c             Command
		str, redacted string
	}{
		{Command{"PASS", "secret"}, "PASS secret", "PASS ****"},
		{Command{"ACCT", "billing 42"}, "ACCT billing 42", "ACCT ****"},
		{Command{"ADAT", "YIIBxgYJKoZIhvcSAQICAQBugg"}, "ADAT YIIBxgYJKoZIhvcSAQICAQBugg", "ADAT ****"},
		{Command{"MIC", "BAQE/wAAAABQQVNTIHNlY3JldA=="}, "MIC BAQE/wAAAABQQVNTIHNlY3JldA==", "MIC ****"},
		{Command{"CONF", "YGwGCSqG"}, "CONF YGwGCSqG", "CONF ****"},
		{Command{"ENC", "YGwGCSqG"}, "ENC YGwGCSqG", "ENC ****"},
		{Command{"SITE", "PSWD old new"}, "SITE PSWD old new", "SITE PSWD ****"},
		{Command{"SITE", "pswd old new"}, "SITE pswd old new", "SITE pswd ****"},
		{Command{"SITE", "PassWd old new"}, "SITE PassWd old new", "SITE PassWd ****"},
		{Command{"SITE", "  PSWD old"}, "SITE   PSWD old", "SITE PSWD ****"},
		{Command{"SITE", "PSWD\told"}, "SITE PSWD\told", "SITE PSWD ****"},
		{Command{"SITE", "PSWD "}, "SITE PSWD ", "SITE PSWD ****"},
		// Nothing to hide.
		{Command{"PASS", ""}, "PASS", "PASS"},
		{Command{"ADAT", ""}, "ADAT", "ADAT"},
		{Command{"SITE", "PSWD"}, "SITE PSWD", "SITE PSWD"},
		{Command{"SITE", "CHMOD 644 a"}, "SITE CHMOD 644 a", "SITE CHMOD 644 a"},
		{Command{"SITE", "PSWDX a"}, "SITE PSWDX a", "SITE PSWDX a"},
		{Command{"SITE", "HELP PSWD"}, "SITE HELP PSWD", "SITE HELP PSWD"},
		{Command{"USER", "anonymous"}, "USER anonymous", "USER anonymous"},
		{Command{"RETR", "PASS secret"}, "RETR PASS secret", "RETR PASS secret"},
		{Command{"NOOP", ""}, "NOOP", "NOOP"},
	}
	for _, tt := range tests {
		if got := tt.c.String(); got != tt.str {
			t.Errorf("%#v.String() = %q, want %q", tt.c, got, tt.str)
		}
		if got := tt.c.Redacted(); got != tt.redacted {
			t.Errorf("%#v.Redacted() = %q, want %q", tt.c, got, tt.redacted)
		}
	}
}

// TestRedactedHidesSecrets parses real command lines that carry the
// secret "qzwxjv" and checks that Redacted, what gets logged, shows none
// of it.
func TestRedactedHidesSecrets(t *testing.T) {
	for _, line := range []string{
		"PASS qzwxjv",
		"pass qzwxjv",
		"PASS  qzwxjv ",
		"ACCT qzwxjv",
		"ADAT qzwxjv",
		"MIC qzwxjv",
		"CONF qzwxjv",
		"ENC qzwxjv",
		"SITE PSWD old qzwxjv",
		"SITE PSWD qzwxjv new",
		"site pswd qzwxjv new",
		"SITE Passwd qzwxjv qzwxjv",
		"SITE PASSWD\tqzwxjv",
		"SITE  PSWD qzwxjv",
	} {
		c, err := ParseCommand([]byte(line))
		if err != nil {
			t.Fatalf("ParseCommand(%q): %v", line, err)
		}
		if r := c.Redacted(); leaks(r, "qzwxjv") {
			t.Errorf("ParseCommand(%q).Redacted() = %q shows the secret", line, r)
		}
	}
}

func TestCommandAppendWire(t *testing.T) {
	tests := []struct {
		c    Command
		want string
	}{
		{Command{"NOOP", ""}, "NOOP\r\n"},
		{Command{"RETR", "a b "}, "RETR a b \r\n"},
		{Command{"RETR", "a\xffb"}, "RETR a\xff\xffb\r\n"},
		{Command{"RETR", "\xff\xff"}, "RETR \xff\xff\xff\xff\r\n"},
		{Command{"STOR", "\xff"}, "STOR \xff\xff\r\n"},
		{Command{"RETR", "a\r\x00b\t"}, "RETR a\r\x00b\t\r\n"},
		{Command{"PASS", "s\xffcret"}, "PASS s\xff\xffcret\r\n"},
	}
	for _, tt := range tests {
		got := tt.c.AppendWire([]byte("x"))
		if string(got) != "x"+tt.want {
			t.Errorf("%#v.AppendWire(\"x\") = %q, want %q", tt.c, got, "x"+tt.want)
		}
		// What a Telnet-aware server reads back is the command itself.
		body := got[1 : len(got)-2]
		back, err := ParseCommand(StripTelnet(body))
		if err != nil || back != tt.c {
			t.Errorf("ParseCommand(StripTelnet(%q)) = %#v, %v; want %#v", body, back, err, tt.c)
		}
	}
}

func TestCommandAppendWireAllocs(t *testing.T) {
	c := Command{"STOR", "a\xffb\xff c"}
	buf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() { buf = c.AppendWire(buf[:0]) }); n != 0 {
		t.Errorf("AppendWire into a buffer with room allocates %v times, want 0", n)
	}
}

func ExampleCommand_AppendWire() {
	// The client sent "STOR a" IAC IAC "b" for a file name with a 0xFF byte.
	line := StripTelnet([]byte("STOR a\xff\xffb"))
	cmd, err := ParseCommand(line)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%q\n", cmd.Arg)
	fmt.Printf("%q\n", cmd.AppendWire(nil))
	// Output:
	// "a\xffb"
	// "STOR a\xff\xffb\r\n"
}

func TestParseCommandAllocs(t *testing.T) {
	noop, retr := []byte("NOOP"), []byte("retr file.txt")
	if n := testing.AllocsPerRun(100, func() { _, _ = ParseCommand(noop) }); n != 0 {
		t.Errorf("ParseCommand(NOOP) allocates %v times, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = ParseCommand(retr) }); n > 1 {
		t.Errorf("ParseCommand(retr file.txt) allocates %v times, want at most 1", n)
	}
}

func ExampleCommand_Redacted() {
	cmd, err := ParseCommand([]byte("pass s3cret"))
	if err != nil {
		panic(err)
	}
	fmt.Println(cmd.String())
	fmt.Println(cmd.Redacted())
	// Output:
	// PASS s3cret
	// PASS ****
}

// FuzzParseCommand checks that an accepted line parses back to the same
// command from its text form and from its wire form after StripTelnet,
// that nothing accepted could end a line early at the server (an LF, a CR
// without NUL after it, a NUL without CR before it), that the wire form
// holds no lone IAC, and that Redacted hides every argument of PASS,
// ACCT and ADAT.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"NOOP", "retr a b ", "PASS x", "CWD ", "RETR a\r\nDELE b", "ABCDEFGHIJKLMNOPQ", "\xff\xf4NOOP",
		"RETR a\r\x00b", "RETR a\x00", "RETR a\r", "RETR \t\x1b\x7f", "STOR \xff", "SITE PSWD a b"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		c, err := ParseCommand(line)
		if err != nil {
			if !errors.Is(err, ErrBadCommand) {
				t.Fatalf("error %v does not wrap ErrBadCommand", err)
			}
			return
		}
		if len(c.Verb) < 1 || len(c.Verb) > maxVerb {
			t.Fatalf("verb %q has bad length", c.Verb)
		}
		for i := 0; i < len(c.Verb); i++ {
			if c.Verb[i] < 'A' || c.Verb[i] > 'Z' {
				t.Fatalf("verb %q is not upper-case letters", c.Verb)
			}
		}
		for i := 0; i < len(c.Arg); i++ {
			switch c.Arg[i] {
			case '\n':
				t.Fatalf("arg %q holds LF", c.Arg)
			case '\r':
				if i+1 == len(c.Arg) || c.Arg[i+1] != 0 {
					t.Fatalf("arg %q holds CR without NUL after it", c.Arg)
				}
			case 0:
				if i == 0 || c.Arg[i-1] != '\r' {
					t.Fatalf("arg %q holds NUL without CR before it", c.Arg)
				}
			}
		}
		c2, err := ParseCommand([]byte(c.String()))
		if err != nil || c2 != c {
			t.Fatalf("ParseCommand(%q) = %#v, %v; want %#v", c.String(), c2, err, c)
		}

		wire := c.AppendWire(nil)
		body, ok := bytes.CutSuffix(wire, []byte("\r\n"))
		if !ok || bytes.IndexByte(body, '\n') >= 0 {
			t.Fatalf("wire form %q is not one CRLF-terminated line", wire)
		}
		for i := 0; i < len(body); i++ {
			if body[i] == iac {
				if i+1 == len(body) || body[i+1] != iac {
					t.Fatalf("wire form %q holds a lone IAC", wire)
				}
				i++
			}
		}
		c3, err := ParseCommand(StripTelnet(body))
		if err != nil || c3 != c {
			t.Fatalf("ParseCommand(StripTelnet(%q)) = %#v, %v; want %#v", body, c3, err, c)
		}

		switch c.Verb {
		case "PASS", "ACCT", "ADAT":
			if r := c.Redacted(); r != c.Verb && r != c.Verb+" ****" {
				t.Fatalf("%#v.Redacted() = %q shows the argument", c, r)
			}
		}
	})
}
