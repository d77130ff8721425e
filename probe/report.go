package probe

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// SchemaVersion is the version of the JSON report's schema
// (docs/probe.md). Fields may be added within a version; none is removed
// or changes meaning.
const SchemaVersion = 1

// Status is a check's verdict.
type Status int

// The verdicts, from best to worst.
const (
	OK   Status = iota // works
	Warn               // works here, or for some clients, but will bite
	Fail               // does not work
)

func (s Status) String() string {
	switch s {
	case OK:
		return "OK"
	case Warn:
		return "WARN"
	case Fail:
		return "FAIL"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// MarshalText writes OK, WARN or FAIL.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads OK, WARN or FAIL.
func (s *Status) UnmarshalText(b []byte) error {
	switch string(b) {
	case "OK":
		*s = OK
	case "WARN":
		*s = Warn
	case "FAIL":
		*s = Fail
	default:
		return fmt.Errorf("probe: unknown status %q", b)
	}
	return nil
}

// Check names: the values of Result.Check. An alternate port's TCP check
// is CheckTCP+"/"+port, e.g. "tcp/2121".
const (
	CheckDNS4     = "dns4"
	CheckDNS6     = "dns6"
	CheckTCP      = "tcp"
	CheckGreeting = "greeting"
	CheckFEAT     = "feat"
	CheckTLS      = "tls"
	CheckLogin    = "login"
	CheckPASV     = "pasv"
	CheckEPSV     = "epsv"
	CheckLIST     = "list"
	CheckActive   = "active"
	CheckDeadline = "deadline"
)

// Result is the outcome of one check.
type Result struct {
	Check   string `json:"check"`
	Status  Status `json:"status"`
	Finding string `json:"finding"`       // what was seen, in plain words
	Fix     string `json:"fix,omitempty"` // what to do about it
}

// Line formats r as "STATUS check: finding. fix."
func (r Result) Line() string {
	var b strings.Builder
	b.WriteString(r.Status.String())
	b.WriteByte(' ')
	b.WriteString(r.Check)
	b.WriteString(": ")
	b.WriteString(sentence(r.Finding))
	if r.Fix != "" {
		b.WriteByte(' ')
		b.WriteString(sentence(r.Fix))
	}
	return b.String()
}

// sentence ends s with a full stop unless it ends with one already.
func sentence(s string) string {
	s = strings.TrimSpace(s)
	if strings.HasSuffix(s, ".") {
		return s
	}
	return s + "."
}

// Transcript directions.
const (
	DirSent = "sent" // a line the probe sent
	DirRecv = "recv" // a line the server sent
	DirNote = "note" // what happened: a connection opened, a timeout
)

// Transcript connection names.
const (
	ConnControl = "control" // the control connection the checks run on
	ConnTLS     = "tls"     // the second control connection, for AUTH TLS
	ConnData    = "data"    // data connections
)

// Entry is one line of the transcript.
type Entry struct {
	MS   int64  `json:"ms"`   // milliseconds since the probe started
	Conn string `json:"conn"` // ConnControl, ConnTLS or ConnData
	Dir  string `json:"dir"`  // DirSent, DirRecv or DirNote
	Text string `json:"text"`
}

// Report is the outcome of a probe.
type Report struct {
	Schema     int      `json:"schema"`
	Target     string   `json:"target"`            // the server, host:port
	Through    string   `json:"through,omitempty"` // the FTP proxy probed through
	Status     Status   `json:"status"`            // the worst Result's
	ExitCode   int      `json:"exit_code"`         // 0 OK, 1 warnings, 2 failures
	ElapsedMS  int64    `json:"elapsed_ms"`
	Results    []Result `json:"results"`
	Transcript []Entry  `json:"transcript"`
}

// finish sets the summary fields.
func (r *Report) finish(elapsed time.Duration) {
	r.ElapsedMS = elapsed.Milliseconds()
	r.Status = OK
	for _, res := range r.Results {
		r.Status = max(r.Status, res.Status)
	}
	r.ExitCode = int(r.Status)
}

// Result returns the result of check, if it ran.
func (r *Report) Result(check string) (Result, bool) {
	for _, res := range r.Results {
		if res.Check == check {
			return res, true
		}
	}
	return Result{}, false
}

// WriteText writes the result lines, after the transcript if transcript is
// set.
func (r *Report) WriteText(w io.Writer, transcript bool) error {
	var b strings.Builder
	if transcript {
		fmt.Fprintf(&b, "transcript of %s", r.Target)
		if r.Through != "" {
			fmt.Fprintf(&b, " through %s", r.Through)
		}
		b.WriteString(":\n")
		for _, e := range r.Transcript {
			arrow := "  "
			switch e.Dir {
			case DirSent:
				arrow = "->"
			case DirRecv:
				arrow = "<-"
			}
			fmt.Fprintf(&b, "%6dms %-7s %s %s\n", e.MS, e.Conn, arrow, e.Text)
		}
		b.WriteByte('\n')
	}
	for _, res := range r.Results {
		b.WriteString(res.Line())
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as one indented JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
