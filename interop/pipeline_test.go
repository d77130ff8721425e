//go:build interop

package interop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

// The pipelining suite: clients that send several commands before the
// replies to the first have arrived (RFC 959 section 4.1: "server-FTP
// processes should queue any commands that arrive while a preceding
// command is in progress"), through the proxy to each real server. A raw
// client writes whole sessions in one write and checks every reply against
// the command it answers; lftp runs with ftp:sync-mode off; the last cases
// are regressions for server quirks (pure-ftpd's final 150 after an early
// close of the data connection, its 500 to an urgent ABOR) and the bound on
// a client that floods the proxy with commands. curl is not used here: it
// sends one command at a time and waits for each reply.

// Bounds of the raw client: every read, write, dial and accept has one.
const (
	pipeReplyTimeout = 10 * time.Second // one reply on the control connection
	pipeWriteTimeout = 10 * time.Second // one write on the control connection
	pipeDialTimeout  = 5 * time.Second  // control or data connection
	pipeDataTimeout  = 10 * time.Second // a data connection, from dial or accept to EOF
	pipeFloodTimeout = 30 * time.Second // the flood case, from the write to the close
	pipeMaxLine      = 4096             // longest reply line accepted
	pipeMaxLines     = 1000             // most lines in one multi-line reply
	pipeTraceLines   = 40               // transcript lines shown with a failure
)

// pipeActiveLo and pipeActiveHi bound the ports the raw client listens on
// for PORT and EPRT: below the kernel's ephemeral range (32768 and up) and
// outside the servers' (22000-22299) and the proxy's (-passive-ports)
// passive ranges.
const pipeActiveLo, pipeActiveHi = 24000, 24099

// pipeFloodPairs is how many "USER x / PASS wrong" pairs the flood case
// writes at once (about 100 KB, more than the proxy's 64 KiB backlog
// bound); pipeFloodMaxPASS is how many of them the server may see.
const (
	pipeFloodPairs   = 5000
	pipeFloodMaxPASS = 5
)

// TestPipeline runs the pipelining cases against every server, through the
// proxy (or, with -direct, straight at the servers, to see what the servers
// themselves do), and prints one line per case and the totals.
func TestPipeline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	peersDir := absPath(*flagPeers)
	proxyBin := absPath(*flagProxyBin)
	if _, err := os.Stat(peersDir); err != nil {
		t.Fatalf("%v (run interop/install-peers.sh first)", err)
	}
	if !*flagDirect {
		if _, err := os.Stat(proxyBin); err != nil {
			t.Fatalf("%v (build it: go build -o bin/ftpproxy ./cmd/ftpproxy)", err)
		}
	}
	if _, err := exec.LookPath("lftp"); err != nil {
		t.Fatalf("lftp: %v (run interop/install-peers.sh first)", err)
	}
	serverHost, serverPortS, err := net.SplitHostPort(*flagServer)
	if err != nil {
		t.Fatal(err)
	}
	serverPort, _ := strconv.Atoi(serverPortS)

	work := suiteWork(t, "pipeline")
	tl := &tally{}
	defer func() {
		if tl.failed > 0 || *flagKeep || t.Failed() {
			fmt.Printf("pipeline: work directory kept: %s\n", work)
		} else {
			os.RemoveAll(work)
		}
	}()

	mode := "proxy"
	if *flagDirect {
		mode = "direct"
	}
	fmt.Printf("pipeline: mode %s, servers %s, work %s\n", mode, *flagServers, work)
	start := time.Now()
	for i, sname := range splitList(*flagServers) {
		kind, ok := peers.KindByName(sname)
		if !ok {
			t.Fatalf("unknown server %q", sname)
		}
		runPipelineServer(ctx, tl, kind, peersDir, proxyBin, work, serverHost, serverPort, *flagIsolated && i == 0)
	}
	fmt.Printf("pipeline: done in %.1fs\n", time.Since(start).Seconds())
	fmt.Printf("pipeline: %d passed, %d failed\n", tl.passed, tl.failed)
	if tl.failed > 0 {
		sort.Strings(tl.failures)
		t.Errorf("%d pipeline cases failed:\n  %s", tl.failed, strings.Join(tl.failures, "\n  "))
	}
}

// pipeCase is one named case of the suite.
type pipeCase struct {
	name string
	fn   func() error
}

// pipeEnv is what the cases of one server share.
type pipeEnv struct {
	ctx  context.Context
	srv  *peers.Server
	px   *peers.Proxy // nil with -direct
	addr string       // where clients connect: the proxy, or the server with -direct
	// dataHost is the only address a data connection may involve: the
	// host every 227 must name and every PORT/EPRT connection must come
	// from (the proxy's, or the server's with -direct).
	dataHost string
	source   string // the clients' address
	work     string
	files    map[string]peers.File // on the server, by label: 0B, 1B, 64KiB, 4MiB, 16MiB
	upload   peers.File            // 1 MiB, local, for STOR
	upData   []byte
	big      peers.File // 4 MiB, local, for lftp's put
}

