package peers

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Preflight checks what a suite needs before it changes anything: root
// (rootFor says what for, in the error without it) and the tools, each of
// which must be in PATH. It is the first thing a suite's setup does, so
// that a machine without them fails at once with a line that says how to
// fix it rather than halfway through the topology.
func Preflight(rootFor string, tools ...string) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root for " + rootFor)
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (interop/install-peers.sh installs it)", tool)
		}
	}
	return nil
}

// NetnsPrefix returns the prefix of a run's network namespaces: flag (a
// suite's -prefix, which its run.sh sets to what its cleanup looks for)
// when not empty, or else <tag>-<pid>, which no other run uses.
func NetnsPrefix(flag, tag string) string {
	if flag != "" {
		return flag
	}
	return fmt.Sprintf("%s-%d", tag, os.Getpid())
}

// AbsPaths makes each path absolute, in place: the suites hand their path
// flags to programs that run in other directories.
func AbsPaths(paths ...*string) error {
	for _, p := range paths {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	return nil
}

// ProxyBinary returns the ftpproxy binary at path made absolute, once it
// exists: a suite that starts proxies cannot run without it.
func ProxyBinary(path string) (string, error) {
	bin, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("ftpproxy binary: %w", err)
	}
	return bin, nil
}

// WorkDir returns a suite's work directory: dir (its -work flag), made if
// missing, or else a new directory named after pattern (os.MkdirTemp) in
// base, or in os.TempDir() when base is empty. Either way it gets mode
// 0755: the servers run their sessions as "daemon", which must enter it.
func WorkDir(dir, base, pattern string) (string, error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
	} else {
		var err error
		if dir, err = os.MkdirTemp(base, pattern); err != nil {
			return "", err
		}
	}
	return dir, os.Chmod(dir, 0o755)
}

// CleanWorkDir removes a suite's work directory at the end when remove
// says so (every check passed, no -keep and no -work), and otherwise
// prints "<suite>: work directory kept: <dir>", so that a failure's logs
// can be read. An empty dir (setup failed before making one) is left
// alone.
func CleanWorkDir(suite, dir string, remove bool) {
	switch {
	case dir == "":
	case remove:
		os.RemoveAll(dir)
	default:
		fmt.Printf("%s: work directory kept: %s\n", suite, dir)
	}
}
