package rewrite

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// result is one ReadLine outcome: a line, or an error it must wrap.
type result struct {
	line string
	err  error
}

// readAll calls ReadLine until io.EOF or a non-recoverable error, at most
// limit times.
func readAll(lr *LineReader, limit int) []result {
	var out []result
	for range limit {
		line, err := lr.ReadLine()
		out = append(out, result{string(line), err})
		if err != nil && !errors.Is(err, ErrLineTooLong) {
			break
		}
	}
	return out
}

func sameResults(got, want []result) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i].line != want[i].line || !errors.Is(got[i].err, want[i].err) || (got[i].err == nil) != (want[i].err == nil) {
			return false
		}
	}
	return true
}

func TestLineReader(t *testing.T) {
	long := strings.Repeat("x", 5000)
	tests := []struct {
		name  string
		input string
		max   int
		want  []result
	}{
		{"crlf", "USER a\r\nPASS b\r\n", 100, []result{{"USER a", nil}, {"PASS b", nil}, {"", io.EOF}}},
		{"lf", "USER a\nPASS b\n", 100, []result{{"USER a", nil}, {"PASS b", nil}, {"", io.EOF}}},
		{"empty lines", "\r\n\n", 100, []result{{"", nil}, {"", nil}, {"", io.EOF}}},
		{"only the CR before LF goes", "a\r\r\nb\rc\n", 100, []result{{"a\r", nil}, {"b\rc", nil}, {"", io.EOF}}},
		{"empty input", "", 100, []result{{"", io.EOF}}},
		{"partial line at EOF", "NOOP\r\nQUI", 100, []result{{"NOOP", nil}, {"", io.ErrUnexpectedEOF}}},
		{"lone CR at EOF", "\r", 100, []result{{"", io.ErrUnexpectedEOF}}},
		{"exactly max", "abcd\r\nabcd\n", 4, []result{{"abcd", nil}, {"abcd", nil}, {"", io.EOF}}},
		{"max plus one", "abcde\r\nabcd\n", 4, []result{{"", ErrLineTooLong}, {"abcd", nil}, {"", io.EOF}}},
		{"max plus one without CR", "abcde\nok\n", 4, []result{{"", ErrLineTooLong}, {"ok", nil}, {"", io.EOF}}},
		{"too long then normal", long + "\r\nNOOP\r\n", 100, []result{{"", ErrLineTooLong}, {"NOOP", nil}, {"", io.EOF}}},
		{"too long at EOF", long, 100, []result{{"", io.ErrUnexpectedEOF}}},
		{"short too long at EOF", "abcdefgh", 4, []result{{"", io.ErrUnexpectedEOF}}},
		{"long line accepted", long + "\r\nNOOP\r\n", 5000, []result{{long, nil}, {"NOOP", nil}, {"", io.EOF}}},
		{"long line one over", long + "y\r\nNOOP\r\n", 5000, []result{{"", ErrLineTooLong}, {"NOOP", nil}, {"", io.EOF}}},
		{"long partial line at EOF", long, 10000, []result{{"", io.ErrUnexpectedEOF}}},
		{"max zero", "\r\na\r\n\n", 0, []result{{"", nil}, {"", ErrLineTooLong}, {"", nil}, {"", io.EOF}}},
	}
	readers := []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"whole", func(r io.Reader) io.Reader { return r }},
		{"one byte", iotest.OneByteReader},
		{"half", iotest.HalfReader},
		{"data with EOF", iotest.DataErrReader},
	}
	for _, tt := range tests {
		for _, rd := range readers {
			lr := NewLineReader(rd.wrap(strings.NewReader(tt.input)), tt.max)
			if got := readAll(lr, len(tt.want)+2); !sameResults(got, tt.want) {
				t.Errorf("%s, %s reads: got %v, want %v", tt.name, rd.name, got, tt.want)
			}
		}
	}
}

