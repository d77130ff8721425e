package rewrite

import (
	"errors"
	"fmt"
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

		{line: "", wantErr: ErrBadCommand},
		{line: " NOOP", wantErr: ErrBadCommand},
		{line: "ABCDEFGHIJKLMNOPQ", wantErr: ErrBadCommand},
		{line: "RETR\tfile", wantErr: ErrBadCommand},
		{line: "US3R x", wantErr: ErrBadCommand},
		{line: "SITE-X", wantErr: ErrBadCommand},
		{line: "RETR a\x00b", wantErr: ErrBadCommand},
		{line: "RETR a\rDELE b", wantErr: ErrBadCommand},
		{line: "RETR a\nDELE b", wantErr: ErrBadCommand},
		{line: "RETR a\x7f", wantErr: ErrBadCommand},
		{line: "RETR a\x1b[2J", wantErr: ErrBadCommand},
		{line: "\xffNOOP", wantErr: ErrBadCommand},
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

func TestCommandRedacted(t *testing.T) {
	tests := []struct {
		c             Command
		str, redacted string
	}{
		{Command{"PASS", "secret"}, "PASS secret", "PASS ****"},
		{Command{"ACCT", "billing 42"}, "ACCT billing 42", "ACCT ****"},
		{Command{"PASS", ""}, "PASS", "PASS"},
		{Command{"USER", "anonymous"}, "USER anonymous", "USER anonymous"},
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
// command from its wire form, and that nothing accepted could smuggle a
// line break or control byte through.
func FuzzParseCommand(f *testing.F) {
	for _, s := range []string{"NOOP", "retr a b ", "PASS x", "CWD ", "RETR a\r\nDELE b", "ABCDEFGHIJKLMNOPQ", "\xff\xf4NOOP"} {
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
			if b := c.Arg[i]; b < 0x20 || b == 0x7f {
				t.Fatalf("arg %q holds control byte", c.Arg)
			}
		}
		c2, err := ParseCommand([]byte(c.String()))
		if err != nil || c2 != c {
			t.Fatalf("ParseCommand(%q) = %#v, %v; want %#v", c.String(), c2, err, c)
		}
	})
}
