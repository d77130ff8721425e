package main

// The configuration file (--config FILE) holds the same settings as the
// flags, under the same names, in YAML:
//
//	listen: ["0.0.0.0:21", "[::]:21"]
//	upstream: 10.0.0.5:21
//	passive-ports: 21000-21099
//	max-sessions: 100
//	idle-timeout: 15m
//	proxy-protocol-chained: true
//
// The file is read generically over the flag set, so every flag is a key
// without code of its own. What a key takes follows from its flag:
//
//   - a repeatable flag (a listFlag, such as listen and advertise): a list
//     of strings, or one string;
//   - a comma-separated flag (its usage placeholder is a list, such as
//     CIDR[,CIDR] for allow, deny and proxy-protocol-from): a string, or a
//     list that is joined with commas;
//   - a boolean flag: true or false;
//   - an integer flag: an integer;
//   - a duration flag: a string such as "30s";
//   - any other flag: a string, or a number, which is taken as written
//     (passive-ports: 21000 is the range of one port).
//
// Each value goes through the flag's Set, as if it had been given on the
// command line, before parseFlags checks the values, so a value is refused
// with the same message wherever it came from; the error then names the
// file, the line and the key. A flag given on the command line wins over the
// file: its key is still decoded and type-checked, but its value is not
// used, and a repeatable flag on the command line replaces the file's list.

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// configFlag is the flag that names the file; the file cannot set it.
const configFlag = "config"

// configError is a problem with one key of the configuration file. It
// wraps the flag's own error, if there is one.
type configError struct {
	path string
	line int
	msg  string
	err  error
}

func (e *configError) Error() string {
	if e.line <= 0 {
		return fmt.Sprintf("config %s: %s", e.path, e.msg)
	}
	return fmt.Sprintf("config %s:%d: %s", e.path, e.line, e.msg)
}

func (e *configError) Unwrap() error { return e.err }

// configFile records where the settings taken from the file are, so that a
// later check of a value can point at its line.
type configFile struct {
	path  string
	lines map[string]int // key -> line, for the keys whose values were used
	items []configItem   // the strings given, for the lines of list items

	// For a file with services (services.go): the top level's mapping
	// and its services key; in the configFile of one service, the
	// service's name and line, which its errors name.
	root         *yaml.Node
	services     *yaml.Node
	servicesLine int
	service      string
	serviceLine  int
}

// configItem is one string of the file's value for key, at line.
type configItem struct {
	key, text string
	line      int
}

// keyKind is what a key of the file takes.
type keyKind int

const (
	keyString    keyKind = iota // a string or a number, as written
	keyList                     // repeatable: a list of strings, or one string
	keyCommaList                // comma-separated: a string, or a list joined with commas
	keyBool                     // true or false
	keyInt                      // an integer
	keyDuration                 // a string such as "30s"
)

// configWant says what a key of each kind takes, in an error message.
var configWant = map[keyKind]string{
	keyString:    "want a string",
	keyList:      "want a string or a list of strings",
	keyCommaList: "want a string or a list of strings",
	keyBool:      "want true or false",
	keyInt:       "want an integer",
	keyDuration:  `want a duration such as "30s"`,
}

// keyKindOf tells from a flag's value and usage what its key takes.
func keyKindOf(f *flag.Flag) keyKind {
	if _, ok := f.Value.(*listFlag); ok {
		return keyList
	}
	if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
		return keyBool
	}
	if g, ok := f.Value.(flag.Getter); ok {
		switch g.Get().(type) {
		case int, int64, uint, uint64:
			return keyInt
		case time.Duration:
			return keyDuration
		}
	}
	if name, _ := flag.UnquoteUsage(f); strings.Contains(name, ",") {
		return keyCommaList
	}
	return keyString
}

// applyConfig reads the YAML file at path and sets each flag of fs that it
// names and the command line did not set. An empty path does nothing. The
// returned configFile (nil for an empty path) locates later errors.
func applyConfig(fs *flag.FlagSet, path string) (*configFile, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	return applyConfigData(fs, path, data)
}

// applyConfigData is applyConfig for the file's contents, data.
func applyConfigData(fs *flag.FlagSet, path string, data []byte) (*configFile, error) {
	root, err := decodeYAML(path, data)
	if err != nil || root == nil {
		return &configFile{path: path}, err
	}
	c := &configFile{path: path, lines: map[string]int{}}
	if c.findServices(root) {
		return c, c.applyTop(fs, root)
	}
	if err := c.setKeys(fs, root, map[string]int{}, setAll); err != nil {
		return nil, err
	}
	return c, nil
}

// keyUse is what setKeys does with a key: set its flag, only check its
// value (another scope sets it), or pass over it.
type keyUse int

const (
	keySet keyUse = iota
	keyCheck
	keySkip
)

