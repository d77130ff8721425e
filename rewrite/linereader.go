package rewrite

import (
	"bufio"
	"fmt"
	"io"
	"math"
)

// bufSize is the size of a LineReader's bufio.Reader. FTP command lines and
// reply lines are short, so most lines are returned straight out of this
// buffer; it is also all the memory an idle connection holds.
const bufSize = 4096

// LineReader reads LF-terminated lines with a bound on their length, so a
// peer that never sends a line ending cannot make the proxy buffer without
// limit. The idea is that of net/textproto's readLineSlice, plus the bound.
//
// RFC 959 section 4 ends lines with CRLF (Telnet end-of-line); a bare LF is
// accepted too because real clients and servers send it, and a CR directly
// before the LF is removed with it.
type LineReader struct {
	br      *bufio.Reader
	max     int
	scratch []byte // holds a line that spans more than one buffer; reused
}

// NewLineReader returns a LineReader reading from r that accepts lines of
// up to maxLen bytes, not counting the line ending. A negative maxLen is
// taken as 0. Memory beyond the 4 KiB buffer is only taken, and then kept
// for reuse, when a line longer than the buffer arrives.
func NewLineReader(r io.Reader, maxLen int) *LineReader {
	return newLineReaderSize(r, maxLen, bufSize)
}

// newLineReaderSize is NewLineReader with a chosen buffer size, so tests
// can exercise lines spanning buffers with short inputs.
func newLineReaderSize(r io.Reader, maxLen, size int) *LineReader {
	return &LineReader{br: bufio.NewReaderSize(r, size), max: min(max(maxLen, 0), math.MaxInt-2)}
}

// ReadLine returns the next line without its ending. The slice aliases an
// internal buffer and is valid only until the next call. A line that fits
// in the buffer is returned without allocating.
//
// A line longer than maxLen is consumed and discarded up to and including its
// LF, and ReadLine returns an error wrapping ErrLineTooLong; the reader
// stays usable, so the caller can answer 500 and go on with the next line.
// At EOF, ReadLine returns io.EOF after a complete line and
// io.ErrUnexpectedEOF after a partial one of any length (the peer went away
// mid-line, which matters more than the length). Other read errors are
// returned as they are.
func (lr *LineReader) ReadLine() ([]byte, error) {
	frag, err := lr.br.ReadSlice('\n')
	switch err {
	case nil:
		return lr.finish(frag)
	case bufio.ErrBufferFull:
		return lr.readLong(frag)
	default:
		return nil, endError(len(frag) > 0, err)
	}
}

// readLong continues a line that spans more than one buffer; frag is its
// first buffer full. The line is gathered in the scratch buffer, which
// never grows much beyond max: the line with its CRLF must fit in max+2
// bytes, and as soon as it cannot, the rest is discarded instead.
func (lr *LineReader) readLong(frag []byte) ([]byte, error) {
	limit := lr.max + 2
	if len(frag) > limit {
		return nil, lr.skipRest()
	}
	buf := append(lr.scratch[:0], frag...)
	for {
		frag, err := lr.br.ReadSlice('\n')
		if len(buf)+len(frag) > limit {
			lr.scratch = buf[:0]
			switch err {
			case bufio.ErrBufferFull:
				return nil, lr.skipRest()
			case nil:
				return nil, lr.tooLong()
			default:
				return nil, endError(true, err)
			}
		}
		buf = append(buf, frag...)
		if err == bufio.ErrBufferFull {
			continue
		}
		lr.scratch = buf[:0]
		if err != nil {
			return nil, endError(true, err)
		}
		return lr.finish(buf)
	}
}

// finish strips the LF and an optional CR before it from line and checks
// the length.
func (lr *LineReader) finish(line []byte) ([]byte, error) {
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) > lr.max {
		return nil, lr.tooLong()
	}
	return line, nil
}

// skipRest discards input up to and including the next LF after a line
// has proved too long.
func (lr *LineReader) skipRest() error {
	for {
		_, err := lr.br.ReadSlice('\n')
		switch err {
		case bufio.ErrBufferFull:
			continue
		case nil:
			return lr.tooLong()
		default:
			return endError(true, err)
		}
	}
}

func (lr *LineReader) tooLong() error {
	return fmt.Errorf("%w: more than %d bytes", ErrLineTooLong, lr.max)
}

// endError maps the error that ended input before an LF: a partial line
// at EOF is io.ErrUnexpectedEOF.
func endError(partial bool, err error) error {
	if err == io.EOF && partial {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Buffered reports how many bytes have been read from the underlying reader
// but not yet returned. RFC 4217 section 4 (AUTH TLS) needs it zero before
// the TLS handshake starts: bytes buffered earlier arrived in plaintext and
// must not be taken as coming through TLS (the STARTTLS injection attack).
func (lr *LineReader) Buffered() int {
	return lr.br.Buffered()
}