// runPipelineServer starts one server and the proxy in front of it, and
// runs every pipelining case against them; with isolation it first checks
// that run.sh's firewall rules hold.
func runPipelineServer(ctx context.Context, tl *tally, kind peers.Kind, peersDir, proxyBin, work, serverHost string, serverPort int, isolation bool) {
	g := &group{tl: tl, label: "pipeline/" + kind.Name}
	defer g.flush()
	var srv *peers.Server
	if !g.run("start", func() error {
		var err error
		srv, err = peers.StartServer(ctx, kind, peersDir, work, serverHost, serverPort)
		return err
	}) {
		return
	}
	defer srv.Stop()
	if isolation {
		g.run("isolation", func() error { return checkIsolation(ctx, srv.Addr(), *flagClientIP) })
	}
	e := &pipeEnv{ctx: ctx, srv: srv, addr: srv.Addr(), dataHost: serverHost, source: *flagClientIP, work: filepath.Join(work, "local-"+kind.Name)}
	if !*flagDirect {
		if !g.run("proxy-start", func() error {
			var err error
			e.px, err = peers.StartProxy(ctx, peers.ProxyConfig{
				Bin: proxyBin, Listen: *flagProxyAddr, Upstream: srv.Addr(), PassivePorts: *flagPorts,
				LogPath: filepath.Join(srv.Dir, "ftpproxy.log"),
				// Sessions a broken case leaves behind must not hold
				// the stop for the default 30 s.
				Args: []string{"--drain-timeout", "2s"},
			})
			return err
		}) {
			return
		}
		e.addr = *flagProxyAddr
		e.dataHost, _, _ = net.SplitHostPort(*flagProxyAddr)
	}
	if !g.run("files", e.prepare) {
		if e.px != nil {
			e.px.Stop()
		}
		return
	}
	g.flush()

	cases := []pipeCase{
		{"raw-login", e.caseLogin},
		{"raw-pasv-retr-4MiB", e.casePasvRetr},
		{"raw-epsv-stor-1MiB", e.caseEpsvStor},
		{"raw-port-list", func() error { return e.caseActiveList(false) }},
		{"raw-eprt-list", func() error { return e.caseActiveList(true) }},
		{"raw-back-to-back", e.caseBackToBack},
		{"raw-whole-session", e.caseWholeSession},
	}
	for _, m := range (peers.Lftp{}).Modes() {
		cases = append(cases,
			pipeCase{"lftp-" + m + "-get-4MiB", func() error { return e.caseLftpGet(m) }},
			pipeCase{"lftp-" + m + "-put-4MiB", func() error { return e.caseLftpPut(m) }},
			pipeCase{"lftp-" + m + "-mirror-20", func() error { return e.caseLftpMirror(m) }})
	}
	cases = append(cases,
		pipeCase{"quirk-early-close", e.caseEarlyClose},
		pipeCase{"quirk-abor-telnet", func() error { return e.caseAbort(false) }},
		pipeCase{"quirk-abor-ftplib", func() error { return e.caseAbort(true) }})
	for _, c := range cases {
		g.run(c.name, c.fn)
		g.flush()
	}

	if e.px != nil {
		g.run("proxy-stop", e.px.Stop)
	}
	// The flood gets a proxy of its own: failed logins count towards a
	// ban of the client address in the proxy that sees them.
	g.run(fmt.Sprintf("flood-%dx-user-pass", pipeFloodPairs), func() error { return e.caseFlood(proxyBin) })
}

// prepare writes the server-side files of known content and the local ones.
func (e *pipeEnv) prepare() error {
	if err := os.MkdirAll(e.work, 0o755); err != nil {
		return err
	}
	e.files = map[string]peers.File{}
	for i, s := range []struct {
		label string
		size  int64
	}{{"0B", 0}, {"1B", 1}, {"64KiB", 64 << 10}, {"4MiB", 4 << 20}, {"16MiB", 16 << 20}} {
		f, err := e.serverFile("p-"+s.label+".bin", s.size, uint64(100+i))
		if err != nil {
			return err
		}
		e.files[s.label] = f
	}
	var err error
	if e.upload, err = peers.WriteRandom(filepath.Join(e.work, "up-1MiB.bin"), 1<<20, 200); err != nil {
		return err
	}
	if e.upData, err = os.ReadFile(e.upload.Path); err != nil {
		return err
	}
	e.big, err = peers.WriteRandom(filepath.Join(e.work, "up-4MiB.bin"), 4<<20, 201)
	return err
}

// serverFile writes size random bytes as the user's file name (a path
// below the user's root), owned by the session account.
func (e *pipeEnv) serverFile(name string, size int64, seed uint64) (peers.File, error) {
	p := e.srv.Path(name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return peers.File{}, err
	}
	os.Chown(filepath.Dir(p), e.srv.UID, e.srv.GID)
	f, err := peers.WriteRandom(p, size, seed)
	if err != nil {
		return f, err
	}
	f.Name = name
	return f, os.Chown(p, e.srv.UID, e.srv.GID)
}

// --- the raw client ---------------------------------------------------------

// ftpReply is one complete reply: its code and every line, CRLF removed.
type ftpReply struct {
	Code  int
	Lines []string
}

func (r ftpReply) String() string { return strings.Join(r.Lines, " | ") }

// rawFTP is a bare FTP control connection: it writes the bytes it is given,
// parses the replies (RFC 959 section 4.2, multi-line included), bounds
// every call with a deadline, and keeps a transcript for failure messages.
type rawFTP struct {
	conn  *net.TCPConn
	r     *bufio.Reader
	trace []string
}