// TestLineReaderSmallBuffer runs lines through a 16-byte buffer, so every
// path that gathers a line across buffers is taken with short input.
func TestLineReaderSmallBuffer(t *testing.T) {
	input := "0123456789abcdefghij\r\n" + // 20 bytes: spans two buffers
		"0123456789abcdefghijKLMNOPQRSTUVWXYZ012345\r\n" + // 42: too long, spans three
		"0123456789abcdefghijklmnopqrstuvwxyz0123\r\n" + // 40: exactly max
		"0123456789abcdef\r" // partial
	want := []result{
		{"0123456789abcdefghij", nil},
		{"", ErrLineTooLong},
		{"0123456789abcdefghijklmnopqrstuvwxyz0123", nil},
		{"", io.ErrUnexpectedEOF},
	}
	lr := newLineReaderSize(iotest.OneByteReader(strings.NewReader(input)), 40, 16)
	if got := readAll(lr, 10); !sameResults(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if cap(lr.scratch) > 2*(40+2) {
		t.Errorf("scratch grew to %d bytes for max 40", cap(lr.scratch))
	}
}

func TestLineReaderReadError(t *testing.T) {
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("NOOP\r\nPA"), iotest.ErrReader(boom))
	lr := NewLineReader(r, 100)
	if line, err := lr.ReadLine(); err != nil || string(line) != "NOOP" {
		t.Fatalf("ReadLine = %q, %v", line, err)
	}
	if _, err := lr.ReadLine(); !errors.Is(err, boom) {
		t.Fatalf("ReadLine error = %v, want %v", err, boom)
	}
}

func TestLineReaderBuffered(t *testing.T) {
	lr := NewLineReader(strings.NewReader("AUTH TLS\r\n\x16\x03\x01"), 100)
	if _, err := lr.ReadLine(); err != nil {
		t.Fatal(err)
	}
	if n := lr.Buffered(); n != 3 {
		t.Errorf("Buffered() = %d, want 3", n)
	}
}

func TestLineReaderAllocs(t *testing.T) {
	r := &repeatReader{data: []byte("NOOP\r\n")}
	lr := NewLineReader(r, 4096)
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := lr.ReadLine(); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("ReadLine allocates %v times per line", n)
	}
}

// repeatReader returns data over and over.
type repeatReader struct{ data []byte }

func (r *repeatReader) Read(p []byte) (int, error) {
	n := 0
	for n+len(r.data) <= len(p) {
		n += copy(p[n:], r.data)
	}
	return n, nil
}

// FuzzLineReader checks the reader against a simple model of it: the
// input split at LF, one CR before each LF dropped, lines over the limit
// replaced by ErrLineTooLong, a non-empty unterminated tail reported as
// io.ErrUnexpectedEOF, and io.EOF at the end. This also checks that no
// line over the limit or holding an LF is ever returned. Small buffer sizes
// make lines span buffers.
func FuzzLineReader(f *testing.F) {
	f.Add([]byte("USER a\r\nPASS b\r\n"), 8, 16)
	f.Add([]byte("0123456789abcdefghij\r\nx\n"), 20, 16)
	f.Add([]byte("0123456789abcdefghijk\r\nx"), 20, 16)
	f.Add([]byte("\r\r\n\n\r"), 0, 16)
	f.Fuzz(func(t *testing.T, input []byte, maxLen, size int) {
		maxLen, size = maxLen%300, 16+abs(size%100)
		limit := max(maxLen, 0)

		var want []result
		rest := input
		for {
			i := bytes.IndexByte(rest, '\n')
			if i < 0 {
				if len(rest) > 0 {
					want = append(want, result{"", io.ErrUnexpectedEOF})
				} else {
					want = append(want, result{"", io.EOF})
				}
				break
			}
			line := bytes.TrimSuffix(rest[:i], []byte("\r"))
			rest = rest[i+1:]
			if len(line) > limit {
				want = append(want, result{"", ErrLineTooLong})
			} else {
				want = append(want, result{string(line), nil})
			}
		}

		lr := newLineReaderSize(iotest.HalfReader(bytes.NewReader(input)), maxLen, size)
		got := readAll(lr, len(want)+1)
		for _, r := range got {
			if len(r.line) > limit || strings.IndexByte(r.line, '\n') >= 0 {
				t.Fatalf("ReadLine returned %q for limit %d", r.line, limit)
			}
		}
		if !sameResults(got, want) {
			t.Fatalf("got %v, want %v", got, want)
		}
		if cap(lr.scratch) > 2*(limit+2)+size {
			t.Fatalf("scratch grew to %d bytes for limit %d", cap(lr.scratch), limit)
		}
	})
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