func setAll(*yaml.Node) (keyUse, error) { return keySet, nil }

// setKeys sets the flags of fs from the keys of the mapping node, with the
// file's strict checks: unknown or duplicate key, wrong type, bad value.
// use decides, before a key is looked up, whether it is set, only checked
// or passed over, or refuses it. A flag given on the command line is
// checked and not set: the command line wins.
func (c *configFile) setKeys(fs *flag.FlagSet, node *yaml.Node, seen map[string]int, use func(k *yaml.Node) (keyUse, error)) error {
	cmdline := onCommandLine(fs)
	for i := 0; i+1 < len(node.Content); i += 2 {
		k, v := node.Content[i], yamlDeref(node.Content[i+1])
		u, err := use(k)
		if err != nil {
			return err
		}
		if u == keySkip {
			continue
		}
		f, err := c.lookup(fs, k, seen)
		if err != nil {
			return err
		}
		vals, err := configValues(c, f.Name, keyKindOf(f), v)
		if err != nil {
			return err
		}
		if u == keyCheck || cmdline[f.Name] {
			continue
		}
		if err := c.set(fs, f, k.Line, vals); err != nil {
			return err
		}
	}
	return nil
}

// onCommandLine returns the names of the flags set on the command line.
func onCommandLine(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// lookup returns the flag that the key k names, refusing a duplicate, the
// config key itself and an unknown key.
func (c *configFile) lookup(fs *flag.FlagSet, k *yaml.Node, seen map[string]int) (*flag.Flag, error) {
	if k.Kind != yaml.ScalarNode {
		return nil, c.errorf(k.Line, nil, "a key must be a setting name")
	}
	key := k.Value
	if first, ok := seen[key]; ok {
		return nil, c.errorf(k.Line, nil, "duplicate key %q (first at line %d)", key, first)
	}
	seen[key] = k.Line
	if key == configFlag {
		return nil, c.errorf(k.Line, nil, "%s: not allowed in the configuration file", key)
	}
	f := fs.Lookup(key)
	if f == nil {
		if s := suggestFlag(fs, key); s != "" {
			return nil, c.errorf(k.Line, nil, "unknown key %q (did you mean %s?)", key, s)
		}
		return nil, c.errorf(k.Line, nil, "unknown key %q", key)
	}
	return f, nil
}

// set gives f the values of its key at line, and records where they are.
func (c *configFile) set(fs *flag.FlagSet, f *flag.Flag, line int, vals []configValue) error {
	c.lines[f.Name] = line
	for _, val := range vals {
		c.items = append(c.items, configItem{f.Name, val.text, val.line})
	}
	kind := keyKindOf(f)
	if kind == keyCommaList && len(vals) > 1 {
		texts := make([]string, len(vals))
		for i, val := range vals {
			texts[i] = val.text
		}
		vals = []configValue{{strings.Join(texts, ","), line}}
	}
	for _, val := range vals {
		if err := fs.Set(f.Name, val.text); err != nil {
			if kind == keyDuration {
				return c.errorf(val.line, err, "%s: %q: %s", f.Name, val.text, configWant[kind])
			}
			return c.errorf(val.line, err, "%s: %q: %v", f.Name, val.text, err)
		}
	}
	return nil
}

// decodeYAML parses data as one YAML document and returns its top-level
// mapping, or nil when the file holds no settings.
func decodeYAML(path string, data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil // empty, or only comments
		}
		return nil, yamlError(path, err)
	}
	var next yaml.Node
	if err := dec.Decode(&next); err == nil {
		return nil, &configError{path: path, line: next.Line, msg: "more than one YAML document"}
	} else if !errors.Is(err, io.EOF) {
		return nil, yamlError(path, err)
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	root := yamlDeref(doc.Content[0])
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return nil, nil // a bare "---"
	}
	if root.Kind != yaml.MappingNode {
		return nil, &configError{path: path, line: root.Line, msg: "want a mapping of setting names to values, such as \"upstream: 10.0.0.5:21\""}
	}
	return root, nil
}

// yamlLine finds the line in the YAML package's syntax errors.
var yamlLine = regexp.MustCompile(`^yaml: (?:line (\d+): )?`)

// yamlError turns a syntax error from the YAML package into a configError.
func yamlError(path string, err error) error {
	msg := err.Error()
	m := yamlLine.FindStringSubmatch(msg)
	if m == nil {
		return &configError{path: path, msg: msg, err: err}
	}
	line, _ := strconv.Atoi(m[1])
	return &configError{path: path, line: line, msg: msg[len(m[0]):], err: err}
}

// yamlDeref follows an alias to the node it names.
func yamlDeref(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return n.Alias
	}
	return n
}

// configValue is one string for a flag's Set, and the line it came from.
type configValue struct {
	text string
	line int
}