// dialRaw opens a control connection to addr from the source address.
func dialRaw(ctx context.Context, addr, source string) (*rawFTP, error) {
	d := net.Dialer{Timeout: pipeDialTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &rawFTP{conn: c.(*net.TCPConn), r: bufio.NewReaderSize(c, pipeMaxLine)}, nil
}

func (c *rawFTP) Close() { c.conn.Close() }

func (c *rawFTP) note(dir, line string) {
	if strings.HasPrefix(line, "PASS ") {
		line = "PASS ****"
	}
	if len(line) > 200 {
		line = line[:200] + "..."
	}
	c.trace = append(c.trace, dir+" "+line)
}

// failf returns an error with the end of the transcript.
func (c *rawFTP) failf(format string, args ...any) error {
	tr := c.trace
	if len(tr) > pipeTraceLines {
		tr = tr[len(tr)-pipeTraceLines:]
	}
	return fmt.Errorf(format+"\ntranscript (> sent, < received):\n  %s", append(args, strings.Join(tr, "\n  "))...)
}

// send writes the command lines, each ended with CRLF, in one write.
func (c *rawFTP) send(lines ...string) error {
	var b bytes.Buffer
	for _, l := range lines {
		b.WriteString(l)
		b.WriteString("\r\n")
		c.note(">", l)
	}
	return c.write(b.Bytes())
}

// write writes b in one call, bounded by pipeWriteTimeout.
func (c *rawFTP) write(b []byte) error {
	c.conn.SetWriteDeadline(time.Now().Add(pipeWriteTimeout))
	if _, err := c.conn.Write(b); err != nil {
		return c.failf("write: %v", err)
	}
	return nil
}

// sendUrgent sends b with MSG_OOB: its last byte is TCP urgent data.
func (c *rawFTP) sendUrgent(b []byte) error {
	rc, err := c.conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	deadline := time.Now().Add(pipeWriteTimeout)
	err = rc.Write(func(fd uintptr) bool {
		serr = syscall.Sendto(int(fd), b, syscall.MSG_OOB, nil)
		return serr != syscall.EAGAIN || time.Now().After(deadline)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return c.failf("urgent write: %v", err)
	}
	return nil
}

// readLine reads one line of at most pipeMaxLine bytes, without its CRLF.
func (c *rawFTP) readLine() (string, error) {
	c.conn.SetReadDeadline(time.Now().Add(pipeReplyTimeout))
	b, err := c.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return "", fmt.Errorf("reply line longer than %d bytes", pipeMaxLine)
	}
	if err != nil {
		if len(b) > 0 {
			c.note("<", string(b)+" [partial]")
		}
		return "", err
	}
	line := strings.TrimRight(string(b), "\r\n")
	c.note("<", line)
	return line, nil
}

// replyCode parses the "ddd" that opens a reply line and tells whether the
// line opens a multi-line reply ("ddd-").
func replyCode(line string) (code int, multi bool, ok bool) {
	if len(line) < 3 {
		return 0, false, false
	}
	for i := 0; i < 3; i++ {
		if line[i] < '0' || line[i] > '9' {
			return 0, false, false
		}
	}
	if line[0] < '1' || line[0] > '5' {
		return 0, false, false
	}
	if len(line) > 3 && line[3] != ' ' && line[3] != '-' {
		return 0, false, false
	}
	code, _ = strconv.Atoi(line[:3])
	return code, len(line) > 3 && line[3] == '-', true
}

// read reads one complete reply. A multi-line reply (RFC 959 section 4.2)
// opens with "ddd-" and ends with the first line that starts with the same
// code and a space; the lines between may hold anything.
func (c *rawFTP) read() (ftpReply, error) {
	line, err := c.readLine()
	if err != nil {
		return ftpReply{}, err
	}
	code, multi, ok := replyCode(line)
	if !ok {
		return ftpReply{}, fmt.Errorf("malformed reply line %q", line)
	}
	r := ftpReply{Code: code, Lines: []string{line}}
	for multi {
		if len(r.Lines) >= pipeMaxLines {
			return r, fmt.Errorf("reply %d longer than %d lines", code, pipeMaxLines)
		}
		line, err := c.readLine()
		if err != nil {
			return r, err
		}
		r.Lines = append(r.Lines, line)
		// The last line is the code and a space (or the bare code).
		multi = !strings.HasPrefix(line, r.Lines[0][:3]+" ") && line != r.Lines[0][:3]
	}
	return r, nil
}

// expect reads the reply to what (a command, or "greeting") and checks its
// code against codes.
func (c *rawFTP) expect(what string, codes ...int) (ftpReply, error) {
	r, err := c.read()
	if err != nil {
		return r, c.failf("reply to %s: %v", what, err)
	}
	for _, code := range codes {
		if r.Code == code {
			return r, nil
		}
	}
	return r, c.failf("reply to %s: %q, want %s", what, r.String(), codeList(codes))
}

func codeList(codes []int) string {
	s := make([]string, len(codes))
	for i, c := range codes {
		s[i] = strconv.Itoa(c)
	}
	return strings.Join(s, " or ")
}

// expectClosed checks that the server side closes the connection and sends
// nothing more.
func (c *rawFTP) expectClosed(after string) error {
	line, err := c.readLine()
	switch {
	case err == nil:
		return c.failf("after %s: unexpected %q, want the connection closed", after, line)
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		return nil
	default:
		return c.failf("after %s: %v, want the connection closed", after, err)
	}
}

// login reads the greeting and logs in, one command at a time, then sets
// TYPE I.
func (e *pipeEnv) login() (*rawFTP, error) {
	c, err := dialRaw(e.ctx, e.addr, e.source)
	if err != nil {
		return nil, err
	}
	steps := []struct {
		cmd  string
		code int
	}{{"", 220}, {"USER " + peers.User, 331}, {"PASS " + peers.Password, 230}, {"TYPE I", 200}}
	for _, s := range steps {
		what := "greeting"
		if s.cmd != "" {
			what = strings.Fields(s.cmd)[0]
			if err := c.send(s.cmd); err != nil {
				c.Close()
				return nil, err
			}
		}
		if _, err := c.expect(what, s.code); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// --- data connections ---------------------------------------------------------

// dataResult is what a data connection carried.
type dataResult struct {
	n    int64
	sum  string
	body []byte // the first 64 KiB, for listings
	peer string // the remote address of an accepted connection
	err  error
}

// re227 finds the six numbers of a 227 reply wherever they sit in it.
var re227 = regexp.MustCompile(`(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})`)

// passiveAddr reads the data address of a 227 or 229 reply and checks that
// it is the dataHost's: a passive reply that names the server would send
// the client around the proxy.
func (e *pipeEnv) passiveAddr(c *rawFTP, r ftpReply) (string, error) {
	text := strings.Join(r.Lines, " ")
	switch r.Code {
	case 227:
		m := re227.FindStringSubmatch(text)
		if m == nil {
			return "", c.failf("no address in %q", text)
		}
		var v [6]int
		for i := range v {
			v[i], _ = strconv.Atoi(m[i+1])
			if v[i] > 255 {
				return "", c.failf("bad number %d in %q", v[i], text)
			}
		}
		host := fmt.Sprintf("%d.%d.%d.%d", v[0], v[1], v[2], v[3])
		if host != e.dataHost {
			return "", c.failf("227 names %s, want %s (the proxy): %q", host, e.dataHost, text)
		}
		return net.JoinHostPort(host, strconv.Itoa(v[4]<<8|v[5])), nil
	case 229:
		// RFC 2428 section 3: "(<d><d><d><port><d>)", any delimiter
		// from 33 to 126; the host is the control connection's.
		i := strings.IndexByte(text, '(')
		if i < 0 || len(text) < i+6 {
			return "", c.failf("no port in %q", text)
		}
		d := text[i+1]
		rest := text[i+1:]
		if d < 33 || d > 126 || rest[1] != d || rest[2] != d {
			return "", c.failf("bad delimiters in %q", text)
		}
		j := strings.IndexByte(rest[3:], d)
		if j < 0 {
			return "", c.failf("no end delimiter in %q", text)
		}
		port, err := strconv.Atoi(rest[3 : 3+j])
		if err != nil || port <= 0 || port > 65535 {
			return "", c.failf("bad port in %q", text)
		}
		return net.JoinHostPort(e.dataHost, strconv.Itoa(port)), nil
	}
	return "", c.failf("reply %q is not 227 or 229", text)
}

// dataDialer dials data connections from the clients' address.
func (e *pipeEnv) dataDialer() *net.Dialer {
	return &net.Dialer{Timeout: pipeDialTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(e.source)}}
}

// readAll reads conn to EOF within pipeDataTimeout.
func readAll(conn net.Conn) dataResult {
	conn.SetReadDeadline(time.Now().Add(pipeDataTimeout))
	h := sha256.New()
	var head bytes.Buffer
	buf := make([]byte, 64<<10)
	var res dataResult
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			h.Write(buf[:n])
			if head.Len() < 64<<10 {
				head.Write(buf[:min(n, 64<<10-head.Len())])
			}
			res.n += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			res.err = err
			break
		}
	}
	res.sum = hex.EncodeToString(h.Sum(nil))
	res.body = head.Bytes()
	return res
}

