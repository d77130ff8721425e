package rewrite

import "testing"

// BenchmarkCommandPath measures what the proxy does per client command on
// the control path: read a line, strip Telnet, parse it. It must not
// allocate for a NOOP.
func BenchmarkCommandPath(b *testing.B) {
	lr := NewLineReader(&repeatReader{data: []byte("NOOP\r\n")}, 4096)
	b.ReportAllocs()
	for b.Loop() {
		line, err := lr.ReadLine()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ParseCommand(StripTelnet(line)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadReply measures reading a single-line reply.
func BenchmarkReadReply(b *testing.B) {
	rr := NewReplyReader(NewLineReader(&repeatReader{data: []byte("200 NOOP ok\r\n")}, 4096), 64, 1000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := rr.ReadReply(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParsePASVReply measures the 227 scan on a typical reply.
func BenchmarkParsePASVReply(b *testing.B) {
	text := "227 Entering Passive Mode (10,0,0,5,195,149)."
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParsePASVReply(text); err != nil {
			b.Fatal(err)
		}
	}
}
