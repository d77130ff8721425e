//go:build interop

package kernel

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

// --- 1. guard ----------------------------------------------------------------

// caseGuard: without a guard the client reaches the server routed through
// the proxy host; with proxy A's guard on, the same connection is dropped,
// while a transfer through the proxy is carried by the kernel: its log line
// says so, the metric counts it, and conntrack holds the redirected flow.
func (s *suite) caseGuard() {
	direct := hostPort(srvIP, serverPort)
	if s.a == nil {
		s.tl.Run("guard/direct-reaches-server-without-guard", func() error {
			return s.topo.In(nsCli, func() error {
				f, err := dialFTP(direct, cliIP)
				if err != nil {
					return fmt.Errorf("with no proxy running, %s does not reach %s through the proxy host (the direct comparison cannot work): %w", cliIP, direct, err)
				}
				f.Close()
				return nil
			})
		})
	}
	a := s.proxyA("guard")
	if a == nil {
		return
	}
	s.tl.Run("guard/table-exists", func() error {
		st, err := s.nftTable(defaultTable)
		if err != nil {
			return err
		}
		if !st.exists {
			return a.withLog(errors.New("no table inet ftpproxy while the proxy runs with --data-path kernel"))
		}
		for _, name := range tableSets {
			if _, ok := st.elems[name]; !ok {
				return fmt.Errorf("table inet ftpproxy has no set %s:\n%s", name, peers.Tail(st.raw, 1500))
			}
		}
		if !slices.Contains(st.chains, "forward") {
			return fmt.Errorf("table inet ftpproxy has no forward chain (chains %v)", st.chains)
		}
		if a.count("kernel data path on") != 1 {
			return a.withLog(errors.New(`no "kernel data path on" line in the proxy's log`))
		}
		if m, err := s.metrics(healthA); err != nil {
			return err
		} else if v, ok := m["ftpproxy_kernel_path_up"]; !ok || v != 1 {
			return a.withLog(fmt.Errorf("ftpproxy_kernel_path_up %v (present %v), want 1", v, ok))
		}
		s.tl.Note("table inet ftpproxy: chains %s; sets %s", strings.Join(st.chains, ", "), st.describe())
		return nil
	})
	// An operator, or a tool on the host, lists the ruleset: the proxy's
	// table must not make that fail.
	s.tl.Run("guard/nft-list-ruleset", func() error {
		out, err := s.topo.Exec(s.ctx, 10*time.Second, nsPxy, "nft", "list", "ruleset")
		if err != nil {
			v, _ := s.topo.Exec(s.ctx, 10*time.Second, nsPxy, "nft", "--version")
			return fmt.Errorf("`nft list ruleset` fails while the proxy's table is loaded (%s): %w", strings.TrimSpace(v), err)
		}
		if !strings.Contains(out, "table inet ftpproxy") {
			return fmt.Errorf("`nft list ruleset` does not show table inet ftpproxy:\n%s", peers.Tail(out, 1500))
		}
		return nil
	})
	s.tl.Run("guard/direct-connection-dropped", func() error {
		return s.topo.In(nsCli, func() error {
			start := time.Now()
			d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(cliIP)}}
			c, err := d.Dial("tcp", direct)
			if err == nil {
				c.Close()
				return fmt.Errorf("%s reached %s with the forward guard on", cliIP, direct)
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return fmt.Errorf("connection to %s: %v; want a time-out (the guard drops, it does not refuse)", direct, err)
			}
			s.tl.Note("%s -> %s: %v after %s", cliIP, direct, err, time.Since(start).Round(time.Millisecond))
			return nil
		})
	})
	s.tl.Run("guard/kernel-transfer", func() error {
		before, err := s.dataPaths(healthA)
		if err != nil {
			return err
		}
		off := a.LogSize()
		if err := s.roundTrip(nsCli, cliIP, pxyWanIP, proxyPort, s.srv, s.x, s.xup, "guard.up", "--ftp-pasv", "--disable-epsv"); err != nil {
			return a.withLog(err)
		}
		after, err := s.dataPaths(healthA)
		if err != nil {
			return err
		}
		if err := grew(before, after, "kernel", 2); err != nil {
			return a.withLog(err)
		}
		ts := a.transfers(off)
		if err := allKernel(ts, 2); err != nil {
			return a.withLog(err)
		}
		for _, l := range ts {
			n, size := l.num("down"), s.x.Size
			if l.str("cmd") == "STOR" {
				n, size = l.num("up"), s.xup.Size
			}
			// Conntrack's counts: the payload of the packets as the
			// kernel saw them, retransmissions and TCP options included.
			if n < size || n > size+size/10 {
				b, _ := json.Marshal(l)
				return fmt.Errorf("the transfer line counts %d bytes for a %d-byte file: %s", n, size, b)
			}
		}
		flows, err := s.ctKernelFlows()
		if err != nil {
			return fmt.Errorf("conntrack dump: %w", err)
		}
		var redirected []ctFlow
		for _, f := range flows {
			// The client's connection to the proxy's public address,
			// answered by the server to the proxy's server-side address.
			if f.origDst == pxyWanIP && f.replySrc == srvIP && f.replyDst == pxySrvIP {
				redirected = append(redirected, f)
			}
		}
		if len(redirected) < 2 {
			return fmt.Errorf("conntrack holds %d flows with the kernel path's mark from the client to %s and from %s to %s, want the 2 transfers'; flows with such a mark: %v", len(redirected), pxyWanIP, srvIP, pxySrvIP, flows)
		}
		for _, f := range redirected {
			s.tl.Note("conntrack: %s", f)
		}
		s.tl.Note("ftpproxy_data_path_total{path=\"kernel\"} %g -> %g; log: %s %d bytes, %s %d bytes, data_path kernel, counted_by conntrack",
			before["kernel"], after["kernel"], ts[0].str("cmd"), max(ts[0].num("down"), ts[0].num("up")), ts[1].str("cmd"), max(ts[1].num("down"), ts[1].num("up")))
		return nil
	})
}

