package rewrite

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func newTestReplyReader(input string, chunk, maxLines int) *ReplyReader {
	return NewReplyReader(NewLineReader(iotest.OneByteReader(strings.NewReader(input)), 512), chunk, maxLines)
}

func TestReplyReader(t *testing.T) {
	tests := []struct {
		name       string
		input      string
		chunk      int // 0: 100
		chunkBytes int // for SetChunkBytes
		want       []Reply
		wantErr    error // after the replies in want
	}{
		{
			name:  "single",
			input: "220 ready\r\n",
			want:  []Reply{{Code: 220, Lines: []string{"220 ready"}}},
		},
		{
			name:  "bare code and LF",
			input: "200\n",
			want:  []Reply{{Code: 200, Lines: []string{"200"}}},
		},
		{
			name:  "preliminary then final",
			input: "150 opening\r\n226 done\r\n",
			want: []Reply{
				{Code: 150, Lines: []string{"150 opening"}},
				{Code: 226, Lines: []string{"226 done"}},
			},
		},
		{
			name:  "FEAT",
			input: "211-Features:\r\n EPSV\r\n MDTM\r\n211 End\r\n",
			want:  []Reply{{Code: 211, Lines: []string{"211-Features:", " EPSV", " MDTM", "211 End"}}},
		},
		{
			// RFC 959 section 4.2: lines inside may start with digits,
			// even with another code.
			name:  "banner with inner codes",
			input: "220-hello\r\n230 not the end\r\n220-still not\r\n220x nor this\r\n220 end\r\n",
			want:  []Reply{{Code: 220, Lines: []string{"220-hello", "230 not the end", "220-still not", "220x nor this", "220 end"}}},
		},
		{
			name:  "multi-line ends with bare code",
			input: "211-a\r\n211\r\n200 ok\r\n",
			want: []Reply{
				{Code: 211, Lines: []string{"211-a", "211"}},
				{Code: 200, Lines: []string{"200 ok"}},
			},
		},
		{
			name:  "chunks",
			input: "214-a\r\nb\r\nc\r\nd\r\n214 e\r\n",
			chunk: 2,
			want: []Reply{
				{Code: 214, Lines: []string{"214-a", "b"}, More: true},
				{Code: 214, Lines: []string{"c", "d"}, More: true},
				{Code: 214, Lines: []string{"214 e"}},
			},
		},
		{
			name:  "chunk ends exactly with the reply",
			input: "214-a\r\n214 b\r\n200 ok\r\n",
			chunk: 2,
			want: []Reply{
				{Code: 214, Lines: []string{"214-a", "214 b"}},
				{Code: 200, Lines: []string{"200 ok"}},
			},
		},
		{
			name:       "byte bound",
			input:      "214-aaaa\r\nbbbb\r\ncc\r\nd\r\n214 e\r\n",
			chunkBytes: 10,
			want: []Reply{
				{Code: 214, Lines: []string{"214-aaaa", "bbbb"}, More: true},
				{Code: 214, Lines: []string{"cc", "d", "214 e"}},
			},
		},
		{
			name:       "byte bound reached exactly",
			input:      "214-a\r\n214 b\r\n",
			chunkBytes: 5,
			want: []Reply{
				{Code: 214, Lines: []string{"214-a"}, More: true},
				{Code: 214, Lines: []string{"214 b"}},
			},
		},
		{
			name:       "byte bound reached by the last line",
			input:      "214-a\r\n214 bbbbbbbbbb\r\n200 ok\r\n",
			chunkBytes: 6,
			want: []Reply{
				{Code: 214, Lines: []string{"214-a", "214 bbbbbbbbbb"}},
				{Code: 200, Lines: []string{"200 ok"}},
			},
		},
		{
			// A line is never split: a chunk holds at least one.
			name:       "lines longer than the byte bound",
			input:      "214-0123456789\r\n0123456789\r\n214 0123456789\r\n",
			chunkBytes: 3,
			want: []Reply{
				{Code: 214, Lines: []string{"214-0123456789"}, More: true},
				{Code: 214, Lines: []string{"0123456789"}, More: true},
				{Code: 214, Lines: []string{"214 0123456789"}},
			},
		},
		{
			name:       "single-line reply over the byte bound",
			input:      "200 a long single line\r\n",
			chunkBytes: 3,
			want:       []Reply{{Code: 200, Lines: []string{"200 a long single line"}}},
		},
		{
			name:       "line bound before byte bound",
			input:      "214-a\r\nb\r\nc\r\n214 d\r\n",
			chunk:      2,
			chunkBytes: 1000,
			want: []Reply{
				{Code: 214, Lines: []string{"214-a", "b"}, More: true},
				{Code: 214, Lines: []string{"c", "214 d"}},
			},
		},
		{
			name:       "negative byte bound is none",
			input:      "214-aaaa\r\nbbbb\r\n214 c\r\n",
			chunkBytes: -1,
			want:       []Reply{{Code: 214, Lines: []string{"214-aaaa", "bbbb", "214 c"}}},
		},
		{
			name:  "NUL and CR removed",
			input: "220-a\x00b\r\nc\rd\r\r\n220 e\x00\r\n",
			want:  []Reply{{Code: 220, Lines: []string{"220-ab", "cd", "220 e"}}},
		},
		{
			// IAC WILL ECHO and IAC IP are Telnet commands, not text; IAC
			// IAC is a 0xFF data byte and stays escaped.
			name:  "Telnet commands removed",
			input: "200 a\xff\xfb\x01b\xff\xf4c\xff\xffd\r\n",
			want:  []Reply{{Code: 200, Lines: []string{"200 abc\xff\xffd"}}},
		},
		{
			name:    "malformed first line",
			input:   "hello\r\n",
			wantErr: ErrBadReply,
		},
		{
			name:    "code out of range",
			input:   "600 no\r\n",
			wantErr: ErrBadReply,
		},
		{
			name:    "code too short",
			input:   "22 no\r\n",
			wantErr: ErrBadReply,
		},
		{
			name:    "code followed by junk",
			input:   "2200 no\r\n",
			wantErr: ErrBadReply,
		},
		{
			name:    "EOF inside multi-line",
			input:   "211-a\r\nb\r\n",
			wantErr: io.EOF,
		},
		{
			name:    "clean EOF",
			input:   "200 ok\r\n",
			want:    []Reply{{Code: 200, Lines: []string{"200 ok"}}},
			wantErr: io.EOF,
		},
	}
	for _, tt := range tests {
		chunk := tt.chunk
		if chunk == 0 {
			chunk = 100
		}
		rr := newTestReplyReader(tt.input, chunk, 1000)
		rr.SetChunkBytes(tt.chunkBytes)
		for i, want := range tt.want {
			got, err := rr.ReadReply()
			if err != nil {
				t.Fatalf("%s: reply %d: %v", tt.name, i, err)
			}
			if got.Code != want.Code || got.More != want.More || strings.Join(got.Lines, "\n") != strings.Join(want.Lines, "\n") {
				t.Errorf("%s: reply %d = %#v, want %#v", tt.name, i, got, want)
			}
		}
		if tt.wantErr != nil {
			if _, err := rr.ReadReply(); !errors.Is(err, tt.wantErr) {
				t.Errorf("%s: error = %v, want %v", tt.name, err, tt.wantErr)
			}
		}
	}
}

