package rewrite

import (
	"bytes"
	"fmt"
)

// Reply is a chunk of an FTP reply (RFC 959 section 4.2).
type Reply struct {
	Code  int      // 100..599, the code of the reply this chunk belongs to
	Lines []string // raw lines without line endings, as received (continuation lines verbatim)
	More  bool     // true: this reply continues in the next chunk(s) from ReadReply
}

// Final reports whether r is a completion reply (2xx to 5xx) rather than a
// preliminary one (1xx), after which RFC 959 section 4.2 has another reply
// follow for the same command.
func (r Reply) Final() bool {
	return r.Code >= 200
}

// ReplyReader reads replies from a LineReader.
//
// A reply line starts with a three-digit code whose first digit is 1 to 5,
// followed by a space, a hyphen or the end of the line. A reply is one such
// line, or, if the code is followed by a hyphen, every line up to and
// including the next line that starts with the same code followed by a
// space or the end of the line (RFC 959 section 4.2). Lines in between are
// passed on verbatim even when they start with digits: the RFC lets them,
// and servers use it, e.g. "220-hello", "230 not the end", "220 end" is one
// reply.
//
// So that the proxy relays a huge multi-line reply as it arrives with
// bounded memory, ReadReply returns at most chunkLines lines per call and
// sets More when the reply goes on. Since every line may be as long as the
// LineReader allows, SetChunkBytes bounds a chunk's bytes as well. A reply
// of more than maxLines lines in all fails with ErrReplyTooLong.
//
// Lines are sanitised: NUL bytes, stray CR bytes and Telnet commands inside
// a line are removed, so a hostile server cannot inject line breaks (or C string ends)
// into what the proxy relays to its client.
type ReplyReader struct {
	lr         *LineReader
	chunkLines int
	chunkBytes int // 0: no byte bound
	maxLines   int

	// State of a multi-line reply that spans chunks.
	inReply bool
	code    int
	endTag  [3]byte // the code's digits, which the last line starts with
	lines   int     // lines of the current reply returned so far
}

// NewReplyReader returns a ReplyReader reading from lr that returns at most
// chunkLines lines per call and accepts replies of up to maxLines lines.
// Values below 1 are taken as 1.
func NewReplyReader(lr *LineReader, chunkLines, maxLines int) *ReplyReader {
	return &ReplyReader{lr: lr, chunkLines: max(chunkLines, 1), maxLines: max(maxLines, 1)}
}

// SetChunkBytes bounds the bytes of a chunk as well as its lines: a chunk
// of a multi-line reply also ends, with More set, as soon as its lines add
// up to n bytes or more (line endings not counted). A chunk then holds less
// than n plus the LineReader's maxLen bytes, however long its lines are. A
// single line is never split, so a chunk has at least one line. n <= 0
// removes the byte bound, which is how a ReplyReader starts. The bound
// applies from the next call to ReadReply.
func (rr *ReplyReader) SetChunkBytes(n int) {
	rr.chunkBytes = max(n, 0)
}

// ReadReply returns the next chunk of the reply being read, or the first
// chunk of the next reply.
//
// A first line that is not a reply line is consumed and reported as
// ErrBadReply; errors from the LineReader (ErrLineTooLong, io.EOF, ...) are
// returned as they are. After ErrReplyTooLong, or an error within a
// multi-line reply, the stream is no longer in step with the server's
// replies and the connection should be closed.
func (rr *ReplyReader) ReadReply() (Reply, error) {
	if !rr.inReply {
		line, err := rr.lr.ReadLine()
		if err != nil {
			return Reply{}, err
		}
		code, sep, ok := replyCode(line)
		if !ok {
			return Reply{}, fmt.Errorf("%w: %q", ErrBadReply, prefix(line, 64))
		}
		first := sanitize(line)
		if sep != '-' {
			return Reply{Code: code, Lines: []string{first}}, nil
		}
		rr.inReply, rr.code, rr.lines = true, code, 1
		copy(rr.endTag[:], line[:3])
		lines := make([]string, 1, min(rr.chunkLines, 16))
		lines[0] = first
		return rr.continueReply(lines)
	}
	return rr.continueReply(make([]string, 0, min(rr.chunkLines, 16)))
}

// continueReply adds lines of the current multi-line reply to lines until
// the reply ends or the chunk is full.
func (rr *ReplyReader) continueReply(lines []string) (Reply, error) {
	size := 0
	for _, l := range lines {
		size += len(l)
	}
	for !rr.chunkFull(len(lines), size) {
		line, err := rr.lr.ReadLine()
		if err != nil {
			return Reply{}, err
		}
		if rr.lines >= rr.maxLines {
			return Reply{}, fmt.Errorf("%w: more than %d", ErrReplyTooLong, rr.maxLines)
		}
		rr.lines++
		l := sanitize(line)
		lines = append(lines, l)
		size += len(l)
		if rr.isLast(line) {
			rr.inReply = false
			return Reply{Code: rr.code, Lines: lines}, nil
		}
	}
	return Reply{Code: rr.code, Lines: lines, More: true}, nil
}

// chunkFull reports whether a chunk of n lines and size bytes has reached
// the line or the byte bound.
func (rr *ReplyReader) chunkFull(n, size int) bool {
	return n >= rr.chunkLines || rr.chunkBytes > 0 && size >= rr.chunkBytes
}

// isLast reports whether line ends the current multi-line reply: the same
// code followed by a space or nothing.
func (rr *ReplyReader) isLast(line []byte) bool {
	return len(line) >= 3 && line[0] == rr.endTag[0] && line[1] == rr.endTag[1] &&
		line[2] == rr.endTag[2] && (len(line) == 3 || line[3] == ' ')
}

// replyCode parses the code of a reply's first line and returns it with the
// byte after it (0 at the end of the line).
func replyCode(line []byte) (code int, sep byte, ok bool) {
	if len(line) < 3 || line[0] < '1' || line[0] > '5' ||
		!isDigit(line[1]) || !isDigit(line[2]) {
		return 0, 0, false
	}
	if len(line) > 3 {
		sep = line[3]
		if sep != ' ' && sep != '-' {
			return 0, 0, false
		}
	}
	return int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0'), sep, true
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

// sanitize returns line as a string without NUL and CR bytes and without
// Telnet commands (RFC 854): a hostile server must not smuggle line breaks,
// C string ends or Telnet negotiation through the proxy to its client. A
// 0xFF data byte (sent as IAC IAC) stays escaped as IAC IAC.
func sanitize(line []byte) string {
	if bytes.IndexByte(line, 0) < 0 && bytes.IndexByte(line, '\r') < 0 && bytes.IndexByte(line, iac) < 0 {
		return string(line)
	}
	line = StripTelnet(line) // in place: line is the reader's, ours until the next read
	clean := make([]byte, 0, len(line)+4)
	for _, b := range line {
		switch b {
		case 0, '\r':
		case iac:
			clean = append(clean, iac, iac)
		default:
			clean = append(clean, b)
		}
	}
	return string(clean)
}