// clientSession logs in to proxy A from the client behind the NAT and
// runs fn with the session, closed when fn returns. The session's sockets
// live in the client's namespace.
func (s *suite) clientSession(fn func(f *ftpConn) error) error {
	return s.topo.In(nsCli, func() error {
		f, err := dialFTP(hostPort(pxyWanIP, proxyPort), cliIP)
		if err != nil {
			return err
		}
		defer f.Close()
		return fn(f)
	})
}

// --- 3. theft ----------------------------------------------------------------

// caseTheft: a connection from another address to the announced port, and
// a second one from the client once its own is established, are refused
// and logged; the client's transfer is not disturbed.
func (s *suite) caseTheft() {
	a := s.proxyA("theft")
	if a == nil {
		return
	}
	s.tl.Run("theft/foreign-address-refused", func() error {
		off := a.LogSize()
		return a.withLog(s.clientSession(func(f *ftpConn) error {
			ap, err := f.PASV()
			if err != nil {
				return err
			}
			how, err := peers.Within(s.topo, nsThief, func() (string, error) { return refused(thiefIP, ap) })
			if err != nil {
				return err
			}
			l, err := a.waitLine(off, 5*time.Second, `"data connection from a foreign address refused" from the thief`, func(l logLine) bool {
				return l.str("message") == "data connection from a foreign address refused" && strings.HasPrefix(l.str("from"), thiefIP+":")
			})
			if err != nil {
				return err
			}
			if err := f.retr(cliIP, ap, s.x, nil); err != nil {
				return err
			}
			if err := allKernel(a.transfers(off), 1); err != nil {
				return err
			}
			s.tl.Note("thief %s -> %s: %s; logged %q from %s; the client's download then byte-exact, data_path kernel", thiefIP, ap, how, l.str("message"), l.str("from"))
			return nil
		}))
	})
	s.tl.Run("theft/second-connection-refused", func() error {
		off := a.LogSize()
		return a.withLog(s.clientSession(func(f *ftpConn) error {
			// A slow reader: 1 MiB, then a pause while the second
			// connection is tried.
			d, err := f.startRetr(cliIP, s.mid.Name, 1<<20)
			if err != nil {
				return err
			}
			defer d.dc.Close()
			time.Sleep(300 * time.Millisecond)
			how, err := refused(cliIP, d.ap)
			if err != nil {
				return err
			}
			if _, err := a.waitLine(off, 5*time.Second, `"second data connection refused"`, func(l logLine) bool {
				return l.str("message") == "second data connection refused"
			}); err != nil {
				return err
			}
			if err := d.sk.read(d.dc, -1, 60*time.Second); err != nil {
				return fmt.Errorf("the first connection after the second was refused: %d bytes, then %w", d.sk.n, err)
			}
			d.dc.Close()
			if code, text, err := f.Reply(); err != nil || code != 226 {
				return fmt.Errorf("after RETR: %d %q %v", code, text, err)
			}
			if err := sameSum(s.mid.Name, d.sk.n, d.sk.sum(), s.mid); err != nil {
				return err
			}
			if err := allKernel(a.transfers(off), 1); err != nil {
				return err
			}
			s.tl.Note("second connection from the client to %s: %s; the first completed byte-exact (%d bytes)", d.ap, how, d.sk.n)
			return nil
		}))
	})
	s.tl.Run("theft/table-empty", func() error { return s.waitEmpty(defaultTable, 5*time.Second) })
}

// --- 4. kills ----------------------------------------------------------------