func TestReplyReaderBadReplyMessage(t *testing.T) {
	rr := newTestReplyReader(strings.Repeat("x", 200)+"\r\n200 ok\r\n", 10, 10)
	_, err := rr.ReadReply()
	if !errors.Is(err, ErrBadReply) || !strings.Contains(err.Error(), `"`+strings.Repeat("x", 64)+`"`) {
		t.Fatalf("error = %v, want ErrBadReply quoting 64 bytes", err)
	}
	// The bad line is consumed; the next reply reads fine.
	if r, err := rr.ReadReply(); err != nil || r.Code != 200 {
		t.Fatalf("next ReadReply = %+v, %v", r, err)
	}
}

func TestReplyReaderHugeReply(t *testing.T) {
	const n = 10000
	var b strings.Builder
	b.WriteString("213-status\r\n")
	for i := range n - 2 {
		fmt.Fprintf(&b, " line %d\r\n", i)
	}
	b.WriteString("213 end\r\n")
	rr := NewReplyReader(NewLineReader(strings.NewReader(b.String()), 512), 64, n)
	total, chunks := 0, 0
	for {
		r, err := rr.ReadReply()
		if err != nil {
			t.Fatal(err)
		}
		if r.Code != 213 || len(r.Lines) > 64 || len(r.Lines) == 0 {
			t.Fatalf("chunk %d: code %d, %d lines", chunks, r.Code, len(r.Lines))
		}
		total += len(r.Lines)
		chunks++
		if !r.More {
			if r.Lines[len(r.Lines)-1] != "213 end" {
				t.Fatalf("last line %q", r.Lines[len(r.Lines)-1])
			}
			break
		}
	}
	if total != n || chunks != (n+63)/64 {
		t.Errorf("got %d lines in %d chunks, want %d in %d", total, chunks, n, (n+63)/64)
	}
}

