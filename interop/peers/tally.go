package peers

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// Tally counts a suite's checks and prints a line for each, the lines the
// suites' run.sh and their readers look for: "PASS name 1.23s", "FAIL name
// 1.23s" with the error indented below it, "SKIP name: reason", and at the
// end "<suite>: N passed, N failed". Its methods may be called from
// several goroutines at once.
type Tally struct {
	// Quiet leaves out the PASS lines and the notes, for a run whose
	// output is a table of its own; failures are printed all the same.
	Quiet bool
	// Out receives the lines; nil means os.Stdout.
	Out io.Writer

	mu             sync.Mutex
	passed, failed int
	// failures holds, per failed check, its name and the first lines of
	// its error, repeated by Summary: a CI log often shows only its tail.
	failures []string
}

// Run runs one check and reports it; it returns whether the check passed.
func (t *Tally) Run(name string, fn func() error) bool {
	start := time.Now()
	err := fn()
	t.report(name, time.Since(start), "", err)
	return err == nil
}

// RunNote is Run for a check that says what it saw: a pass prints note
// (when not empty) indented under its PASS line, both under one lock, so
// that checks running at once do not interleave them.
func (t *Tally) RunNote(name string, fn func() (note string, err error)) bool {
	start := time.Now()
	note, err := fn()
	t.report(name, time.Since(start), note, err)
	return err == nil
}

// Report records the result of a check that took d, for checks timed by
// the caller.
func (t *Tally) Report(name string, d time.Duration, err error) { t.report(name, d, "", err) }

func (t *Tally) report(name string, d time.Duration, note string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err == nil {
		t.passed++
		if !t.Quiet {
			fmt.Fprintf(t.out(), "PASS %s %.2fs\n", name, d.Seconds())
			if note != "" {
				fmt.Fprintf(t.out(), "    %s\n", indent(note))
			}
		}
		return
	}
	t.failed++
	msg := strings.TrimSpace(err.Error())
	fmt.Fprintf(t.out(), "FAIL %s %.2fs\n    %s\n", name, d.Seconds(), indent(msg))
	t.failures = append(t.failures, name+": "+indent(FirstLines(msg, 4)))
}

// FirstLines is the first n lines of s, each cut to 300 bytes, with "..."
// for the rest: how a suite's summary repeats a failure.
func FirstLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append(lines[:n], "...")
	}
	for i, l := range lines {
		if len(l) > 300 {
			lines[i] = l[:300] + "..."
		}
	}
	return strings.Join(lines, "\n")
}

// Skip prints a SKIP line; it counts neither as passed nor as failed.
func (t *Tally) Skip(name, reason string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.out(), "SKIP %s: %s\n", name, reason)
}

// Note prints an indented line under the check it belongs to.
func (t *Tally) Note(format string, args ...any) {
	if t.Quiet {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.out(), "    "+format+"\n", args...)
}

// Failed returns how many checks failed so far.
func (t *Tally) Failed() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.failed
}

// Summary prints each failed check again with the first lines of its
// error, how long the suite took since start and its counts, the last
// lines of its output, and reports whether it passed: nothing failed and
// something passed (a suite that ran nothing did not pass).
func (t *Tally) Summary(suite string, start time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, f := range t.failures {
		fmt.Fprintf(t.out(), "%s: failed %s\n", suite, f)
	}
	fmt.Fprintf(t.out(), "%s: suite took %.1fs\n", suite, time.Since(start).Seconds())
	fmt.Fprintf(t.out(), "%s: %d passed, %d failed\n", suite, t.passed, t.failed)
	return t.failed == 0 && t.passed > 0
}

func (t *Tally) out() io.Writer {
	if t.Out == nil {
		return os.Stdout
	}
	return t.Out
}

// indent puts the lines after the first of s under an indented first line.
func indent(s string) string { return strings.ReplaceAll(s, "\n", "\n    ") }

// Case is one named case of a suite; Run reports its checks itself.
type Case struct {
	Name string
	Run  func()
}

// RunCases runs, in order, the cases that list selects (a -cases flag,
// see CaseList). A selected case for which ready, if not nil, returns an
// error is reported as failed with it instead of run: the suite's budget
// is spent, say. Names in list that no case has fail as "cases", so that
// a typo is not taken for a pass.
func RunCases(t *Tally, list string, cases []Case, ready func() error) {
	sel := ParseCaseList(list)
	var names []string
	for _, c := range cases {
		names = append(names, c.Name)
		if !sel.Selects(c.Name) {
			continue
		}
		if ready != nil {
			if err := ready(); err != nil {
				t.Report(c.Name, 0, err)
				continue
			}
		}
		c.Run()
	}
	for _, n := range sel.Unknown(names) {
		t.Report("cases", 0, fmt.Errorf("-cases: no case %q", n))
	}
}

// CaseList is the value of a -cases flag: case names separated by commas.
// An empty list selects every case.
type CaseList []string

// ParseCaseList splits a -cases flag's value, leaving out blank names.
func ParseCaseList(list string) CaseList {
	var l CaseList
	for _, n := range strings.Split(list, ",") {
		if n = strings.TrimSpace(n); n != "" {
			l = append(l, n)
		}
	}
	return l
}

// Selects reports whether the list selects the case called name.
func (l CaseList) Selects(name string) bool { return len(l) == 0 || slices.Contains(l, name) }

// Unknown returns the names of the list that are none of known, sorted,
// each once.
func (l CaseList) Unknown(known []string) []string {
	var out []string
	for _, n := range l {
		if !slices.Contains(known, n) && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}