// caseKills: a client that resets its data connection, a client killed
// mid-download, a server session killed mid-download; each time the
// client must not be told the transfer succeeded, and the table must be
// empty again within seconds.
func (s *suite) caseKills() {
	a := s.proxyA("kills")
	if a == nil {
		return
	}
	var resetRead int64
	var resetLine logLine
	s.tl.Run("kills/client-resets-data-connection", func() error {
		off := a.LogSize()
		err := s.clientSession(func(f *ftpConn) error {
			d, err := f.startRetr(cliIP, s.mid.Name, 2<<20)
			if err != nil {
				return err
			}
			resetRead = d.sk.n
			d.dc.SetLinger(0)
			d.dc.Close() // a reset, with data still coming
			start := time.Now()
			code, text, err := f.ReplyWithin(20 * time.Second)
			if err != nil || code != 426 {
				return fmt.Errorf("after resetting the data connection: %d %q %v; want 426", code, text, err)
			}
			s.tl.Note("client got %q %s after its reset", text, time.Since(start).Round(time.Millisecond))
			if code, text, err := f.Cmd("NOOP"); err != nil || code != 200 {
				return fmt.Errorf("NOOP on the control connection kept: %d %q %v", code, text, err)
			}
			f.Cmd("QUIT")
			return nil
		})
		if err != nil {
			return a.withLog(err)
		}
		l, err := a.failedKernelTransfer(off, "", "a failed")
		if err != nil {
			return a.withLog(err)
		}
		resetLine = l
		s.tl.Note("proxy logged: %s error %q, %d bytes down", l.str("cmd"), l.str("error"), l.num("down"))
		return a.withLog(s.waitEmpty(defaultTable, 5*time.Second))
	})
	if resetLine != nil {
		s.tl.Run("kills/client-resets-data-connection/logged-count", func() error {
			return loggedAtLeast(resetLine, resetRead, "the client had read")
		})
	}

	s.tl.Run("kills/abor-resets-both-ends", func() error {
		// The proxy ends this flow itself: its mark goes in the dead set
		// and the kernel resets both ends at their next packet.
		off := a.LogSize()
		err := s.clientSession(func(f *ftpConn) error {
			d, err := f.startRetr(cliIP, s.mid.Name, 2<<20)
			if err != nil {
				return err
			}
			defer d.dc.Close()
			if err := f.Send("ABOR"); err != nil {
				return err
			}
			for _, want := range []int{426, 226} {
				if code, text, err := f.ReplyWithin(20 * time.Second); err != nil || code != want {
					return fmt.Errorf("after ABOR: %d %q %v; want %d", code, text, err, want)
				}
			}
			// Clients close the data connection on the 426: its FIN must
			// meet a reset (the dead set is in place before the 426), not
			// pass to the server as the end of a clean transfer.
			d.dc.CloseWrite()
			err = d.sk.read(d.dc, -1, 10*time.Second)
			switch {
			case err == nil:
				return fmt.Errorf("the data connection ended cleanly after ABOR, %d bytes in: a short file would look whole", d.sk.n)
			case errors.Is(err, os.ErrDeadlineExceeded):
				return fmt.Errorf("the data connection was not reset after ABOR and the client's close: %w", err)
			}
			s.tl.Note("client's data connection after ABOR: %v, %d of %d bytes", err, d.sk.n, s.mid.Size)
			// The server's session goes on: its reply to the aborted
			// transfer was dropped, NOOP is its.
			if code, text, err := f.Cmd("NOOP"); err != nil || code != 200 {
				return fmt.Errorf("NOOP after ABOR: %d %q %v", code, text, err)
			}
			f.Cmd("QUIT")
			return nil
		})
		if err != nil {
			return a.withLog(err)
		}
		if _, err := a.failedKernelTransfer(off, "aborted", "an aborted"); err != nil {
			return a.withLog(err)
		}
		return a.withLog(s.waitEmpty(defaultTable, 5*time.Second))
	})

	var killedGot int64
	var killedLine logLine
	s.tl.Run("kills/curl-sigkill", func() error {
		off := a.LogSize()
		local := filepath.Join(s.work, "kill-curl.down")
		defer os.Remove(local)
		var cmd *exec.Cmd
		err := s.topo.In(nsCli, func() error {
			cmd = exec.Command("curl", "-sS", "--max-time", "60", "--interface", cliIP, "--user", peers.User+":"+peers.Password,
				"--ftp-pasv", "--limit-rate", "2M", "-o", local, ftpURL(pxyWanIP, proxyPort, s.mid.Name))
			return cmd.Start()
		})
		if err != nil {
			return err
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		deadline := time.Now().Add(15 * time.Second)
		var got int64
		for got < 1<<20 {
			if fi, err := os.Stat(local); err == nil {
				got = fi.Size()
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				<-exited
				return a.withLog(fmt.Errorf("curl wrote %d bytes in 15 s", got))
			}
			time.Sleep(50 * time.Millisecond)
		}
		cmd.Process.Kill()
		<-exited
		l, err := a.waitLine(off, 15*time.Second, "failed transfer line after curl was killed", func(l logLine) bool {
			return l.str("message") == "transfer" && l.str("error") != ""
		})
		if err != nil {
			return a.withLog(err)
		}
		if l.str("data_path") != "kernel" {
			b, _ := json.Marshal(l)
			return a.withLog(fmt.Errorf("the failed transfer was not carried by the kernel: %s", b))
		}
		killedGot, killedLine = got, l
		s.tl.Note("curl killed after %d bytes; proxy logged: %s level %s error %q ended_by %q, %d bytes down", got, l.str("cmd"), l.str("level"), l.str("error"), l.str("ended_by"), l.num("down"))
		return a.withLog(s.waitEmpty(defaultTable, 5*time.Second))
	})
	if killedLine != nil {
		s.tl.Run("kills/curl-sigkill/logged-count", func() error {
			return loggedAtLeast(killedLine, killedGot, "curl had written to its file")
		})
	}

	s.tl.Run("kills/server-session-killed", func() error {
		off := a.LogSize()
		var codes []string
		var got int64
		var dataEnd string
		complete := false
		before := descendants(s.srv.PID())
		err := s.clientSession(func(f *ftpConn) error {
			var session []int
			for pid := range descendants(s.srv.PID()) {
				if !before[pid] {
					session = append(session, pid)
				}
			}
			if len(session) == 0 {
				return errors.New("no new vsftpd process for this session")
			}
			d, err := f.startRetr(cliIP, s.mid.Name, 1<<20)
			if err != nil {
				return err
			}
			defer d.dc.Close()
			slices.Sort(session)
			for _, pid := range session {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			s.tl.Note("killed vsftpd's session processes %v after 1 MiB", session)
			err = d.sk.read(d.dc, -1, 20*time.Second)
			got = d.sk.n
			complete = d.sk.n == s.mid.Size && d.sk.sum() == s.mid.Sum
			switch {
			case err == nil:
				dataEnd = "end of file"
			default:
				dataEnd = err.Error()
			}
			d.dc.Close()
			deadline := time.Now().Add(20 * time.Second)
			for time.Now().Before(deadline) {
				code, text, err := f.ReplyWithin(time.Until(deadline))
				if err != nil {
					if len(codes) == 0 {
						codes = append(codes, "control: "+err.Error())
					}
					break
				}
				codes = append(codes, strconv.Itoa(code)+" "+strings.SplitN(text, "\n", 2)[0][4:])
				if code == 421 || code == 226 {
					break
				}
			}
			return nil
		})
		if err != nil {
			return a.withLog(err)
		}
		s.tl.Note("client got: %s; data: %d of %d bytes, then %s", strings.Join(codes, " | "), got, s.mid.Size, dataEnd)
		for _, c := range codes {
			if strings.HasPrefix(c, "226") {
				return a.withLog(fmt.Errorf("the client got 226 although the server's session was killed: %v", codes))
			}
		}
		if complete {
			return a.withLog(errors.New("the whole file arrived although the server's session was killed after 1 MiB: the kill came too late to show anything"))
		}
		if len(codes) == 0 || !strings.HasPrefix(codes[0], "426") {
			return a.withLog(fmt.Errorf("the client got %v; want 426 for the transfer (then 421 for the session)", codes))
		}
		if ts := a.transfers(off); len(ts) > 0 {
			b, _ := json.Marshal(ts[len(ts)-1])
			s.tl.Note("proxy logged: %s", b)
		}
		return a.withLog(s.waitEmpty(defaultTable, 5*time.Second))
	})
}

// loggedAtLeast checks that a failed download's transfer line counts at
// least the bytes its client is known to have received: conntrack counts
// every packet the proxy host forwarded to the client, so fewer means the
// count was taken before the end of the flow.
func loggedAtLeast(l logLine, got int64, what string) error {
	if n := l.num("down"); n < got {
		b, _ := json.Marshal(l)
		return fmt.Errorf("the transfer line counts %d bytes down, but %s %d bytes before the transfer was killed: the count is not the flow's last: %s", n, what, got, b)
	}
	return nil
}

// --- 5. concurrency ----------------------------------------------------------

// caseConcurrency: -sessions sessions each hold a PASV at the same time
// (so the maps hold that many redirects at once), then all download at
// once, then each downloads once more; every file byte-exact, every
// transfer carried by the kernel, and the table empty at the end.
func (s *suite) caseConcurrency() {
	a := s.proxyA("concurrency")
	if a == nil {
		return
	}
	n := *flagSessions
	name := fmt.Sprintf("concurrency/%d-sessions-%d-downloads", n, 2*n)
	off := a.LogSize()
	var ready sync.WaitGroup
	ready.Add(n)
	gate := make(chan struct{})
	errs := make([]error, n)
	timing := make([][2]phases, n)
	var wg sync.WaitGroup
	cpu0, _ := cpuSeconds(a.PID())
	start := time.Now()
	for i := range n {
		time.Sleep(10 * time.Millisecond) // vsftpd's listen backlog is 32
		wg.Go(func() {
			readied := false
			defer func() {
				if !readied {
					ready.Done()
				}
			}()
			errs[i] = s.clientSession(func(f *ftpConn) error {
				ap, err := f.PASV()
				if err != nil {
					return err
				}
				readied = true
				ready.Done()
				select {
				case <-gate:
				case <-time.After(90 * time.Second):
					return errors.New("the other sessions did not get their PASV within 90 s")
				}
				for k, file := range []peers.File{s.small[i%len(s.small)], s.small[(i+3)%len(s.small)]} {
					if k > 0 {
						if ap, err = f.PASV(); err != nil {
							return err
						}
					}
					if err := f.retr(cliIP, ap, file, &timing[i][k]); err != nil {
						return err
					}
				}
				f.Cmd("QUIT")
				return nil
			})
		})
	}
	allReady := make(chan struct{})
	go func() { ready.Wait(); close(allReady) }()
	select {
	case <-allReady:
	case <-time.After(90 * time.Second):
	}
	var atOnce nftState
	atOnce, stErr := s.nftTable(defaultTable)
	held := time.Since(start)
	close(gate)
	wg.Wait()
	elapsed := time.Since(start)
	cpu1, _ := cpuSeconds(a.PID())
	var failed []error
	for i, err := range errs {
		if err != nil {
			failed = append(failed, fmt.Errorf("session %d: %w", i, err))
		}
	}
	var err2 error
	if len(failed) > 0 {
		err2 = fmt.Errorf("%d of %d sessions failed; the first: %w", len(failed), n, errors.Join(failed[:min(len(failed), 5)]...))
	}
	s.tl.Report(name, elapsed, a.withLog(err2))
	for k, what := range []string{"first (all at once)", "second"} {
		var m, d, t []float64
		for i := range n {
			if ph := timing[i][k]; ph.done > 0 {
				m, d, t = append(m, ph.mark.Seconds()), append(d, ph.data.Seconds()), append(t, ph.done.Seconds())
			}
		}
		s.tl.Note("%s downloads, from RETR: to 150 p50 %.3fs max %.3fs; to the data's end p50 %.3fs max %.3fs; to 226 p50 %.3fs max %.3fs",
			what, median(m), slices.Max(append(m, 0)), median(d), slices.Max(append(d, 0)), median(t), slices.Max(append(t, 0)))
	}
	s.tl.Note("the proxy process used %.2f s of CPU in %.1f s", cpu1-cpu0, elapsed.Seconds())
	if stErr == nil {
		s.tl.Note("%d sessions held a PASV each after %s; the table then held %s", n, held.Round(time.Millisecond), atOnce.describe())
	}
	s.tl.Run("concurrency/redirects-at-once", func() error {
		if stErr != nil {
			return stErr
		}
		ok := n - len(failed)
		if atOnce.elems["gate4"] < ok || atOnce.elems["keys4"] < ok || atOnce.elems["dnat4"] < ok || atOnce.elems["snat4"] < ok {
			return fmt.Errorf("with %d sessions each holding a PASV, the table held %s; want %d gate4, keys4, dnat4 and snat4 elements", ok, atOnce.describe(), ok)
		}
		return nil
	})
	s.tl.Run("concurrency/all-logged-kernel", func() error {
		var ts []logLine
		deadline := time.Now().Add(10 * time.Second)
		for {
			if ts = a.transfers(off); len(ts) >= 2*n || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		return allKernel(ts, 2*n)
	})
	s.tl.Run("concurrency/table-empty", func() error { return s.waitEmpty(defaultTable, 10*time.Second) })
}

// --- 6. fallbacks ------------------------------------------------------------

// caseFallbacks: the transfers the kernel does not carry are relayed, each
// counted under its reason; a v6 client in front of a v6 upstream is
// carried by the kernel.
func (s *suite) caseFallbacks() {
	a := s.proxyA("fallbacks")
	if a == nil {
		return
	}
	check := func(name string, px *proxyRun, health, label string, fn func() error) {
		s.tl.Run("fallbacks/"+name, func() error {
			before, err := s.dataPaths(health)
			if err != nil {
				return err
			}
			off := px.LogSize()
			if err := fn(); err != nil {
				return px.withLog(err)
			}
			after, err := s.dataPaths(health)
			if err != nil {
				return err
			}
			if err := grew(before, after, label, 2); err != nil {
				return px.withLog(err)
			}
			ts := px.transfers(off)
			if label == "kernel" {
				if err := allKernel(ts, 2); err != nil {
					return px.withLog(err)
				}
			} else {
				if len(ts) != 2 {
					return px.withLog(fmt.Errorf("%d transfer lines, want 2", len(ts)))
				}
				for _, l := range ts {
					if l.str("data_path") == "kernel" || l.str("error") != "" {
						b, _ := json.Marshal(l)
						return px.withLog(fmt.Errorf("a relayed transfer logged as %s", b))
					}
				}
			}
			s.tl.Note("download and upload byte-exact; ftpproxy_data_path_total{path=%q} %g -> %g", label, before[label], after[label])
			return nil
		})
	}
	check("ftps-prot-p", a, healthA, "splice_tls", func() error {
		return s.roundTrip(nsCli, cliIP, pxyWanIP, proxyPort, s.srv, s.x, s.xup, "tls.up",
			"--ftp-pasv", "--ssl-reqd", "--cacert", s.pki.CAFile)
	})
	check("active-mode", a, healthA, "splice_active", func() error {
		return s.roundTrip(nsIn, inIP, pxyInIP, proxyPort, s.srv, s.x, s.xup, "active.up", "-P", inIP)
	})
	check("v6-client-v4-upstream", a, healthA, "splice_family", func() error {
		return s.roundTrip(nsIn, in6, pxyIn6, proxyPort, s.srv, s.x, s.xup, "v6v4.up", "--ftp-pasv")
	})

	p6, err := s.startProxy(proxySpec{name: "v6", listen: hostPort(pxyIn6, v6Port), upstream: hostPort(srv6, serverPort),
		ports: range6, health: health6, args: []string{"--data-path", "kernel", "--kernel-table", table6}})
	if err != nil {
		s.tl.Report("fallbacks/v6-client-v6-upstream", 0, err)
	} else {
		check("v6-client-v6-upstream", p6, health6, "kernel", func() error {
			if !strings.Contains(p6.Log(), `"ipv6":true`) {
				return errors.New(`the proxy's "kernel data path on" line does not say "ipv6":true`)
			}
			return s.roundTrip(nsIn, in6, pxyIn6, v6Port, s.srv6, s.x, s.xup, "v6v6.up", "--ftp-pasv")
		})
		s.tl.Run("fallbacks/v6-client-v6-upstream/table-empty", func() error { return s.waitEmpty(table6, 5*time.Second) })
		p6.Stop()
	}

	pph, err := s.startProxy(proxySpec{name: "pph", listen: hostPort(pxyInIP, pphPort), upstream: hostPort(srvIP, serverPort),
		ports: rangePPH, health: healthPPH, probe: pxyInIP,
		args: []string{"--data-path", "kernel", "--kernel-table", tablePPH, "--proxy-protocol-from", inIP + "/32"}})
	if err != nil {
		s.tl.Report("fallbacks/proxy-header", 0, err)
		return
	}
	check("proxy-header", pph, healthPPH, "splice_proxy_header", func() error {
		run := func(args ...string) (string, error) {
			var out string
			err := s.topo.In(nsIn, func() error {
				var err error
				out, err = peers.RunTool(s.ctx, opLimit, append([]string{"python3", s.pyclient, "--host", pxyInIP, "--port", strconv.Itoa(pphPort),
					"--source", inIP, "--claim", claimedIP, "--user", peers.User, "--password", peers.Password}, args...)...)
				return err
			})
			return strings.TrimSpace(out), err
		}
		out, err := run("get", s.x.Name)
		if err != nil {
			return err
		}
		var n int64
		var sum string
		if _, err := fmt.Sscan(out, &n, &sum); err != nil {
			return fmt.Errorf("client output %q: %v", out, err)
		}
		if err := sameSum("download "+s.x.Name, n, sum, s.x); err != nil {
			return err
		}
		if _, err := run("put", s.xup.Path, "pph.up"); err != nil {
			return err
		}
		defer os.Remove(s.srv.Path("pph.up"))
		if err := peers.SameContent(s.srv.Path("pph.up"), s.xup.Size, s.xup.Sum); err != nil {
			return fmt.Errorf("upload: %w", err)
		}
		if !strings.Contains(pph.Log(), `"client":"`+claimedIP+`:`) {
			return fmt.Errorf("the proxy did not take the client's address %s from the PROXY header", claimedIP)
		}
		return nil
	})
	pph.Stop()
}

// --- 7. unprivileged ---------------------------------------------------------

// caseUnprivileged: a proxy started as nobody cannot change nftables; it
// says so once and relays every transfer.
func (s *suite) caseUnprivileged() {
	bin := filepath.Join(s.work, "ftpproxy-unpriv")
	wrapper := filepath.Join(s.work, "ftpproxy-as-nobody")
	err := copyFile(*flagProxyBin, bin, 0o755)
	if err == nil {
		err = os.WriteFile(wrapper, []byte("#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups "+bin+" \"$@\"\n"), 0o755)
	}
	if err != nil {
		s.tl.Report("unprivileged/binary", 0, err)
		return
	}
	px, err := s.startProxy(proxySpec{name: "unpriv", bin: wrapper, listen: hostPort(pxyWanIP, unprivPort),
		upstream: hostPort(srvIP, serverPort), ports: rangeUnpriv, health: healthUnpriv,
		args: []string{"--data-path", "kernel", "--kernel-table", tableUnpriv}})
	if err != nil {
		s.tl.Report("unprivileged/proxy", 0, err)
		return
	}
	defer px.Stop()
	s.tl.Run("unprivileged/runs-as-nobody", func() error {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", px.PID()))
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "Uid:") {
				if f := strings.Fields(line); len(f) < 3 || f[1] != "65534" || f[2] != "65534" {
					return fmt.Errorf("the proxy runs as %q, want uid 65534", line)
				}
				if st, _ := s.nftTable(tableUnpriv); st.exists {
					return errors.New("table inet " + tableUnpriv + " exists although the proxy runs unprivileged")
				}
				return nil
			}
		}
		return errors.New("no Uid line in /proc/PID/status")
	})
	s.tl.Run("unprivileged/relays-byte-exact", func() error {
		for i := range 2 {
			if err := s.roundTrip(nsCli, cliIP, pxyWanIP, unprivPort, s.srv, s.x, s.xup, fmt.Sprintf("unpriv%d.up", i), "--ftp-pasv"); err != nil {
				return px.withLog(err)
			}
		}
		ts := px.transfers(0)
		if len(ts) != 4 {
			return px.withLog(fmt.Errorf("%d transfer lines, want 4", len(ts)))
		}
		for _, l := range ts {
			if l.str("data_path") == "kernel" {
				return px.withLog(errors.New("a transfer logged as carried by the kernel"))
			}
		}
		return nil
	})
	s.tl.Run("unprivileged/said-once", func() error {
		if n := px.count("kernel data path unavailable"); n != 1 {
			return px.withLog(fmt.Errorf("%d \"kernel data path unavailable\" lines after 4 transfers, want exactly 1", n))
		}
		if m, err := s.metrics(healthUnpriv); err != nil {
			return err
		} else if v, ok := m["ftpproxy_kernel_path_up"]; !ok || v != 0 {
			return px.withLog(fmt.Errorf("ftpproxy_kernel_path_up %v (present %v), want 0", v, ok))
		}
		for _, l := range px.lines(0) {
			if strings.Contains(l.str("message"), "kernel data path unavailable") {
				s.tl.Note("%s: %s", l.str("message"), l.str("error"))
			}
		}
		return nil
	})
}

func copyFile(from, to string, mode os.FileMode) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, mode)
}

