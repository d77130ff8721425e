//go:build interop

package kernel

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

// --- 9. upgrade --------------------------------------------------------------

// caseUpgrade: an upgrade in place (SIGUSR2) with kernel transfers in
// flight. The new process keeps the table: a download the kernel carries
// goes on to its last byte, and a redirect the old process set up before
// the signal still takes its client's connection afterwards. The old
// process drains and leaves the table to the new one, whose transfers
// are carried by the kernel too; the table goes when the new one stops.
func (s *suite) caseUpgrade() {
	pidFile := filepath.Join(s.work, "upgrade.pid")
	px, err := s.startProxy(proxySpec{name: "upg", listen: hostPort(pxyWanIP, upgPort), upstream: hostPort(srvIP, serverPort),
		ports: rangeUpg, health: healthUpg,
		args: []string{"--data-path", "kernel", "--kernel-table", tableUpg, "--pid-file", pidFile, "--drain-timeout", "30s"}})
	if err != nil {
		s.tl.Report("upgrade/proxy", 0, err)
		return
	}
	oldPID := px.PID()
	newPID := 0
	defer func() {
		px.Stop()
		if newPID != 0 {
			stopPID(newPID, 10*time.Second)
		}
	}()
	addr := hostPort(pxyWanIP, upgPort)
	dial := func() (*ftpConn, error) {
		return peers.Within(s.topo, nsCli, func() (*ftpConn, error) { return dialFTP(addr, cliIP) })
	}

	// Before the signal: a download under way, and a PASV whose client
	// has not connected yet.
	var d1 download
	var f1, f2 *ftpConn
	var ap2 netip.AddrPort
	if !s.tl.Run("upgrade/before", func() error {
		var err error
		if f1, err = dial(); err != nil {
			return err
		}
		if d1, err = peers.Within(s.topo, nsCli, func() (download, error) { return f1.startRetr(cliIP, s.mid.Name, 1<<20) }); err != nil {
			return px.withLog(err)
		}
		if f2, err = dial(); err != nil {
			return err
		}
		if ap2, err = f2.PASV(); err != nil {
			return err
		}
		st, err := s.nftTable(tableUpg)
		if err != nil {
			return err
		}
		if st.elems["gate4"] != 1 {
			return px.withLog(fmt.Errorf("before the upgrade the table holds %s, want the waiting PASV's gate", st.describe()))
		}
		return nil
	}) {
		return
	}
	defer f1.Close()
	defer f2.Close()
	defer d1.dc.Close()

	off := px.LogSize()
	if !s.tl.Run("upgrade/new-process-ready", func() error {
		if err := syscall.Kill(oldPID, syscall.SIGUSR2); err != nil {
			return err
		}
		var err error
		if newPID, err = waitPIDFile(pidFile, oldPID, 15*time.Second); err != nil {
			return px.withLog(err)
		}
		if _, err := px.waitLine(off, 10*time.Second, "the new process taking over", func(l logLine) bool {
			return strings.HasPrefix(l.str("message"), "upgrade: taking over")
		}); err != nil {
			return px.withLog(err)
		}
		st, err := s.nftTable(tableUpg)
		if err != nil {
			return err
		}
		if !st.exists || st.elems["gate4"] != 1 {
			return px.withLog(fmt.Errorf("after the new process started the table holds %s (exists %v), want the old process's waiting gate", st.describe(), st.exists))
		}
		s.tl.Note("old process %d, new process %d; the table kept: %s", oldPID, newPID, st.describe())
		return nil
	}) {
		return
	}

	s.tl.Run("upgrade/waiting-redirect-kept", func() error {
		// The old process's redirect, set before the signal, takes the
		// client's connection now.
		off := px.LogSize()
		if err := s.topo.In(nsCli, func() error { return f2.retr(cliIP, ap2, s.x, nil) }); err != nil {
			return px.withLog(err)
		}
		return px.withLog(allKernel(px.transfers(off), 1))
	})
	s.tl.Run("upgrade/download-in-flight-completes", func() error {
		if err := d1.sk.read(d1.dc, -1, 60*time.Second); err != nil {
			return err
		}
		d1.dc.Close()
		if code, text, err := f1.Reply(); err != nil || code != 226 {
			return px.withLog(fmt.Errorf("after the download: %d %q %v; want 226", code, text, err))
		}
		if err := sameSum("download across the upgrade", d1.sk.n, d1.sk.sum(), s.mid); err != nil {
			return err
		}
		l, err := px.waitLine(0, 5*time.Second, "the download's transfer line", func(l logLine) bool {
			return l.str("message") == "transfer" && l.num("down") >= s.mid.Size
		})
		if err != nil {
			return px.withLog(err)
		}
		return px.withLog(allKernel([]logLine{l}, 1))
	})
	s.tl.Run("upgrade/old-process-leaves-the-table", func() error {
		f1.Cmd("QUIT")
		f2.Cmd("QUIT")
		if err := waitGone(oldPID, 15*time.Second); err != nil {
			return px.withLog(err)
		}
		st, err := s.nftTable(tableUpg)
		if err != nil {
			return err
		}
		if !st.exists {
			return px.withLog(errors.New("the old process removed the table the new one uses"))
		}
		if !slices.Equal(st.owners, []int{newPID}) {
			return px.withLog(fmt.Errorf("the table's owners are %v, want the new process %d alone", st.owners, newPID))
		}
		if px.count("kernel data path: table not removed") > 0 {
			return px.withLog(errors.New("the old process logged a failure with the table"))
		}
		return s.waitEmpty(tableUpg, 5*time.Second)
	})
	s.tl.Run("upgrade/new-process-kernel-transfer", func() error {
		off := px.LogSize()
		if err := s.roundTrip(nsCli, cliIP, pxyWanIP, upgPort, s.srv, s.x, s.xup, "upg.up", "--ftp-pasv"); err != nil {
			return px.withLog(err)
		}
		if err := allKernel(px.transfers(off), 2); err != nil {
			return px.withLog(err)
		}
		return s.waitEmpty(tableUpg, 5*time.Second)
	})
	s.tl.Run("upgrade/table-gone-after-sigterm", func() error {
		if err := stopPID(newPID, 15*time.Second); err != nil {
			return px.withLog(err)
		}
		newPID = 0
		st, err := s.nftTable(tableUpg)
		if err != nil {
			return err
		}
		if st.exists {
			return px.withLog(errors.New("the table is still there after the new process stopped"))
		}
		return nil
	})
}

// waitPIDFile waits for the PID file to name a process other than old.
func waitPIDFile(path string, old int, limit time.Duration) (int, error) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid != old && pid > 0 {
				return pid, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return 0, fmt.Errorf("%s did not name a new process within %v", path, limit)
}

// waitGone waits for the process pid to exit.
func waitGone(pid int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("process %d still runs %v later", pid, limit)
}

// stopPID sends SIGTERM to pid (a process the suite did not start itself:
// the one an upgrade started) and waits for it to exit.
func stopPID(pid int, limit time.Duration) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return err
	}
	if err := waitGone(pid, limit); err != nil {
		syscall.Kill(pid, syscall.SIGKILL)
		return err
	}
	return nil
}