// fetch dials addr at once and reads it to EOF in the background.
func (e *pipeEnv) fetch(addr string) <-chan dataResult {
	ch := make(chan dataResult, 1)
	go func() {
		conn, err := e.dataDialer().DialContext(e.ctx, "tcp", addr)
		if err != nil {
			ch <- dataResult{err: err}
			return
		}
		defer conn.Close()
		ch <- readAll(conn)
	}()
	return ch
}

// push dials addr at once, writes data and closes the connection, in the
// background.
func (e *pipeEnv) push(addr string, data []byte) <-chan dataResult {
	ch := make(chan dataResult, 1)
	go func() {
		conn, err := e.dataDialer().DialContext(e.ctx, "tcp", addr)
		if err != nil {
			ch <- dataResult{err: err}
			return
		}
		conn.SetWriteDeadline(time.Now().Add(pipeDataTimeout))
		n, err := conn.Write(data)
		if cerr := conn.Close(); err == nil {
			err = cerr
		}
		ch <- dataResult{n: int64(n), err: err}
	}()
	return ch
}

var nextActivePort atomic.Int32

// listenActive opens a listener for PORT/EPRT on the clients' address, on a
// port from pipeActiveLo-pipeActiveHi.
func (e *pipeEnv) listenActive() (*net.TCPListener, int, error) {
	var last error
	for range pipeActiveHi - pipeActiveLo + 1 {
		p := pipeActiveLo + int(nextActivePort.Add(1)-1)%(pipeActiveHi-pipeActiveLo+1)
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.ParseIP(e.source), Port: p})
		if err == nil {
			return ln, p, nil
		}
		last = err
	}
	return nil, 0, fmt.Errorf("no free port in %d-%d: %v", pipeActiveLo, pipeActiveHi, last)
}

// accept takes one data connection on ln in the background, checks that it
// comes from the dataHost, and reads it to EOF.
func (e *pipeEnv) accept(ln *net.TCPListener) <-chan dataResult {
	ch := make(chan dataResult, 1)
	go func() {
		ln.SetDeadline(time.Now().Add(pipeDataTimeout))
		conn, err := ln.Accept()
		if err != nil {
			ch <- dataResult{err: err}
			return
		}
		defer conn.Close()
		peer := conn.RemoteAddr().(*net.TCPAddr).IP.String()
		if peer != e.dataHost {
			ch <- dataResult{peer: peer, err: fmt.Errorf("data connection from %s, want %s", peer, e.dataHost)}
			return
		}
		res := readAll(conn)
		res.peer = peer
		ch <- res
	}()
	return ch
}

