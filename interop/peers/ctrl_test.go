package peers

import (
	"bufio"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// fakeServer accepts one connection on 127.0.0.1, sends greeting, then
// answers each command line it reads with answers[verb] (nothing for a
// verb it has no answer for); after "BYE" it closes the connection.
func fakeServer(t *testing.T, greeting string, answers map[string]string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte(greeting))
		sc := bufio.NewScanner(c)
		for sc.Scan() {
			verb, _, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
			if verb == "BYE" {
				return
			}
			c.Write([]byte(answers[verb]))
		}
	}()
	return l.Addr().String()
}

func TestDialLogin(t *testing.T) {
	addr := fakeServer(t, "220-Welcome\r\n220-to the test\r\n220 server\r\n", map[string]string{
		"USER": "331 Password please.\r\n",
		"PASS": "230 Logged in.\r\n",
		"TYPE": "200 Binary.\r\n",
		"PASV": "227 Entering Passive Mode (10,20,0,2,93,169).\r\n",
		"STAT": "211-Status\r\n 211 is not the end: a space follows the code\r\n211 End\r\n",
		"NOOP": "200-\r\n",
	})
	c, err := DialLogin(addr, "127.0.0.1", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ap, err := c.PASV()
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParseAddrPort("10.20.0.2:23977"); ap != want {
		t.Errorf("PASV: %v, want %v", ap, want)
	}
	code, text, err := c.Cmd("STAT")
	if err != nil || code != 211 {
		t.Fatalf("STAT: %d %q %v", code, text, err)
	}
	if want := "211-Status\n 211 is not the end: a space follows the code\n211 End"; text != want {
		t.Errorf("STAT text %q, want %q", text, want)
	}
	// A reply that does not end within the limit.
	if err := c.Send("NOOP"); err != nil {
		t.Fatal(err)
	}
	if code, text, err := c.ReplyWithin(200 * time.Millisecond); err == nil {
		t.Errorf("an unfinished reply: %d %q, no error", code, text)
	}
	for _, line := range []string{"<- 220 server", "-> USER ftptest", "<- 230 Logged in.", "-> PASV", "<- 211 End"} {
		if !strings.Contains(c.Transcript.String(), line+"\n") {
			t.Errorf("transcript without %q:\n%s", line, c.Transcript.String())
		}
	}
}

func TestDialCtrlRefused(t *testing.T) {
	addr := fakeServer(t, "421 Too many connections\r\n", nil)
	if _, err := DialCtrl(addr, "", 5*time.Second); err == nil || !strings.Contains(err.Error(), "greeting from "+addr+": 421") {
		t.Errorf("a 421 greeting: %v", err)
	}
	addr = fakeServer(t, "220 ok\r\n", map[string]string{"USER": "530 Not you.\r\n"})
	if _, err := DialLogin(addr, "", 5*time.Second); err == nil || !strings.HasPrefix(err.Error(), "USER: 530") {
		t.Errorf("a refused USER: %v", err)
	}
}

func TestCtrlClosed(t *testing.T) {
	addr := fakeServer(t, "220 ok\r\n", map[string]string{"NOOP": "200 ok\r\n"})
	c, err := DialCtrl(addr, "", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Closed(100 * time.Millisecond) {
		t.Error("an idle open connection reported closed")
	}
	// A reply that arrives while Closed looks stays for Reply.
	if err := c.Send("NOOP"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if c.Closed(time.Second) {
		t.Error("a connection with a reply waiting reported closed")
	}
	if code, text, err := c.Reply(); err != nil || code != 200 {
		t.Errorf("the reply after Closed: %d %q %v", code, text, err)
	}
	if err := c.Send("BYE"); err != nil {
		t.Fatal(err)
	}
	if !c.Closed(2 * time.Second) {
		t.Error("a connection the server closed not reported closed")
	}
}

func TestParsePASV(t *testing.T) {
	for text, want := range map[string]string{
		"227 Entering Passive Mode (198,51,100,10,94,16).": "198.51.100.10:24080",
		"227 =(10,99,0,5,0,21)":                            "10.99.0.5:21",
	} {
		ap, err := ParsePASV(text)
		if err != nil || ap.String() != want {
			t.Errorf("ParsePASV(%q) = %v, %v; want %s", text, ap, err, want)
		}
	}
	for _, text := range []string{"227 Entering Passive Mode", "227 (10,0,0,256,1,1)", "227 (1,2,3,4,5)"} {
		if ap, err := ParsePASV(text); err == nil {
			t.Errorf("ParsePASV(%q) = %v, no error", text, ap)
		}
	}
}
