package main

import (
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ftpproxy/ftpproxy/proxy"
)

func TestParseFlagsRefusesBadValues(t *testing.T) {
	tests := []struct {
		args     []string
		wantFlag string // the flag the error must name
	}{
		{[]string{}, "--upstream"},
		{[]string{"--upstream", "nohostport"}, "--upstream"},
		{[]string{"--upstream", "h:21", "--listen", "2121"}, "--listen"},
		{[]string{"--upstream", "h:21", "--passive-ports", "30000-20000"}, "--passive-ports"},
		{[]string{"--upstream", "h:21", "--passive-ports", "0-10"}, "--passive-ports"},
		{[]string{"--upstream", "h:21", "--advertise", "{{ NoSuchFunc }}"}, "--advertise"},
		{[]string{"--upstream", "h:21", "--advertise", "10.0.0.0/33=10.1.1.1"}, "--advertise"},
		{[]string{"--upstream", "h:21", "--log-format", "xml"}, "--log-format"},
		{[]string{"--upstream", "h:21", "--log-level", "trace"}, "--log-level"},
		{[]string{"--upstream", "h:21", "--log-level", "panic"}, "--log-level"},
		{[]string{"--upstream", "h:21", "--idle-timeout", "0s"}, "--idle-timeout"},
		{[]string{"--upstream", "h:21", "stray"}, "stray"},
		{[]string{"--upstream", "h:21", "--active-ports", "x"}, "--active-ports"},
		{[]string{"--upstream", "h:21", "--proxy-protocol-from", "10.0.0.0/40"}, "--proxy-protocol-from"},
		{[]string{"--upstream", "h:21", "--upstream-proxy-protocol", "v3"}, "--upstream-proxy-protocol"},
		{[]string{"--upstream", "h:21", "--health", "8021"}, "--health"},
		{[]string{"--upstream", "h:21", "--allow", "10.0.0.0/8,x"}, "--allow"},
		{[]string{"--upstream", "h:21", "--deny", "::/129"}, "--deny"},
		{[]string{"--upstream", "h:21", "--max-sessions", "-1"}, "--max-sessions"},
		{[]string{"--upstream", "h:21", "--max-line-length", "100"}, "--max-line-length"},
		{[]string{"--upstream", "h:21", "--ban-time", "-1m"}, "--ban-time"},
		{[]string{"--upstream", "h:21", "--upstream-data-mode", "both"}, "--upstream-data-mode"},
		{[]string{"--upstream", "h:21", "--upstream-pasv-address", "yes"}, "--upstream-pasv-address"},
		{[]string{"--upstream", "h:21", "--data-path", "ebpf"}, "--data-path"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := parseFlags(tt.args, io.Discard)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.wantFlag) {
				t.Fatalf("error %q does not name %s", err, tt.wantFlag)
			}
		})
	}
}

func TestParseFlagsDefaultsAndValues(t *testing.T) {
	o, err := parseFlags([]string{"--upstream", "10.0.0.5:21"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.listen) != 1 || o.listen[0] != ":21" || o.passivePorts != nil || o.advertiser.Static.IsValid() ||
		o.logFormat != "json" || o.logLevel != zerolog.InfoLevel || o.drainTimeout != 30*time.Second {
		t.Fatalf("defaults: %+v", o)
	}

	o, err = parseFlags([]string{
		"--upstream", "[2001:db8::5]:21", "--listen", "127.0.0.1:2121", "--listen", "[::1]:2121",
		"--passive-ports", "21000-21009", "--advertise", "203.0.113.7", "--advertise", "10.0.0.0/8=10.1.1.1",
		"--log-format", "console", "--log-level", "debug",
		"--upstream-data-mode", "passive", "--active-ports", "20000-20009", "--upstream-pasv-address", "reply",
		"--proxy-protocol-from", "127.0.0.1,10.0.0.0/8", "--upstream-proxy-protocol", "v2", "--health", "127.0.0.1:8021",
		"--allow", "10.0.0.0/8", "--deny", "10.9.0.0/16", "--max-sessions", "100", "--max-sessions-per-ip", "5",
		"--max-login-failures", "0", "--data-stall-timeout", "1m",
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.listen, ",") != "127.0.0.1:2121,[::1]:2121" {
		t.Errorf("listen = %v", o.listen)
	}
	if o.passivePorts.Size() != 10 {
		t.Errorf("passive pool size = %d", o.passivePorts.Size())
	}
	if o.advertiser.Static != netip.MustParseAddr("203.0.113.7") || len(o.advertiser.Rules) != 1 || o.logLevel != zerolog.DebugLevel {
		t.Errorf("advertiser %+v level %v", o.advertiser, o.logLevel)
	}
	cfg := o.proxyConfig()
	if len(cfg.Allow) != 1 || len(cfg.Deny) != 1 || cfg.MaxSessions != 100 || cfg.MaxSessionsPerIP != 5 ||
		cfg.MaxLoginFailures >= 0 || cfg.DataStallTimeout != time.Minute || cfg.MaxLineLength != 4096 {
		t.Errorf("limits: %+v", cfg)
	}
	if len(cfg.ProxyProtocolFrom) != 2 || cfg.UpstreamProxyProtocol != 2 || o.health != "127.0.0.1:8021" {
		t.Errorf("PROXY protocol options: %+v", cfg)
	}
	if cfg.UpstreamDataMode != proxy.DataModePassive || cfg.ActivePorts.Size() != 10 || !cfg.UpstreamPASVAddress {
		t.Errorf("data options: %+v", cfg)
	}
	if cfg.Upstream != "[2001:db8::5]:21" || cfg.Advertiser.Static != o.advertiser.Static || cfg.PassivePorts != o.passivePorts {
		t.Errorf("proxyConfig = %+v", cfg)
	}
}