// portArg is the argument of PORT (RFC 959) or EPRT (RFC 2428) for the
// clients' address and port.
func (e *pipeEnv) portArg(extended bool, port int) string {
	if extended {
		return fmt.Sprintf("EPRT |1|%s|%d|", e.source, port)
	}
	return fmt.Sprintf("PORT %s,%d,%d", strings.ReplaceAll(e.source, ".", ","), port>>8, port&0xff)
}

// transfer reads the replies to a transfer command: a 150 or 125, then the
// final 226 or 250; then it waits for the data connection's result.
func (c *rawFTP) transfer(cmd string, data <-chan dataResult) (dataResult, error) {
	if _, err := c.expect(cmd, 150, 125); err != nil {
		return dataResult{}, err
	}
	if _, err := c.expect(cmd, 226, 250); err != nil {
		return dataResult{}, err
	}
	res := <-data
	if res.err != nil {
		return res, c.failf("%s: data connection: %v (%d bytes)", cmd, res.err, res.n)
	}
	return res, nil
}

// retr reads the replies to a pipelined "PASV or EPSV, RETR name" and
// checks every byte against the file on the server's disk.
func (e *pipeEnv) retr(c *rawFTP, pasvVerb, name string) error {
	r, err := c.expect(pasvVerb, map[string]int{"PASV": 227, "EPSV": 229}[pasvVerb])
	if err != nil {
		return err
	}
	addr, err := e.passiveAddr(c, r)
	if err != nil {
		return err
	}
	res, err := c.transfer("RETR "+name, e.fetch(addr))
	if err != nil {
		return err
	}
	return e.sameAsServer(c, name, res)
}

// sameAsServer compares what a download carried with the file on the
// server's disk.
func (e *pipeEnv) sameAsServer(c *rawFTP, name string, res dataResult) error {
	sum, size, err := peers.FileSum(e.srv.Path(name))
	if err != nil {
		return err
	}
	if res.n != size || res.sum != sum {
		return c.failf("RETR %s: got %d bytes sha256 %.16s, the server's file has %d bytes sha256 %.16s", name, res.n, res.sum, size, sum)
	}
	return nil
}

// --- pipelined sessions of the raw client -------------------------------------

// caseLogin writes a whole session before the greeting has arrived.
func (e *pipeEnv) caseLogin() error {
	c, err := dialRaw(e.ctx, e.addr, e.source)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.send("USER "+peers.User, "PASS "+peers.Password, "TYPE I", "PWD", "NOOP", "QUIT"); err != nil {
		return err
	}
	steps := []struct {
		what string
		code int
	}{{"greeting", 220}, {"USER", 331}, {"PASS", 230}, {"TYPE I", 200}, {"PWD", 257}, {"NOOP", 200}, {"QUIT", 221}}
	for _, s := range steps {
		r, err := c.expect(s.what, s.code)
		if err != nil {
			return err
		}
		if s.what == "PWD" && !strings.Contains(r.Lines[0], `"/"`) {
			return c.failf("PWD %q, want \"/\"", r.String())
		}
	}
	return c.expectClosed("221")
}

// casePasvRetr sends PASV and RETR in one write: the client connects as
// soon as it has read the 227.
func (e *pipeEnv) casePasvRetr() error {
	c, err := e.login()
	if err != nil {
		return err
	}
	defer c.Close()
	name := e.files["4MiB"].Name
	if err := c.send("PASV", "RETR "+name); err != nil {
		return err
	}
	if err := e.retr(c, "PASV", name); err != nil {
		return err
	}
	return e.quit(c)
}

// quit ends a session: 221, then the connection closes.
func (e *pipeEnv) quit(c *rawFTP) error {
	if err := c.send("QUIT"); err != nil {
		return err
	}
	if _, err := c.expect("QUIT", 221); err != nil {
		return err
	}
	return c.expectClosed("221")
}

// caseEpsvStor sends EPSV and STOR in one write and uploads 1 MiB.
func (e *pipeEnv) caseEpsvStor() error {
	c, err := e.login()
	if err != nil {
		return err
	}
	defer c.Close()
	name := "up-epsv.bin"
	if err := c.send("EPSV", "STOR "+name); err != nil {
		return err
	}
	if err := e.stor(c, name); err != nil {
		return err
	}
	return e.quit(c)
}

// stor reads the replies to a pipelined "EPSV, STOR name", uploads the
// 1 MiB file and checks the server's copy.
func (e *pipeEnv) stor(c *rawFTP, name string) error {
	r, err := c.expect("EPSV", 229)
	if err != nil {
		return err
	}
	addr, err := e.passiveAddr(c, r)
	if err != nil {
		return err
	}
	if _, err := c.transfer("STOR "+name, e.push(addr, e.upData)); err != nil {
		return err
	}
	if err := peers.SameContent(e.srv.Path(name), e.upload.Size, e.upload.Sum); err != nil {
		return c.failf("server side after 226: %v", err)
	}
	return nil
}

// caseActiveList sends PORT (or EPRT) and LIST in one write; the data
// connection must come from the proxy.
func (e *pipeEnv) caseActiveList(extended bool) error {
	c, err := e.login()
	if err != nil {
		return err
	}
	defer c.Close()
	ln, port, err := e.listenActive()
	if err != nil {
		return err
	}
	defer ln.Close()
	data := e.accept(ln)
	cmd := e.portArg(extended, port)
	if err := c.send(cmd, "LIST"); err != nil {
		return err
	}
	if err := e.list(c, cmd, data, e.files["4MiB"].Name); err != nil {
		return err
	}
	return e.quit(c)
}

