package proxy

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// newTestSession is the part of a session a transfer uses.
func newTestSession() *session {
	cfg := Config{DataAcceptTimeout: 5 * time.Second}.withDefaults()
	return &session{cfg: &cfg, log: zerolog.Nop(), xfers: map[*transfer]struct{}{}}
}

// reportTo makes t report to a channel instead of a session.
func reportTo(t *transfer) <-chan *transfer {
	ch := make(chan *transfer, 1)
	t.report = func(t *transfer) { ch <- t }
	return ch
}

// A server in active mode may connect, send a short listing, close and
// reply 226 before the proxy's accept returns. The 226 must not make the
// proxy drop the connection waiting in its listener's backlog.
func TestTransferKeepsBackloggedConnection(t *testing.T) {
	s := newTestSession()
	loop := netip.MustParseAddr("127.0.0.1")
	up, err := s.listenEndpoint(loop, nil, loop)
	if err != nil {
		t.Fatal(err)
	}
	client, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	xfer := s.newTransfer(endpoint{dialTo: client.Addr().(*net.TCPAddr).AddrPort(), dialFrom: loop}, up)
	xfer.claim("LIST", dirDown)
	reported := reportTo(xfer)

	// The upstream connects, sends and closes; then its 226 arrives,
	// all before the transfer's goroutine has started.
	c, err := net.Dial("tcp", netip.AddrPortFrom(loop, up.port).String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("drwxr-xr-x 2 ftp ftp 4096 Jan 1 00:00 pub\r\n"))
	c.Close()
	xfer.upstreamFinished()
	xfer.start()

	client.SetDeadline(time.Now().Add(5 * time.Second))
	cc, err := client.Accept()
	if err != nil {
		t.Fatalf("the proxy never connected to the client: %v", err)
	}
	defer cc.Close()
	cc.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(cc)
	if err != nil || string(got) != "drwxr-xr-x 2 ftp ftp 4096 Jan 1 00:00 pub\r\n" {
		t.Fatalf("client got %q, %v", got, err)
	}
	cc.Close()
	done := <-reported
	if done.err != nil || done.down != int64(len(got)) {
		t.Fatalf("transfer: %d bytes down, err %v", done.down, done.err)
	}
	s.wg.Wait()
}

// After a success reply with no data connection at all, the wait ends
// within finishGrace rather than the whole accept timeout.
func TestTransferGivesUpAfterSuccessWithoutConnection(t *testing.T) {
	s := newTestSession()
	loop := netip.MustParseAddr("127.0.0.1")
	up, err := s.listenEndpoint(loop, nil, loop)
	if err != nil {
		t.Fatal(err)
	}
	xfer := s.newTransfer(endpoint{dialTo: netip.MustParseAddrPort("127.0.0.1:9"), dialFrom: loop}, up)
	reported := reportTo(xfer)
	start := time.Now()
	xfer.start()
	xfer.upstreamFinished()
	done := <-reported
	if done.err != errNoConnection {
		t.Fatalf("err = %v, want errNoConnection", done.err)
	}
	if d := time.Since(start); d > finishGrace+time.Second {
		t.Fatalf("gave up after %v", d)
	}
	s.wg.Wait()
}