// TestReplyReaderChunkBytes reads a reply of long lines, as many as the
// line bound allows in a chunk, and checks that the byte bound keeps each
// chunk under chunkBytes plus one line.
func TestReplyReaderChunkBytes(t *testing.T) {
	const (
		n          = 1000
		maxLen     = 512
		chunkLines = 64
		chunkBytes = 4096
	)
	var b strings.Builder
	b.WriteString("213-status\r\n")
	for i := range n - 2 {
		fmt.Fprintf(&b, " %d %s\r\n", i, strings.Repeat("x", i%maxLen))
	}
	b.WriteString("213 end\r\n")
	rr := NewReplyReader(NewLineReader(strings.NewReader(b.String()), maxLen+10), chunkLines, n)
	rr.SetChunkBytes(chunkBytes)
	total, chunks := 0, 0
	for {
		r, err := rr.ReadReply()
		if err != nil {
			t.Fatal(err)
		}
		size := 0
		for _, l := range r.Lines {
			size += len(l)
		}
		last := len(r.Lines[len(r.Lines)-1])
		if len(r.Lines) > chunkLines || size-last >= chunkBytes {
			t.Fatalf("chunk %d: %d lines, %d bytes before its last line", chunks, len(r.Lines), size-last)
		}
		if r.More && len(r.Lines) < chunkLines && size < chunkBytes {
			t.Fatalf("chunk %d: ended at %d lines and %d bytes, under both bounds", chunks, len(r.Lines), size)
		}
		total += len(r.Lines)
		chunks++
		if !r.More {
			break
		}
	}
	if total != n {
		t.Errorf("got %d lines, want %d", total, n)
	}
	// Without the byte bound the same reply comes in chunks of 64 lines.
	if want := (n + chunkLines - 1) / chunkLines; chunks <= want {
		t.Errorf("got %d chunks, want more than the %d of the line bound alone", chunks, want)
	}
}

func TestReplyReaderTooManyLines(t *testing.T) {
	// Exactly maxLines is fine.
	rr := newTestReplyReader("211-a\r\nb\r\n211 c\r\n", 10, 3)
	if r, err := rr.ReadReply(); err != nil || len(r.Lines) != 3 {
		t.Fatalf("ReadReply = %+v, %v", r, err)
	}
	// One more is not, even when it comes in a later chunk.
	rr = newTestReplyReader("211-a\r\nb\r\nc\r\n211 d\r\n", 2, 3)
	if r, err := rr.ReadReply(); err != nil || !r.More {
		t.Fatalf("first chunk = %+v, %v", r, err)
	}
	if _, err := rr.ReadReply(); !errors.Is(err, ErrReplyTooLong) {
		t.Fatalf("error = %v, want ErrReplyTooLong", err)
	}
}

func TestReplyReaderLineTooLong(t *testing.T) {
	rr := NewReplyReader(NewLineReader(strings.NewReader(strings.Repeat("2", 100)+"\r\n200 ok\r\n"), 50), 10, 10)
	if _, err := rr.ReadReply(); !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("error = %v, want ErrLineTooLong", err)
	}
	if r, err := rr.ReadReply(); err != nil || r.Code != 200 {
		t.Fatalf("next ReadReply = %+v, %v", r, err)
	}
}

