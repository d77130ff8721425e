package rewrite

import "fmt"

// maxVerb bounds the verb. RFC 959 section 5.3.1 verbs have 3 or 4 letters;
// extensions (RFC 2228, 2389, 2428, 3659, 7151) stay well within 16.
const maxVerb = 16

// Command is one FTP command line (RFC 959 section 5.3).
type Command struct {
	Verb string // upper-cased, e.g. "RETR"
	Arg  string // everything after the first space, unchanged (may be empty, may contain spaces)
}

// ParseCommand parses a command line given without its line ending and
// after StripTelnet.
//
// The verb is 1 to 16 ASCII letters, matched case-insensitively (RFC 959
// section 5.3: "upper and lower case alphabetic characters are to be treated
// identically") and returned upper-cased. A single space separates it from
// the argument, which is returned verbatim: pathnames may contain, begin or
// end with spaces, so nothing is trimmed.
//
// Control bytes (below 0x20, and 0x7f) anywhere in the line are rejected
// with ErrBadCommand: a stray CR or LF would let a client smuggle a second
// command past the proxy to the server, and NUL truncates strings in
// servers written in C. Bytes from 0x80 up are allowed in the argument for
// UTF-8 pathnames (RFC 2640).
//
// ParseCommand allocates at most the argument string; well-known verbs are
// returned as constants.
func ParseCommand(line []byte) (Command, error) {
	if len(line) == 0 {
		return Command{}, fmt.Errorf("%w: empty line", ErrBadCommand)
	}
	for _, b := range line {
		if b < 0x20 || b == 0x7f {
			return Command{}, fmt.Errorf("%w: control byte %#04x", ErrBadCommand, b)
		}
	}
	var buf [maxVerb]byte
	n := 0
	for n < len(line) && line[n] != ' ' {
		b := line[n]
		switch {
		case 'A' <= b && b <= 'Z':
		case 'a' <= b && b <= 'z':
			b -= 'a' - 'A'
		default:
			return Command{}, fmt.Errorf("%w: verb %q", ErrBadCommand, prefix(line, maxVerb+1))
		}
		if n == maxVerb {
			return Command{}, fmt.Errorf("%w: verb longer than %d letters", ErrBadCommand, maxVerb)
		}
		buf[n] = b
		n++
	}
	if n == 0 {
		return Command{}, fmt.Errorf("%w: no verb", ErrBadCommand)
	}
	c := Command{Verb: internVerb(buf[:n])}
	if n < len(line) {
		c.Arg = string(line[n+1:])
	}
	return c, nil
}

// String returns the command in its wire form without CRLF: "VERB" or
// "VERB arg".
func (c Command) String() string {
	if c.Arg == "" {
		return c.Verb
	}
	return c.Verb + " " + c.Arg
}

// Redacted is like String but hides the argument of PASS and ACCT (RFC 959
// section 4.1.1), which carry secrets, so that commands can be logged.
func (c Command) Redacted() string {
	if c.Arg != "" && (c.Verb == "PASS" || c.Verb == "ACCT") {
		return c.Verb + " ****"
	}
	return c.String()
}