// list reads the replies to a pipelined "PORT or EPRT, LIST" and checks
// that the listing names want.
func (e *pipeEnv) list(c *rawFTP, portCmd string, data <-chan dataResult, want ...string) error {
	if _, err := c.expect(strings.Fields(portCmd)[0], 200); err != nil {
		return err
	}
	res, err := c.transfer("LIST", data)
	if err != nil {
		return err
	}
	for _, w := range want {
		if !bytes.Contains(res.body, []byte(w)) {
			return c.failf("LIST from %s does not name %s:\n%s", res.peer, w, peers.Tail(string(res.body), 600))
		}
	}
	return nil
}

// caseBackToBack sends three transfers and QUIT in one write.
func (e *pipeEnv) caseBackToBack() error {
	c, err := e.login()
	if err != nil {
		return err
	}
	defer c.Close()
	a, b, d := e.files["0B"].Name, e.files["1B"].Name, e.files["4MiB"].Name
	if err := c.send("PASV", "RETR "+a, "PASV", "RETR "+b, "EPSV", "RETR "+d, "QUIT"); err != nil {
		return err
	}
	for _, x := range []struct{ verb, name string }{{"PASV", a}, {"PASV", b}, {"EPSV", d}} {
		if err := e.retr(c, x.verb, x.name); err != nil {
			return err
		}
	}
	if _, err := c.expect("QUIT", 221); err != nil {
		return err
	}
	return c.expectClosed("221")
}

// caseWholeSession writes a whole session, login to QUIT, in one write.
func (e *pipeEnv) caseWholeSession() error {
	const dir = "whole"
	src, err := e.serverFile(dir+"/src-64KiB.bin", 64<<10, 300)
	if err != nil {
		return err
	}
	del, err := e.serverFile(dir+"/to-delete.bin", 1, 301)
	if err != nil {
		return err
	}
	up := dir + "/uploaded.bin"
	os.Remove(e.srv.Path(up))
	base := func(p string) string { return filepath.Base(p) }

	ln, port, err := e.listenActive()
	if err != nil {
		return err
	}
	defer ln.Close()
	listing := e.accept(ln)
	c, err := dialRaw(e.ctx, e.addr, e.source)
	if err != nil {
		return err
	}
	defer c.Close()
	portCmd := e.portArg(false, port)
	if err := c.send("USER "+peers.User, "PASS "+peers.Password, "TYPE I", "CWD "+dir,
		"PASV", "RETR "+base(src.Name), "EPSV", "STOR "+base(up), portCmd, "LIST",
		"SIZE "+base(up), "DELE "+base(del.Name), "QUIT"); err != nil {
		return err
	}
	for _, s := range []struct {
		what string
		code int
	}{{"greeting", 220}, {"USER", 331}, {"PASS", 230}, {"TYPE I", 200}, {"CWD", 250}} {
		if _, err := c.expect(s.what, s.code); err != nil {
			return err
		}
	}
	if err := e.retr(c, "PASV", src.Name); err != nil {
		return err
	}
	if err := e.stor(c, up); err != nil {
		return err
	}
	if err := e.list(c, portCmd, listing, base(src.Name), base(up)); err != nil {
		return err
	}
	r, err := c.expect("SIZE", 213)
	if err != nil {
		return err
	}
	if f := strings.Fields(r.Lines[0]); len(f) < 2 || f[1] != strconv.FormatInt(e.upload.Size, 10) {
		return c.failf("SIZE %q, want %d", r.String(), e.upload.Size)
	}
	if _, err := c.expect("DELE", 250); err != nil {
		return err
	}
	if _, err := c.expect("QUIT", 221); err != nil {
		return err
	}
	if err := c.expectClosed("221"); err != nil {
		return err
	}
	if _, err := os.Stat(e.srv.Path(del.Name)); !os.IsNotExist(err) {
		return fmt.Errorf("%s still on the server after DELE", del.Name)
	}
	return nil
}

// --- lftp with ftp:sync-mode off ------------------------------------------------

// lftp runs lftp commands with pipelining on (ftp:sync-mode off), no
// retries (a retry would hide a broken first attempt), and its protocol
// trace in a file; it checks that the trace shows pipelined commands and
// that lftp did not turn sync mode back on.
func (e *pipeEnv) lftp(mode, name string, cmds ...string) error {
	host, port, _ := net.SplitHostPort(e.addr)
	p, _ := strconv.Atoi(port)
	tg := peers.Target{Host: host, Port: p, Source: e.source, Mode: mode}
	trace := filepath.Join(e.work, "lftp-"+mode+"-"+name+".trace")
	os.Remove(trace)
	pre := []string{"set ftp:sync-mode off", "set net:max-retries 1", "debug -o " + trace + " 9"}
	if _, err := (peers.Lftp{}).Run(e.ctx, tg, append(pre, cmds...)...); err != nil {
		return err
	}
	b, err := os.ReadFile(trace)
	if err != nil {
		return err
	}
	return lftpPipelined(string(b), trace)
}

