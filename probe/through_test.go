package probe

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ftpproxy/ftpproxy/proxy"
)

// startProxy runs ftpproxy in front of upstream on 127.0.0.1 and returns
// its address.
func startProxy(t *testing.T, upstream string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := proxy.New(proxy.Config{
		Upstream:          upstream,
		Logger:            zerolog.Nop(),
		DialTimeout:       roomy,
		GreetingTimeout:   roomy,
		DataAcceptTimeout: roomy,
		DataLinger:        time.Second,
		WriteTimeout:      roomy,
	})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		select {
		case err := <-served:
			if !errors.Is(err, proxy.ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		case <-time.After(roomy):
			t.Errorf("Serve did not return after Close")
		}
	})
	return ln.Addr().String()
}

// TestThroughProxy probes a server that announces a private address in its
// 227, directly and then through ftpproxy in front of it: the direct probe
// warns about the passive address, the one through the proxy finds every
// check OK, which is how a user proves the proxy fixes their path.
func TestThroughProxy(t *testing.T) {
	f := startFake(t, fakeOpts{pasvIP: "10.0.0.5"})
	proxyAddr := startProxy(t, f.addr.String())
	base := Config{
		Host: "127.0.0.1", Port: f.addr.Port(), Password: secret,
		Timeout: roomy, Deadline: bounded, Dial: testNet{}.Dial,
	}

	direct := Run(context.Background(), base)
	if r, _ := direct.Result(CheckPASV); r.Status != Warn || direct.ExitCode != 1 {
		text, _ := outputs(t, direct)
		t.Fatalf("direct: pasv %s, exit %d; want WARN and 1:\n%s", r.Status, direct.ExitCode, text)
	}

	cfg := base
	cfg.Through = proxyAddr
	rep := Run(context.Background(), cfg)
	text, js := outputs(t, rep)
	checkReport(t, rep, map[string]want{
		CheckTCP:      {OK, []string{"the proxy 127.0.0.1 port", "in front of " + f.addr.String()}},
		CheckGreeting: {OK, []string{"220 fake FTP ready"}},
		CheckFEAT:     {OK, nil},
		CheckTLS:      {OK, []string{"not offered"}},
		CheckLogin:    {OK, nil},
		CheckPASV:     {OK, []string{"227 names the control address"}},
		CheckEPSV:     {OK, nil},
		CheckLIST:     {OK, []string{"LIST over PASV", "226"}},
		CheckActive:   {OK, []string{"PORT", "connected"}},
	}, 0, text)
	if rep.Through != proxyAddr || !strings.Contains(text, "through "+proxyAddr) {
		t.Errorf("the report does not name the proxy: through %q\n%s", rep.Through, text)
	}
	if strings.Contains(text, secret) || strings.Contains(js, secret) {
		t.Errorf("the password appears in the output:\n%s", text)
	}
	if got := f.passwords(); len(got) != 2 || got[0] != secret || got[1] != secret {
		t.Errorf("the server got passwords %q, want the probe's, once directly and once through the proxy", got)
	}
}