// --- 8. lifecycle ------------------------------------------------------------

// staleTable is a table inet ftpproxy as a crashed proxy might have left
// it, with a junk redirect and a set the proxy never makes.
const staleTable = `table inet ftpproxy {
  map keys4 {
    type ipv4_addr . inet_service : mark
    flags timeout
    elements = { 10.99.9.9 . 9999 : 0x46500001 }
  }
  set junk {
    type ipv4_addr
    elements = { 10.99.9.9 }
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
  }
}
`

// caseLifecycle: a stale table is rebuilt at start, and SIGTERM removes
// the table.
func (s *suite) caseLifecycle() {
	s.stopA() // its table is the default one too
	ok := s.tl.Run("lifecycle/stale-table-loaded", func() error {
		path := filepath.Join(s.work, "stale.nft")
		if err := os.WriteFile(path, []byte(staleTable), 0o644); err != nil {
			return err
		}
		if _, err := s.topo.Exec(s.ctx, 10*time.Second, nsPxy, "nft", "-f", path); err != nil {
			return err
		}
		st, err := s.nftTable(defaultTable)
		if err != nil {
			return err
		}
		if st.elems["keys4"] != 1 || st.elems["junk"] != 1 {
			return fmt.Errorf("the stale table holds %v, want a keys4 element and a junk set", st.elems)
		}
		return nil
	})
	if !ok {
		return
	}
	px, err := s.startProxy(proxySpec{name: "life", listen: hostPort(pxyWanIP, lifePort), upstream: hostPort(srvIP, serverPort),
		ports: rangeLife, health: healthLife, args: []string{"--data-path", "kernel"}})
	if err != nil {
		s.tl.Report("lifecycle/proxy", 0, err)
		return
	}
	defer px.Stop()
	s.tl.Run("lifecycle/stale-table-rebuilt", func() error {
		st, err := s.nftTable(defaultTable)
		if err != nil {
			return err
		}
		if _, ok := st.elems["junk"]; ok {
			return px.withLog(fmt.Errorf("the stale table's junk set is still there:\n%s", peers.Tail(st.raw, 1500)))
		}
		for _, name := range tableSets {
			if _, ok := st.elems[name]; !ok {
				return px.withLog(fmt.Errorf("the rebuilt table has no set %s", name))
			}
		}
		if !st.empty() {
			return px.withLog(fmt.Errorf("the rebuilt table holds elements: %s", st.describe()))
		}
		for _, c := range []string{"prerouting", "postrouting", "forward", "input"} {
			if !slices.Contains(st.chains, c) {
				return fmt.Errorf("the rebuilt table has no chain %s (chains %v)", c, st.chains)
			}
		}
		if !slices.Equal(st.owners, []int{px.PID()}) {
			return px.withLog(fmt.Errorf("the rebuilt table's owners are %v, want the proxy %d", st.owners, px.PID()))
		}
		s.tl.Note("rebuilt: chains %s; sets %s; owner %v", strings.Join(st.chains, ", "), st.describe(), st.owners)
		return nil
	})
	s.tl.Run("lifecycle/kernel-transfer", func() error {
		off := px.LogSize()
		if err := s.roundTrip(nsCli, cliIP, pxyWanIP, lifePort, s.srv, s.x, s.xup, "life.up", "--ftp-pasv"); err != nil {
			return px.withLog(err)
		}
		if err := allKernel(px.transfers(off), 2); err != nil {
			return px.withLog(err)
		}
		return s.waitEmpty(defaultTable, 5*time.Second)
	})
	// A second instance given the same table (an operator who forgot
	// --kernel-table) leaves it to its owner: it says why and relays.
	s.tl.Run("lifecycle/second-instance-leaves-the-table", func() error {
		px2, err := s.startProxy(proxySpec{name: "life2", listen: hostPort(pxyWanIP, life2Port), upstream: hostPort(srvIP, serverPort),
			ports: rangeLife2, health: healthLife2, args: []string{"--data-path", "kernel"}})
		if err != nil {
			return err
		}
		defer px2.Stop()
		if err := s.roundTrip(nsCli, cliIP, pxyWanIP, life2Port, s.srv, s.x, s.xup, "life2.up", "--ftp-pasv"); err != nil {
			return px2.withLog(err)
		}
		for _, l := range px2.transfers(0) {
			if l.str("data_path") == "kernel" {
				return px2.withLog(errors.New("the second instance logged a transfer as carried by the kernel"))
			}
		}
		want := fmt.Sprintf("table inet %s belongs to process %d, which is running", defaultTable, px.PID())
		said := ""
		for _, l := range px2.lines(0) {
			if strings.Contains(l.str("message"), "kernel data path unavailable") {
				said = l.str("error")
			}
		}
		if !strings.Contains(said, want) {
			return px2.withLog(fmt.Errorf("the second instance's reason %q does not say %q", said, want))
		}
		if m, err := s.metrics(healthLife2); err != nil {
			return err
		} else if v, ok := m["ftpproxy_kernel_path_up"]; !ok || v != 0 {
			return px2.withLog(fmt.Errorf("second instance: ftpproxy_kernel_path_up %v (present %v), want 0", v, ok))
		}
		if err := px2.Stop(); err != nil {
			return px2.withLog(err)
		}
		// The owner's table is whole and still carries its transfers.
		off := px.LogSize()
		if err := s.roundTrip(nsCli, cliIP, pxyWanIP, lifePort, s.srv, s.x, s.xup, "life.up", "--ftp-pasv"); err != nil {
			return px.withLog(err)
		}
		if err := allKernel(px.transfers(off), 2); err != nil {
			return px.withLog(err)
		}
		s.tl.Note("%s", said)
		return s.waitEmpty(defaultTable, 5*time.Second)
	})
	s.tl.Run("lifecycle/table-gone-after-sigterm", func() error {
		start := time.Now()
		if err := px.Stop(); err != nil {
			return px.withLog(fmt.Errorf("after SIGTERM: %w", err))
		}
		st, err := s.nftTable(defaultTable)
		if err != nil {
			return err
		}
		if st.exists {
			return px.withLog(fmt.Errorf("table inet ftpproxy still exists after the proxy exited:\n%s", peers.Tail(st.raw, 1500)))
		}
		if px.count("kernel data path: table not removed") > 0 {
			return px.withLog(errors.New("the proxy logged that it did not remove its table"))
		}
		s.tl.Note("the proxy exited %s after SIGTERM; no table inet ftpproxy left", time.Since(start).Round(time.Millisecond))
		return nil
	})
}