// configValues checks the node v against what key takes and returns its strings
// in order: one for a scalar, one per item for a list.
func configValues(c *configFile, key string, kind keyKind, v *yaml.Node) ([]configValue, error) {
	bad := func(n *yaml.Node) error { return c.errorf(n.Line, nil, "%s: %s", key, configWant[kind]) }
	if v.Kind == yaml.SequenceNode {
		if kind != keyList && kind != keyCommaList {
			return nil, bad(v)
		}
		var vals []configValue
		for _, n := range v.Content {
			n = yamlDeref(n)
			if !isYAMLText(n) {
				return nil, bad(n)
			}
			vals = append(vals, configValue{n.Value, n.Line})
		}
		return vals, nil
	}
	if v.Kind != yaml.ScalarNode {
		return nil, bad(v)
	}
	switch kind {
	case keyBool:
		var b bool
		if v.ShortTag() != "!!bool" || v.Decode(&b) != nil {
			return nil, bad(v)
		}
		return []configValue{{strconv.FormatBool(b), v.Line}}, nil
	case keyInt:
		var n int64
		if v.ShortTag() != "!!int" || v.Decode(&n) != nil {
			return nil, bad(v)
		}
		return []configValue{{strconv.FormatInt(n, 10), v.Line}}, nil
	case keyDuration:
		if v.ShortTag() != "!!str" {
			return nil, bad(v)
		}
	default:
		if !isYAMLText(v) {
			return nil, bad(v)
		}
	}
	return []configValue{{v.Value, v.Line}}, nil
}

// isYAMLText reports whether n is a scalar that a string flag takes as
// written: a string or a number, not a boolean, null or timestamp.
func isYAMLText(n *yaml.Node) bool {
	if n.Kind != yaml.ScalarNode {
		return false
	}
	switch n.ShortTag() {
	case "!!str", "!!int", "!!float":
		return true
	}
	return false
}

func (c *configFile) errorf(line int, err error, format string, args ...any) error {
	return &configError{path: c.path, line: line, msg: c.inService(fmt.Sprintf(format, args...)), err: err}
}

// inService prefixes msg with the service it is about, if any.
func (c *configFile) inService(msg string) string {
	if c.service == "" {
		return msg
	}
	return fmt.Sprintf("service %q: %s", c.service, msg)
}

// flagInError matches a flag as error messages name it, "--max-sessions".
var flagInError = regexp.MustCompile(`--([a-z0-9][a-z0-9-]*)`)

// locate points an error from parseFlags' checks at the file when the first
// flag it names was set by the file: "--max-sessions -1: want 0 or more"
// becomes "config ftpproxy.yaml:12: max-sessions -1: want 0 or more". The
// line is that of the list item the message quotes, if any, or of the key.
// Other errors are returned as they are.
func (c *configFile) locate(err error) error {
	var ce *configError
	if c == nil || err == nil || errors.As(err, &ce) {
		return err
	}
	msg := err.Error()
	m := flagInError.FindStringSubmatchIndex(msg)
	if m == nil && c.service != "" {
		return &configError{path: c.path, line: c.serviceLine, msg: c.inService(msg), err: err}
	}
	if m == nil {
		return err
	}
	key := msg[m[2]:m[3]]
	line, ok := c.lines[key]
	if !ok && c.service != "" {
		// A check of a service without a key of its own (upstream is
		// required): the service's line.
		return &configError{path: c.path, line: c.serviceLine, msg: c.inService(msg[:m[0]] + msg[m[0]+2:]), err: err}
	}
	if !ok {
		return err
	}
	rest := msg[m[1]:]
	for _, it := range c.items {
		if it.key == key && strings.Contains(rest, strconv.Quote(it.text)) {
			line = it.line
			break
		}
	}
	return &configError{path: c.path, line: line, msg: c.inService(msg[:m[0]] + key + rest), err: err}
}

// suggestFlag returns the flag name closest to an unknown key, or "" if none is
// close.
func suggestFlag(fs *flag.FlagSet, key string) string {
	norm := strings.ToLower(strings.ReplaceAll(strings.TrimLeft(key, "-"), "_", "-"))
	best, bestDist := "", 4
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == configFlag {
			return
		}
		if d := editDistance(norm, f.Name); d < bestDist {
			best, bestDist = f.Name, d
		}
	})
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// checkConfig is "ftpproxy check-config": it parses and checks args, the
// configuration file included, exactly as a start would, and starts
// nothing. It returns the exit code: 0 when the configuration is good, 2
// when it is not.
func checkConfig(args []string, stdout, stderr io.Writer) int {
	_, err := parseFlags(args, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		fmt.Fprintln(stderr, "ftpproxy:", err)
		return 2
	}
	fmt.Fprintln(stdout, "ftpproxy: config OK")
	return 0
}