func TestReplyFinal(t *testing.T) {
	for code, want := range map[int]bool{150: false, 199: false, 200: true, 226: true, 331: true, 421: true, 550: true} {
		if got := (Reply{Code: code}).Final(); got != want {
			t.Errorf("Reply{Code: %d}.Final() = %v", code, got)
		}
	}
}

// FuzzReplyReader checks that, on any input, ReadReply never panics, keeps
// codes in 100..599, never returns more than the chunk size, a line over
// the line limit, or a NUL, CR or LF, that a chunk ends as soon as it
// reaches the line or byte bound and not before unless its reply ends, and
// that chunks of one reply share its code and a reply ends with a line of
// that code. Errors between replies are skipped, as the proxy answers them
// and reads on; an error inside a multi-line reply ends the check, as it
// ends the proxy's connection.
func FuzzReplyReader(f *testing.F) {
	f.Add([]byte("220 ready\r\n"), 3, 0)
	f.Add([]byte("211-Features:\r\n EPSV\r\n211 End\r\n"), 2, 0)
	f.Add([]byte("220-hello\r\n230 not the end\r\n220 end\r\n"), 1, 0)
	f.Add([]byte("220-a\x00b\r\nc\rd\r\n220 e\r\n"), 5, 0)
	f.Add([]byte("hello\r\n200 ok"), 2, 0)
	f.Add([]byte("214-aaaa\r\nbbbb\r\ncc\r\n214 d\r\n"), 7, 10)
	f.Add([]byte("214-a\r\n214 b\r\n"), 7, 5)
	f.Add([]byte("214-a\r\nb\r\n214 c\r\n"), 7, -3)
	f.Fuzz(func(t *testing.T, input []byte, chunk, chunkBytes int) {
		const maxLine, maxLines = 80, 20
		chunk = 1 + abs(chunk%8)
		chunkBytes %= 200 // 0 and below: no byte bound
		rr := NewReplyReader(NewLineReader(bytes.NewReader(input), maxLine), chunk, maxLines)
		rr.SetChunkBytes(chunkBytes)
		inReply, code, lines := false, 0, 0
		for range len(input) + 2 {
			r, err := rr.ReadReply()
			if err != nil {
				// Between replies the reader stays usable; within a
				// multi-line reply it is out of step with the server and
				// the proxy closes the connection, so checking stops.
				if (errors.Is(err, ErrBadReply) || errors.Is(err, ErrLineTooLong)) && !rr.inReply {
					inReply = false
					continue
				}
				return
			}
			if r.Code < 100 || r.Code > 599 || len(r.Lines) == 0 || len(r.Lines) > chunk {
				t.Fatalf("bad chunk %#v", r)
			}
			if inReply && r.Code != code {
				t.Fatalf("continuation chunk has code %d, reply has %d", r.Code, code)
			}
			if !inReply {
				lines = 0
				if c, _, ok := replyCode([]byte(r.Lines[0])); !ok || c != r.Code {
					t.Fatalf("first line %q does not carry code %d", r.Lines[0], r.Code)
				}
			}
			lines += len(r.Lines)
			if lines > maxLines {
				t.Fatalf("reply of %d lines passed", lines)
			}
			size := 0
			for _, l := range r.Lines {
				if len(l) > maxLine || strings.ContainsAny(l, "\x00\r\n") {
					t.Fatalf("bad line %q", l)
				}
				size += len(l)
			}
			if last := len(r.Lines[len(r.Lines)-1]); chunkBytes > 0 && size-last >= chunkBytes {
				t.Fatalf("chunk %#v went on past %d bytes", r, chunkBytes)
			}
			if r.More && len(r.Lines) < chunk && (chunkBytes <= 0 || size < chunkBytes) {
				t.Fatalf("chunk %#v ended under both bounds (%d lines, %d bytes)", r, chunk, chunkBytes)
			}
			if !r.More {
				if last := r.Lines[len(r.Lines)-1]; last[:3] != fmt.Sprint(r.Code) {
					t.Fatalf("reply ends with %q, code %d", last, r.Code)
				}
			}
			inReply, code = r.More, r.Code
		}
	})
}
