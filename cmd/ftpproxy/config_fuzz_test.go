package main

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"
)

// FuzzConfigFile: whatever a configuration file holds, reading it sets
// flags or fails with an error that names the file; it never panics. The
// flags are one of each kind a key can take (string, list, comma list,
// bool, int, duration), with names of real settings so that the services
// layout is read too.
func FuzzConfigFile(f *testing.F) {
	f.Add([]byte("upstream: 10.0.0.5:21\nlisten: [\":21\", \":2121\"]\nmax-sessions: 100\nidle-timeout: 15m\n"))
	f.Add([]byte("allow:\n  - 10.0.0.0/8\n  - 192.168.0.0/16\nproxy-protocol-chained: true\n"))
	f.Add([]byte("services:\n  a:\n    listen: \":21\"\n    upstream: h:21\nlog-level: debug\n"))
	f.Add([]byte("base: &b 10.0.0.5:21\nupstream: *b\n"))
	f.Add([]byte("---\n...\n---\nupstream: x\n"))
	f.Add([]byte("max-sessions: 1e3\nidle-timeout: 30\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		const path = "/etc/ftpproxy/ftpproxy.yaml"
		fs := flag.NewFlagSet("fuzz", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var listen listFlag
		fs.Var(&listen, "listen", "`ADDR` to listen on")
		fs.String("upstream", "", "`HOST:PORT` of the server")
		fs.String("allow", "", "`CIDR[,CIDR]` admitted")
		fs.Bool("proxy-protocol-chained", false, "chained")
		fs.Int("max-sessions", 0, "sessions")
		fs.Duration("idle-timeout", time.Minute, "idle")
		fs.String("log-level", "info", "level")
		_, err := applyConfigData(fs, path, data)
		if err == nil {
			return
		}
		var ce *configError
		if !errors.As(err, &ce) && !strings.Contains(err.Error(), path) {
			t.Fatalf("error %q names neither a line nor the file", err)
		}
	})
}
