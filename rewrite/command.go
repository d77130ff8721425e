package rewrite

import (
	"fmt"
	"strings"
)

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
// Only bytes that could break the line framing between the proxy and the
// server are refused with ErrBadCommand:
//
//   - a CR not followed by NUL: servers that end lines at a bare CR would
//     read the rest as a second command smuggled past the proxy;
//   - a NUL not following a CR: it ends the line early in servers written
//     in C;
//   - an LF, which the LineReader never leaves in a line but which would
//     end the line at every server.
//
// CR NUL is how RFC 854 (Telnet, which RFC 959 section 4 has the control
// connection follow) sends a CR that is data, so a pathname holding a CR
// arrives as CR NUL; it stays in the argument as those two bytes and is
// relayed as it came. Every other byte is allowed in the argument: real
// servers (vsftpd, pyftpdlib) accept TAB, BS, VT, FF, ESC, DEL and the
// other control bytes in pathnames, so refusing them would make files
// unreachable through the proxy. Bytes from 0x80 up carry UTF-8 pathnames
// (RFC 2640) and 0xFF data bytes (see AppendWire).
//
// Errors say what is wrong and where (offsets count from the start of
// line) but never quote the line: a line that fails to parse may hold a
// password, as in "PASS:secret", and errors end up in logs.
//
// ParseCommand allocates at most the argument string; well-known verbs are
// returned as constants.
func ParseCommand(line []byte) (Command, error) {
	if len(line) == 0 {
		return Command{}, fmt.Errorf("%w: empty line", ErrBadCommand)
	}
	if err := checkFraming(line); err != nil {
		return Command{}, err
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
			return Command{}, fmt.Errorf("%w: verb has byte %#02x at offset %d", ErrBadCommand, b, n)
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

// checkFraming refuses the bytes of line that could end it early at the
// server: a CR without a NUL after it, a NUL without a CR before it, an LF.
func checkFraming(line []byte) error {
	for i, b := range line {
		switch b {
		case '\r':
			if i+1 == len(line) || line[i+1] != 0 {
				return fmt.Errorf("%w: control byte 0x0d (CR) at offset %d not followed by NUL", ErrBadCommand, i)
			}
		case 0:
			if i == 0 || line[i-1] != '\r' {
				return fmt.Errorf("%w: control byte 0x00 (NUL) at offset %d not after CR", ErrBadCommand, i)
			}
		case '\n':
			return fmt.Errorf("%w: control byte 0x0a (LF) at offset %d", ErrBadCommand, i)
		}
	}
	return nil
}

// String returns the command as text without CRLF: "VERB" or "VERB arg".
// 0xFF bytes are not escaped, so this is the form to show, not to send:
// AppendWire gives the bytes for the wire.
func (c Command) String() string {
	if c.Arg == "" {
		return c.Verb
	}
	return c.Verb + " " + c.Arg
}

// AppendWire appends the command as it goes on the wire to a server,
// "VERB" or "VERB arg" followed by CRLF, and returns the extended slice.
// It allocates only when dst lacks room.
//
// Every 0xFF byte is doubled to IAC IAC: the client sent a 0xFF data byte
// that way and StripTelnet made it one byte again, and a server that
// follows Telnet (RFC 959 section 4, RFC 854 "The Data Byte 255") would
// take a single 0xFF for the start of a Telnet command.
//
// AppendWire does not check the command: it must come from ParseCommand
// or hold text the proxy made, with no LF and each CR followed by NUL.
func (c Command) AppendWire(dst []byte) []byte {
	dst = appendIACEscaped(dst, c.Verb)
	if c.Arg != "" {
		dst = append(dst, ' ')
		dst = appendIACEscaped(dst, c.Arg)
	}
	return append(dst, '\r', '\n')
}

// appendIACEscaped appends s to dst with every 0xFF byte doubled.
func appendIACEscaped(dst []byte, s string) []byte {
	for {
		i := strings.IndexByte(s, iac)
		if i < 0 {
			return append(dst, s...)
		}
		dst = append(dst, s[:i+1]...)
		dst = append(dst, iac)
		s = s[i+1:]
	}
}

// Redacted is like String but hides the secrets a command can carry, so
// that commands can be logged:
//
//   - the argument of PASS and ACCT (RFC 959 section 4.1.1);
//   - the argument of ADAT, the security data of RFC 2228 section 3.1
//     (GSSAPI tokens, for instance), and of MIC, CONF and ENC (RFC 2228
//     section 3.2): each holds a whole protected command, maybe a PASS,
//     and MIC's is only signed, not encrypted, so its base64 decodes to
//     the command in clear;
//   - everything after the subcommand of SITE PSWD and SITE PASSWD
//     (old and new password), whose subcommand is matched
//     case-insensitively: "SITE PSWD ****".
//
// A command without an argument to hide is returned as String has it.
func (c Command) Redacted() string {
	if c.Arg == "" {
		return c.Verb
	}
	switch c.Verb {
	case "PASS", "ACCT", "ADAT", "MIC", "CONF", "ENC":
		return c.Verb + " ****"
	case "SITE":
		if sub, ok := sitePasswordCommand(c.Arg); ok {
			return "SITE " + sub + " ****"
		}
	}
	return c.String()
}

// sitePasswordCommand reports whether the argument of SITE is a password
// change, "PSWD old new" or "PASSWD old new", with something after the
// subcommand to hide, and returns the subcommand as sent. Servers differ
// in what separates the words, so any space or control byte does here:
// hiding too much in a log costs less than showing a password.
func sitePasswordCommand(arg string) (sub string, ok bool) {
	i := 0
	for i < len(arg) && isSeparator(arg[i]) {
		i++
	}
	j := i
	for j < len(arg) && !isSeparator(arg[j]) {
		j++
	}
	sub = arg[i:j]
	if j == len(arg) || !strings.EqualFold(sub, "PSWD") && !strings.EqualFold(sub, "PASSWD") {
		return "", false
	}
	return sub, true
}

// isSeparator reports whether b may separate the words of a SITE command:
// a space or an ASCII control byte.
func isSeparator(b byte) bool {
	return b <= ' ' || b == 0x7f
}
