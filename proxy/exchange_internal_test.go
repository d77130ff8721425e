package proxy

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ftpproxy/ftpproxy/rewrite"
)

// heldLines returns a multi-line 226 reply of n lines (n >= 2), each
// width bytes long but for the last, "226 end".
func heldLines(n, width int) []string {
	lines := make([]string, n)
	for i := range n - 1 {
		s := fmt.Sprintf(" line %d ", i)
		lines[i] = s + strings.Repeat("x", max(width-len(s), 0))
	}
	lines[0] = "226-" + strings.Repeat("h", max(width-4, 0))
	lines[n-1] = "226 end"
	return lines
}

func leftOut(n int) string { return " (" + strconv.Itoa(n) + " lines left out by the proxy)" }

// TestHeldReply: a held reply keeps its first lines within maxHeldLines
// and maxHeldBytes and its last line, says how many it left out, and stays
// a well-formed reply; a short reply is relayed unchanged.
func TestHeldReply(t *testing.T) {
	short := heldLines(3, 20)
	atLines := heldLines(maxHeldLines, 20)
	overLines := heldLines(maxHeldLines+1, 20)
	huge := heldLines(50000, 1000)
	wide := heldLines(10, 10000) // 3 fit in maxHeldBytes
	bigFirst := heldLines(3, maxHeldBytes+100)
	tests := []struct {
		name string
		in   []string
		want []string
	}{
		{"one line", []string{"226 Transfer complete."}, []string{"226 Transfer complete."}},
		{"short", short, short},
		{"exactly maxHeldLines", atLines, atLines},
		{"one line over", overLines, slices.Concat(overLines[:maxHeldLines-1], []string{leftOut(1), overLines[maxHeldLines]})},
		{"50000 lines", huge, slices.Concat(huge[:maxHeldLines-1], []string{leftOut(50000 - maxHeldLines), huge[49999]})},
		{"bytes bound", wide, slices.Concat(wide[:3], []string{leftOut(6), wide[9]})},
		{"first line over the bytes bound", bigFirst, []string{bigFirst[0], leftOut(1), bigFirst[2]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Whole, and in chunks as the ReplyReader hands them over.
			for _, chunk := range []int{len(tt.in), 64, 1} {
				var h heldReply
				for i := 0; i < len(tt.in); i += chunk {
					end := min(i+chunk, len(tt.in))
					h.add(rewrite.Reply{Code: 226, Lines: tt.in[i:end], More: end < len(tt.in)})
				}
				got := h.lines()
				if !slices.Equal(got, tt.want) {
					t.Fatalf("chunks of %d: got %d lines %q, want %d lines %q", chunk, len(got), clipLines(got), len(tt.want), clipLines(tt.want))
				}
				if h.code != 226 || h.first() != tt.in[0] {
					t.Errorf("chunks of %d: code %d, first %q", chunk, h.code, clip(h.first()))
				}
				if len(got) > maxHeldLines+1 {
					t.Errorf("chunks of %d: %d lines kept", chunk, len(got))
				}
				kept := 0
				for i := 1; i < len(got)-1; i++ {
					kept += len(got[i])
				}
				if kept > maxHeldBytes {
					t.Errorf("chunks of %d: %d bytes kept past the first line", chunk, kept)
				}
			}
		})
	}
}

func clipLines(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = clip(l)
	}
	return out
}
