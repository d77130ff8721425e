package peers

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestTally(t *testing.T) {
	var out bytes.Buffer
	tl := &Tally{Out: &out}
	if !tl.Run("a/ok", func() error { return nil }) {
		t.Error("Run of a passing check returned false")
	}
	if tl.Run("a/bad", func() error { return errors.New("first\nsecond\n") }) {
		t.Error("Run of a failing check returned true")
	}
	tl.RunNote("a/noted", func() (string, error) { return "saw\nthis", nil })
	tl.RunNote("a/noted-bad", func() (string, error) { return "not printed", errors.New("wrong") })
	tl.Note("%d things", 2)
	tl.Skip("a/skipped", "no helper")
	tl.Report("a/timed", 1500*time.Millisecond, nil)
	if got := tl.Failed(); got != 2 {
		t.Errorf("Failed() = %d, want 2", got)
	}
	if tl.Summary("unit", time.Now()) {
		t.Error("Summary with failures returned true")
	}
	want := []string{
		"PASS a/ok 0.00s",
		"FAIL a/bad 0.00s", "    first", "    second",
		"PASS a/noted 0.00s", "    saw", "    this",
		"FAIL a/noted-bad 0.00s", "    wrong",
		"    2 things",
		"SKIP a/skipped: no helper",
		"PASS a/timed 1.50s",
		"unit: failed a/bad: first", "    second",
		"unit: failed a/noted-bad: wrong",
		"unit: suite took 0.0s",
		"unit: 3 passed, 2 failed",
	}
	if got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n"); !slices.Equal(got, want) {
		t.Errorf("output:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	out.Reset()
	quiet := &Tally{Out: &out, Quiet: true}
	quiet.Run("q/ok", func() error { return nil })
	quiet.Note("not printed")
	quiet.Run("q/bad", func() error { return errors.New("printed") })
	if want := "FAIL q/bad 0.00s\n    printed\n"; out.String() != want {
		t.Errorf("quiet output %q, want %q", out.String(), want)
	}

	out.Reset()
	if (&Tally{Out: &out}).Summary("none", time.Now()) {
		t.Error("Summary of a suite that ran nothing returned true")
	}
	ok := &Tally{Out: &out}
	ok.Run("x", func() error { return nil })
	if !ok.Summary("one", time.Now()) {
		t.Error("Summary of a passing suite returned false")
	}
}

func TestRunCases(t *testing.T) {
	for _, tc := range []struct {
		list    string
		notRun  string // the case ready refuses
		ran     []string
		reports string
	}{
		{"", "", []string{"a", "b", "c"}, ""},
		{" c , a ", "", []string{"a", "c"}, ""},
		{"b,zz,c,aa,zz", "", []string{"b", "c"}, "FAIL cases 0.00s\n    -cases: no case \"aa\"\nFAIL cases 0.00s\n    -cases: no case \"zz\"\n"},
		{"", "b", []string{"a", "c"}, "FAIL b 0.00s\n    budget spent\n"},
	} {
		var out bytes.Buffer
		tl := &Tally{Out: &out}
		var ran []string
		var cases []Case
		for _, n := range []string{"a", "b", "c"} {
			cases = append(cases, Case{Name: n, Run: func() { ran = append(ran, n) }})
		}
		var ready func() error
		if tc.notRun != "" {
			next := 0
			ready = func() error {
				next++
				if cases[next-1].Name == tc.notRun {
					return errors.New("budget spent")
				}
				return nil
			}
		}
		RunCases(tl, tc.list, cases, ready)
		if !slices.Equal(ran, tc.ran) {
			t.Errorf("-cases %q: ran %v, want %v", tc.list, ran, tc.ran)
		}
		if out.String() != tc.reports {
			t.Errorf("-cases %q: printed %q, want %q", tc.list, out.String(), tc.reports)
		}
	}
	if l := ParseCaseList("guard, kills"); !l.Selects("kills") || l.Selects("theft") || !ParseCaseList(" , ").Selects("theft") {
		t.Errorf("ParseCaseList: %q", l)
	}
}

func TestPreflight(t *testing.T) {
	err := Preflight("the unit test", "sh", "no-such-tool-ftpproxy-interop")
	want := "no-such-tool-ftpproxy-interop not found (interop/install-peers.sh installs it)"
	if os.Geteuid() != 0 {
		want = "needs root for the unit test"
	}
	if err == nil || err.Error() != want {
		t.Errorf("Preflight: %v, want %q", err, want)
	}
}

func TestSuitePaths(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "ftpproxy")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	a, b := "ftpproxy", "sub/../x"
	if err := AbsPaths(&a, &b); err != nil {
		t.Fatal(err)
	}
	if a != bin || b != filepath.Join(dir, "x") {
		t.Errorf("AbsPaths: %q %q", a, b)
	}
	if got, err := ProxyBinary("ftpproxy"); err != nil || got != bin {
		t.Errorf("ProxyBinary: %q %v, want %q", got, err, bin)
	}
	if _, err := ProxyBinary("missing"); err == nil || !strings.HasPrefix(err.Error(), "ftpproxy binary: ") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ProxyBinary of a missing file: %v", err)
	}
	if got := NetnsPrefix("given-1", "ftpx"); got != "given-1" {
		t.Errorf("NetnsPrefix with a flag: %q", got)
	}
	if got, want := NetnsPrefix("", "ftpx"), fmt.Sprintf("ftpx-%d", os.Getpid()); got != want {
		t.Errorf("NetnsPrefix: %q, want %q", got, want)
	}
}

