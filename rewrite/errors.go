package rewrite

import "errors"

// Sentinel errors. Functions wrap them with %w and add detail, so test with
// errors.Is, not ==.
//
// The detail never quotes what a client sent (a command line, PORT or EPRT
// argument): callers log errors, and a line that fails to parse may hold a
// password ("PASS:secret"). It names the fault and its offset instead.
// Replies from a server carry no client secrets and are quoted, cut by
// prefix.
var (
	// ErrSyntax reports a malformed PORT/EPRT argument or PASV/EPSV reply.
	ErrSyntax = errors.New("rewrite: syntax error")
	// ErrAddress reports an address that is well-formed text but unusable:
	// an octet above 255, an address of the wrong family, a zone.
	ErrAddress = errors.New("rewrite: bad address")
	// ErrPort reports a port of 0 or above 65535.
	ErrPort = errors.New("rewrite: bad port")
	// ErrFamily reports an EPRT network protocol other than 1 (IPv4) or
	// 2 (IPv6); RFC 2428 section 2 has the server answer 522.
	ErrFamily = errors.New("rewrite: unsupported network protocol")
	// ErrLineTooLong reports a line longer than a LineReader's limit.
	ErrLineTooLong = errors.New("rewrite: line too long")
	// ErrBadReply reports a server line where a reply must start.
	ErrBadReply = errors.New("rewrite: malformed reply")
	// ErrReplyTooLong reports a multi-line reply over a ReplyReader's limit.
	ErrReplyTooLong = errors.New("rewrite: reply has too many lines")
	// ErrBadCommand reports a client line that is not an FTP command.
	ErrBadCommand = errors.New("rewrite: malformed command")
)

// prefix returns at most n bytes of b, for quoting a server's reply in an
// error message without copying an attacker-sized line into it.
func prefix(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}