// lftpPipelined checks lftp's trace: at least once two commands went out
// ("--->") with no reply ("<---") between them, and lftp never turned sync
// mode on.
func lftpPipelined(trace, path string) error {
	if strings.Contains(strings.ToLower(trace), "sync-mode") || strings.Contains(strings.ToLower(trace), "sync mode") {
		return fmt.Errorf("lftp turned sync mode on (trace %s)", path)
	}
	prevSent := false
	for _, l := range strings.Split(trace, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(l, "--->"):
			if prevSent {
				return nil
			}
			prevSent = true
		case strings.HasPrefix(l, "<---"):
			prevSent = false
		}
	}
	return fmt.Errorf("lftp sent no two commands without a reply between them: not pipelined (trace %s)", path)
}

func (e *pipeEnv) caseLftpGet(mode string) error {
	f := e.files["4MiB"]
	dst := filepath.Join(e.work, "lftp-get-"+mode+".bin")
	os.Remove(dst)
	if err := e.lftp(mode, "get", "get "+f.Name+" -o "+dst); err != nil {
		return err
	}
	return peers.SameContent(dst, f.Size, f.Sum)
}

func (e *pipeEnv) caseLftpPut(mode string) error {
	name := "lftp-put-" + mode + ".bin"
	if err := e.lftp(mode, "put", "put "+e.big.Path+" -o "+name); err != nil {
		return err
	}
	if err := peers.SameContent(e.srv.Path(name), e.big.Size, e.big.Sum); err != nil {
		return fmt.Errorf("server side: %w", err)
	}
	return nil
}

func (e *pipeEnv) caseLftpMirror(mode string) error {
	remote := "mirror-" + mode
	sums, err := makeTree(e.srv.Path(remote), 20, 3, e.srv.UID, e.srv.GID)
	if err != nil {
		return err
	}
	dst := filepath.Join(e.work, "mirror-"+mode)
	os.RemoveAll(dst)
	if err := e.lftp(mode, "mirror", "mirror --no-perms "+remote+" "+dst); err != nil {
		return err
	}
	return checkTree(dst, sums)
}

// --- server quirks --------------------------------------------------------------

// startRetr logs in, sends PASV, connects, sends RETR of the 16 MiB file,
// reads its 150 or 125 and the first 64 KiB of data.
func (e *pipeEnv) startRetr() (*rawFTP, net.Conn, error) {
	c, err := e.login()
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (*rawFTP, net.Conn, error) { c.Close(); return nil, nil, err }
	if err := c.send("PASV"); err != nil {
		return fail(err)
	}
	r, err := c.expect("PASV", 227)
	if err != nil {
		return fail(err)
	}
	addr, err := e.passiveAddr(c, r)
	if err != nil {
		return fail(err)
	}
	data, err := e.dataDialer().DialContext(e.ctx, "tcp", addr)
	if err != nil {
		return fail(c.failf("data connection: %v", err))
	}
	retr := "RETR " + e.files["16MiB"].Name
	if err := c.send(retr); err != nil {
		data.Close()
		return fail(err)
	}
	if _, err := c.expect(retr, 150, 125); err != nil {
		data.Close()
		return fail(err)
	}
	data.SetReadDeadline(time.Now().Add(pipeDataTimeout))
	if _, err := io.ReadFull(data, make([]byte, 64<<10)); err != nil {
		data.Close()
		return fail(c.failf("reading the first 64 KiB: %v", err))
	}
	return c, data, nil
}

// caseEarlyClose closes the data connection of a 16 MiB RETR after 64 KiB,
// then sends NOOP and PASV in one write: the RETR must get exactly one
// final reply, and the replies after it must stay in step. (pure-ftpd
// ends such a transfer with a second 150, "... seconds (measured here)
// ...", instead of a final reply.)
func (e *pipeEnv) caseEarlyClose() error {
	c, data, err := e.startRetr()
	if err != nil {
		return err
	}
	defer c.Close()
	data.Close()
	if err := c.send("NOOP", "PASV"); err != nil {
		return err
	}
	r, err := c.read()
	if err != nil {
		return c.failf("final reply to RETR: %v", err)
	}
	if r.Code/100 != 2 && r.Code/100 != 4 {
		return c.failf("final reply to RETR after the data connection closed: %q, want one 2xx or 4xx reply", r.String())
	}
	if _, err := c.expect("NOOP", 200); err != nil {
		return err
	}
	r, err = c.expect("PASV", 227)
	if err != nil {
		return err
	}
	if _, err := e.passiveAddr(c, r); err != nil {
		return err
	}
	return e.quit(c)
}

// caseAbort aborts a 16 MiB RETR after 64 KiB while the data connection is
// still open, as a client does with ABOR. telnet=false sends what the RFC
// 959 section 4.1.3 procedure (and BSD ftp) sends: IAC IP, IAC DM with the
// DM byte as TCP urgent data, then "ABOR\r\n". ftplib=true sends what
// Python's ftplib.FTP.abort sends: "ABOR\r\n" with MSG_OOB, so that its
// last byte is urgent. The client must see 426 then 226 (or, for a
// transfer that had already completed, its 226 and then ABOR's 226 or
// 225), and a PASV and RETR of a small file sent together afterwards must
// work byte for byte.
func (e *pipeEnv) caseAbort(ftplib bool) error {
	c, data, err := e.startRetr()
	if err != nil {
		return err
	}
	defer c.Close()
	defer data.Close()
	if ftplib {
		c.note(">", "ABOR (the whole line as urgent data)")
		if err := c.sendUrgent([]byte("ABOR\r\n")); err != nil {
			return err
		}
	} else {
		c.note(">", "IAC IP, IAC DM (DM urgent), ABOR")
		if err := c.write([]byte{0xff, 0xf4, 0xff}); err != nil {
			return err
		}
		if err := c.sendUrgent([]byte{0xf2}); err != nil {
			return err
		}
		if err := c.write([]byte("ABOR\r\n")); err != nil {
			return err
		}
	}
	first, err := c.read()
	if err != nil {
		return c.failf("reply after ABOR: %v", err)
	}
	switch first.Code {
	case 426:
		if _, err := c.expect("ABOR (after the 426 for RETR)", 226); err != nil {
			return err
		}
	case 226:
		// The transfer had completed before the ABOR: that was RETR's
		// 226, and ABOR gets a reply of its own.
		if _, err := c.expect("ABOR (after the RETR's 226)", 226, 225); err != nil {
			return err
		}
	default:
		return c.failf("reply after ABOR: %q, want 426 then 226 (RFC 959 section 4.1.3)", first.String())
	}
	data.Close()
	small := e.files["64KiB"].Name
	if err := c.send("PASV", "RETR "+small); err != nil {
		return err
	}
	if err := e.retr(c, "PASV", small); err != nil {
		return err
	}
	return e.quit(c)
}