func TestWorkDir(t *testing.T) {
	base := t.TempDir()
	given := filepath.Join(base, "given", "deeper")
	for _, tc := range []struct{ dir, base string }{{given, ""}, {"", base}} {
		dir, err := WorkDir(tc.dir, tc.base, "unit-")
		if err != nil {
			t.Fatal(err)
		}
		if tc.dir != "" && dir != tc.dir {
			t.Errorf("WorkDir(%q): %q", tc.dir, dir)
		}
		if tc.dir == "" && (filepath.Dir(dir) != base || !strings.HasPrefix(filepath.Base(dir), "unit-")) {
			t.Errorf("WorkDir in %s: %q", base, dir)
		}
		fi, err := os.Stat(dir)
		if err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("work directory %s: %v %v, want mode 0755", dir, fi.Mode(), err)
		}
		CleanWorkDir("unit", dir, true)
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("CleanWorkDir left %s: %v", dir, err)
		}
	}
}

func TestHealthGetAndLog(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b := make([]byte, 512)
		n, _ := c.Read(b)
		got <- string(b[:n])
		c.Write([]byte("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nftpproxy_up 1\n"))
	}()
	body, err := HealthGet(l.Addr().String(), "/metrics")
	if err != nil || body != "ftpproxy_up 1\n" {
		t.Errorf("HealthGet: %q %v", body, err)
	}
	if req := <-got; req != "GET /metrics HTTP/1.0\r\nHost: health\r\n\r\n" {
		t.Errorf("request %q", req)
	}
	p := &Proxy{LogPath: filepath.Join(t.TempDir(), "ftpproxy.log")}
	if p.Log() != "" {
		t.Error("Log of a missing file is not empty")
	}
	if p.LogSize() != 0 {
		t.Errorf("LogSize of a missing file: %d", p.LogSize())
	}
	os.WriteFile(p.LogPath, []byte("{}\n"), 0o644)
	if p.Log() != "{}\n" || p.LogSize() != 3 {
		t.Errorf("Log: %q, LogSize %d", p.Log(), p.LogSize())
	}
}

// A failure's long error is cut in the summary, never in its FAIL line.
func TestTallySummaryCutsLongErrors(t *testing.T) {
	var out bytes.Buffer
	tl := &Tally{Out: &out}
	long := strings.Repeat("x", 400)
	tl.Run("c/long", func() error { return errors.New("1\n2\n3\n" + long + "\n5") })
	tl.Summary("cut", time.Now())
	want := "FAIL c/long 0.00s\n    1\n    2\n    3\n    " + long + "\n    5\n" +
		"cut: failed c/long: 1\n    2\n    3\n    " + long[:300] + "...\n    ...\n" +
		"cut: suite took 0.0s\ncut: 0 passed, 1 failed\n"
	if out.String() != want {
		t.Errorf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}