// --- a client flood --------------------------------------------------------------

// caseFlood writes pipeFloodPairs "USER x / PASS wrong" pairs (a user that
// does not exist) in one write. The client must be closed within
// pipeFloodTimeout, with a 421 at the end, and the server must have seen at
// most pipeFloodMaxPASS of the attempts: counted from its log where it
// logs failed logins (vsftpd, proftpd); for pure-ftpd, which logs them only
// to syslog, the proxy's log must show the ban or the backlog bound.
func (e *pipeEnv) caseFlood(proxyBin string) error {
	addr := e.addr
	var px *peers.Proxy
	if !*flagDirect {
		host, port, _ := net.SplitHostPort(*flagProxyAddr)
		p, _ := strconv.Atoi(port)
		addr = net.JoinHostPort(host, strconv.Itoa(p+1))
		var err error
		px, err = peers.StartProxy(e.ctx, peers.ProxyConfig{
			Bin: proxyBin, Listen: addr, Upstream: e.srv.Addr(),
			LogPath: filepath.Join(e.srv.Dir, "ftpproxy-flood.log"),
			Args:    []string{"--drain-timeout", "2s"},
		})
		if err != nil {
			return err
		}
		defer px.Stop()
	}
	logBefore := e.serverFailedLogins()
	c, err := dialRaw(e.ctx, addr, e.source)
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	written := make(chan error, 1)
	go func() {
		c.conn.SetWriteDeadline(start.Add(pipeFloodTimeout))
		_, err := c.conn.Write(bytes.Repeat([]byte("USER x\r\nPASS wrong\r\n"), pipeFloodPairs))
		written <- err
	}()
	c.note(">", fmt.Sprintf("%d x (USER x, PASS wrong) in one write", pipeFloodPairs))

	var (
		replies, n530 int
		last          ftpReply
		end           error
	)
	for {
		c.conn.SetReadDeadline(start.Add(pipeFloodTimeout))
		b, err := c.r.ReadSlice('\n')
		if err != nil {
			end = err
			break
		}
		line := strings.TrimRight(string(b), "\r\n")
		code, multi, ok := replyCode(line)
		if !ok || multi {
			continue // greeting banners and the like: only final lines count
		}
		replies++
		if code == 530 {
			n530++
		}
		last = ftpReply{Code: code, Lines: []string{line}}
		if replies <= 10 {
			c.note("<", last.Lines[0])
		}
	}
	c.note("<", fmt.Sprintf("... %d replies in all, %d of them 530, then %v after %.1fs", replies, n530, end, time.Since(start).Seconds()))
	if !errors.Is(end, io.EOF) && !errors.Is(end, syscall.ECONNRESET) {
		return c.failf("the connection was not closed within %s: %v", pipeFloodTimeout, end)
	}
	c.note("<", "last: "+last.String())
	if px != nil && last.Code != 421 {
		return c.failf("last reply %q, want 421", last.String())
	}
	if n530 > pipeFloodMaxPASS {
		return c.failf("%d PASS attempts answered with 530, want at most %d", n530, pipeFloodMaxPASS)
	}
	if n := e.serverFailedLogins(); n >= 0 {
		if n-logBefore > pipeFloodMaxPASS {
			return c.failf("the server logged %d failed logins, want at most %d", n-logBefore, pipeFloodMaxPASS)
		}
		return nil
	}
	if px == nil {
		return nil
	}
	px.Stop()
	b, err := os.ReadFile(px.LogPath)
	if err != nil {
		return err
	}
	if l := strings.ToLower(string(b)); !strings.Contains(l, "banned") && !strings.Contains(l, "backlog") {
		return c.failf("the proxy's log %s shows neither a ban nor the backlog bound:\n%s", px.LogPath, peers.Tail(string(b), 1500))
	}
	return nil
}

// serverFailedLogins counts the failed logins the server has logged, or
// returns -1 if it logs none to a file: vsftpd writes "FAIL LOGIN" lines to
// its vsftpd_log_file, proftpd (run with -n) "USER x: no such user found"
// lines to its standard error, pure-ftpd only to syslog.
func (e *pipeEnv) serverFailedLogins() int {
	var path, marker string
	switch e.srv.Kind.Name {
	case peers.Vsftpd.Name:
		path, marker = filepath.Join(e.srv.Dir, "vsftpd.log"), "] FAIL LOGIN:"
	case peers.ProFTPd.Name:
		path, marker = e.srv.LogPath, ": no such user found from "
	default:
		return -1
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte(marker))
}
