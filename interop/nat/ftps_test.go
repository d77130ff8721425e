//go:build interop

package nat

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ftpproxy/ftpproxy/interop/peers"
)

// Case h: FTPS through the NAT topology, without and with ftpproxy.
//
// Without the proxy, the proxy's namespace acts as the operator's edge
// router: it forwards the public port 198.51.100.10:2144 to a vsftpd that
// offers TLS (10.20.0.2:2144) with a DNAT, runs the kernel's FTP helper
// on that control connection and masquerades what it forwards onto the
// server net (the server has no route to the public net). Plain FTP works
// that way: the helper reads the server's 227/229, rewrites 10.20.0.2 to
// the public address and lets the data connection in. FTPS does not: the
// 227 travels inside TLS and the helper cannot read it, so the client gets
// the server's private address, which it cannot reach, and a data
// connection to the public address instead (curl's and lftp's way) is
// refused, since the helper expects none.
//
// With the proxy (the edge's forwarding removed again), the same client
// speaks FTPS to ftpproxy on 198.51.100.10:2141, which holds a
// certificate for that address from the same test CA and either
// re-encrypts towards the TLS vsftpd or offloads TLS in front of the plain
// one.

// Ports and names of case h, inside the run's own namespaces.
const (
	ftpsPort       = 2144 // the TLS vsftpd on 10.20.0.2, and the edge's public port forwarded to it
	ftpsPasvLo     = 24400
	ftpsPasvHi     = 24419
	ftpsServerName = "ftps.nat.test"  // the TLS vsftpd's certificate names this and 198.51.100.10
	edgeLimit      = 8 * time.Second  // one client run through the edge router
	hLimit         = 30 * time.Second // one transfer through the proxy
)

// edgeRules is the proxy namespace's ruleset while it acts as the edge
// router of a server published without ftpproxy: the public control port
// is forwarded to the server with the kernel's FTP helper on it, and
// nothing else is forwarded but what conntrack relates to it (the data
// connections the helper expects). The forwarded connections are
// masqueraded onto the server net.
func edgeRules() string {
	return fmt.Sprintf(`table ip ftpedge {
  ct helper ftp-standard { type "ftp" protocol tcp; }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "wan0" ip daddr %[1]s tcp dport %[3]d dnat to %[2]s:%[3]d
  }
  chain helpers {
    type filter hook prerouting priority filter; policy accept;
    iifname "wan0" ip daddr %[2]s tcp dport %[3]d ct helper set "ftp-standard"
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "wan0" oifname "srv0" ip daddr %[2]s tcp dport %[3]d ct status dnat accept
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "srv0" ct status dnat masquerade
  }
}
`, pxyWanIP, srvIP, ftpsPort)
}

// setForward turns IPv4 forwarding in the proxy's namespace on or off.
func (s *suite) setForward(on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	return s.topo.In(nsPxy, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte(v), 0o644)
	})
}

// hEnv is what case h sets up: the test PKI, the proxy's certificate and
// the TLS vsftpd.
type hEnv struct {
	pki                 *peers.PKI
	proxyCert, proxyKey string
	tlsSrv              *peers.Server
}

// ftpsClient is a client program of case h and its passive mode: curl
// pasv/epsv, lftp passive/epsv, ftplib pasv. usePasvIP makes curl connect
// to the address in the 227 (--no-ftp-skip-pasv-ip) rather than to the
// control connection's; lftp (ftp:fix-pasv-address) does the latter when
// the 227 names a private address, ftplib always connects to the 227's.
type ftpsClient struct {
	client, mode string
	usePasvIP    bool
}

func (c ftpsClient) String() string {
	if c.usePasvIP {
		return c.client + "/" + c.mode + "-227-address"
	}
	return c.client + "/" + c.mode
}

// argv is the command line of one client run from the NAT client: op is
// "get" (remote to local) or "put" (local to remote); with ca the session
// is explicit FTPS with PROT P, the certificate verified against ca, host
// name (or IP address) included.
func (c ftpsClient) argv(s *suite, host string, port int, ca, op, local, remote string, limit time.Duration) []string {
	secs := strconv.Itoa(int(limit.Seconds()))
	switch c.client {
	case "curl":
		a := []string{"curl", "-sS", "-v", "--max-time", secs, "--connect-timeout", "5",
			"--interface", cliIP, "--user", peers.User + ":" + peers.Password, "--ftp-pasv"}
		if c.mode == "pasv" {
			a = append(a, "--disable-epsv")
		}
		if c.usePasvIP {
			a = append(a, "--no-ftp-skip-pasv-ip")
		}
		if ca != "" {
			a = append(a, "--ssl-reqd", "--cacert", ca)
		}
		if op == "get" {
			return append(a, "-o", local, ftpURL(host, port, remote))
		}
		return append(a, "-T", local, ftpURL(host, port, remote))
	case "lftp":
		cmds := []string{
			"set net:socket-bind-ipv4 " + cliIP,
			"set ftp:passive-mode on",
			"set ftp:prefer-epsv " + map[bool]string{true: "yes", false: "no"}[c.mode == "epsv"],
			"set net:max-retries 1",
			"set net:reconnect-interval-base 1",
			"set net:timeout " + secs,
			"set xfer:clobber on",
			"set cmd:fail-exit yes",
		}
		if ca != "" {
			cmds = append(cmds,
				"set ftp:ssl-force yes",
				"set ftp:ssl-protect-data yes",
				"set ftp:ssl-protect-list yes",
				"set ssl:ca-file "+ca,
				"set ssl:verify-certificate yes",
				"set ssl:check-hostname yes")
		} else {
			cmds = append(cmds, "set ftp:ssl-allow no")
		}
		cmds = append(cmds, fmt.Sprintf("open -u %s,%s -p %d %s", peers.User, peers.Password, port, host))
		if op == "get" {
			cmds = append(cmds, "get "+remote+" -o "+local)
		} else {
			cmds = append(cmds, "put "+local+" -o "+remote)
		}
		// -d: the commands and replies, decrypted, on stderr.
		return []string{"lftp", "-d", "-c", strings.Join(cmds, "; ")}
	default:
		a := []string{"python3", s.script, "--host", host, "--port", strconv.Itoa(port),
			"--user", peers.User, "--password", peers.Password, "--source", cliIP, "--mode", c.mode, "--timeout", secs}
		if ca != "" {
			a = append(a, "--tls", "explicit", "--cafile", ca)
		}
		if op == "get" {
			return append(a, "get", remote, local)
		}
		return append(a, "put", local, remote)
	}
}

// run runs the client in the NAT client's namespace, bounded by limit.
func (c ftpsClient) run(s *suite, host string, port int, ca, op, local, remote string, limit time.Duration) runResult {
	var r runResult
	s.topo.In(nsCli, func() error {
		r = runCombined(s.ctx, limit+5*time.Second, c.argv(s, host, port, ca, op, local, remote, limit)...)
		return nil
	})
	return r
}

var passiveReplyRe = regexp.MustCompile(`22[79] Entering [^\r\n"]*`)

// passiveReply returns the first 227 or 229 reply in a client's trace.
func passiveReply(out string) string {
	return strings.TrimSpace(passiveReplyRe.FindString(out))
}

var dataErrRe = regexp.MustCompile(`connect to \S+ port \d+ failed: [^\r\n]*|Connecting data socket to [^\r\n]*|Data socket error [^\r\n]*|OSError: [^\r\n]*`)

// dataError returns the lines of a client's trace that tell how its data
// connection failed (curl -v, lftp -d, ftplib's error), joined with "; ".
func dataError(out string) string {
	return strings.Join(dataErrRe.FindAllString(out, -1), "; ")
}

// tlsLogin reports whether a trace shows AUTH TLS accepted and the login
// done (curl -v, lftp -d); ftplib prints no trace.
func tlsLogin(c ftpsClient, out string) bool {
	switch c.client {
	case "curl":
		return strings.Contains(out, "< 234") && strings.Contains(out, "< 230")
	case "lftp":
		return strings.Contains(out, "<--- 234") && strings.Contains(out, "<--- 230")
	}
	return true
}

// caseH: FTPS behind the NAT, first through an edge router with a DNAT and
// the kernel's FTP helper (plain FTP works, FTPS does not), then through
// ftpproxy (FTPS works, re-encrypted or offloaded).
func (s *suite) caseH() {
	var h hEnv
	if !s.tl.Run("h/setup/tls-vsftpd", func() error { return s.setupH(&h) }) {
		return
	}
	defer h.tlsSrv.Stop()
	s.caseHEdge(&h)
	s.caseHProxy(&h)
}

// setupH makes the test PKI (the TLS vsftpd's certificate names
// ftps.nat.test and the public 198.51.100.10, as an operator publishing
// it there would have it; the proxy's names 198.51.100.10) and starts
// the vsftpd with TLS offered, not required, so that the same server
// serves the plain and the FTPS client.
func (s *suite) setupH(h *hEnv) error {
	var err error
	if h.pki, err = peers.MakeTestPKI(filepath.Join(s.work, "pki"), ftpsServerName, pxyWanIP); err != nil {
		return err
	}
	if h.proxyCert, h.proxyKey, err = h.pki.Issue("proxy", pxyWanIP); err != nil {
		return err
	}
	err = s.topo.In(nsSrv, func() error {
		var err error
		h.tlsSrv, err = peers.StartServer(s.ctx, peers.Vsftpd, s.peers, s.work, srvIP, ftpsPort,
			peers.PassivePorts(ftpsPasvLo, ftpsPasvHi),
			peers.TLS(peers.TLSOptions{CertFile: h.pki.CertFile, KeyFile: h.pki.KeyFile, UploadCloseNotify: true}))
		return err
	})
	if err != nil {
		return fmt.Errorf("vsftpd with TLS on %s:%d: %w", srvIP, ftpsPort, err)
	}
	if _, err := peers.WriteRandom(h.tlsSrv.Path("down.bin"), s.down.Size, 1); err != nil {
		return err
	}
	return os.Chown(h.tlsSrv.Root, h.tlsSrv.UID, h.tlsSrv.GID)
}

// vsftpdReplies returns the 227 and 229 replies vsftpd logged
// (log_ftp_protocol) since the log had off bytes.
func vsftpdReplies(srv *peers.Server, off int64) []string {
	b, _ := os.ReadFile(filepath.Join(srv.Dir, "vsftpd.log"))
	if off > int64(len(b)) {
		off = 0
	}
	return passiveReplyRe.FindAllString(string(b[off:]), -1)
}

// vsftpdLogSize returns the length of vsftpd's log so far.
func vsftpdLogSize(srv *peers.Server) int64 {
	fi, err := os.Stat(filepath.Join(srv.Dir, "vsftpd.log"))
	if err != nil {
		return 0
	}
	return fi.Size()
}

// caseHEdge: the server published through the edge router alone.
func (s *suite) caseHEdge(h *hEnv) {
	const pre = "h/no-proxy/edge-dnat-helper"
	// A direct FTPS download from the edge itself (no NAT on the way)
	// shows that the server's FTPS works, so that what fails below is the
	// NAT's doing.
	s.tl.Run(pre+"/control/ftps-direct-from-edge", func() error {
		local := filepath.Join(s.work, "h-direct.down")
		defer os.Remove(local)
		argv := []string{"curl", "-sS", "-v", "--max-time", "10", "--connect-timeout", "5",
			"--interface", pxySrvIP, "--user", peers.User + ":" + peers.Password, "--ftp-pasv", "--disable-epsv",
			"--ssl-reqd", "--cacert", h.pki.CAFile,
			"--resolve", fmt.Sprintf("%s:%d:%s", ftpsServerName, ftpsPort, srvIP),
			"-o", local, ftpURL(ftpsServerName, ftpsPort, "down.bin")}
		var r runResult
		s.topo.In(nsPxy, func() error { r = runCombined(s.ctx, 15*time.Second, argv...); return nil })
		if r.err != nil {
			return r.failure("FTPS straight to the server failed")
		}
		return peers.SameContent(local, s.down.Size, s.down.Sum)
	})

	if err := s.topo.Nft(s.ctx, nsPxy, edgeRules()); err != nil {
		note := tryModprobe(s.ctx)
		if err := s.topo.Nft(s.ctx, nsPxy, edgeRules()); err != nil {
			// The router's NAT loaded in setup, so it is the helper the
			// kernel lacks.
			reason := fmt.Sprintf("the kernel has no FTP conntrack helper: nft refused the edge ruleset (%s); %s; %s",
				peers.Tail(err.Error(), 300), note, kernelNotes())
			s.tl.Skip(pre, reason)
			return
		}
	}
	restored := false
	restore := func() error {
		if restored {
			return nil
		}
		restored = true
		return errors.Join(s.topo.Nft(s.ctx, nsPxy, ""), s.setForward(false))
	}
	defer restore()
	if err := s.setForward(true); err != nil {
		s.tl.Report(pre+"/forwarding", 0, err)
		return
	}
	fmt.Printf("nat: edge (%s): DNAT %s:%d -> %s:%d with the kernel FTP helper, masquerade onto the server net\n",
		s.topo.Name(nsPxy), pxyWanIP, ftpsPort, srvIP, ftpsPort)

	// Plain FTP through the edge: the helper rewrites the server's 227
	// and lets the data connection in.
	for _, c := range []ftpsClient{{"curl", "pasv", false}, {"curl", "pasv", true}, {"curl", "epsv", false}, {"lftp", "passive", false}, {"ftplib", "pasv", false}} {
		name := pre + "/plain/" + c.String() + "/works"
		s.tl.Run(name, func() error {
			local := filepath.Join(s.work, safe(name))
			defer os.Remove(local)
			off := vsftpdLogSize(h.tlsSrv)
			r := c.run(s, pxyWanIP, ftpsPort, "", "get", local, "down.bin", edgeLimit)
			if r.err != nil {
				return r.failure("plain FTP through the edge's DNAT and FTP helper failed")
			}
			if err := peers.SameContent(local, s.down.Size, s.down.Sum); err != nil {
				return err
			}
			got, sent := passiveReply(r.out), vsftpdReplies(h.tlsSrv, off)
			if c.mode == "pasv" && c.client != "ftplib" {
				if !strings.Contains(got, "(198,51,100,10,") {
					return r.failure(fmt.Sprintf("the client got %q: the helper did not rewrite the 227 to the public address", got))
				}
				if len(sent) == 0 || !strings.Contains(sent[0], "(10,20,0,2,") {
					return fmt.Errorf("vsftpd's log shows %q, want its 227 with 10,20,0,2", sent)
				}
				fmt.Printf("    %s: the server sent %q, the client got %q\n", c, sent[0], got)
			}
			return nil
		})
	}

	// FTPS through the same edge: the login works (the control
	// connection is a plain TCP forward), the transfer does not.
	for _, c := range []ftpsClient{{"curl", "pasv", false}, {"curl", "pasv", true}, {"curl", "epsv", false}, {"lftp", "passive", false}, {"ftplib", "pasv", false}} {
		name := pre + "/ftps/" + c.String() + "/fails"
		s.tl.Run(name, func() error {
			local := filepath.Join(s.work, safe(name))
			defer os.Remove(local)
			r := c.run(s, pxyWanIP, ftpsPort, h.pki.CAFile, "get", local, "down.bin", edgeLimit)
			if r.err == nil {
				return r.failure("FTPS through the edge's DNAT and FTP helper worked: case h shows nothing")
			}
			if !tlsLogin(c, r.out) {
				return r.failure("the FTPS login itself failed; want it to work and the data connection to fail")
			}
			if fi, err := os.Stat(local); err == nil && fi.Size() > 0 {
				return r.failure("data arrived")
			}
			how := dataError(r.out)
			if how == "" {
				return r.failure("the client failed, but not on its data connection")
			}
			got := passiveReply(r.out)
			if c.client == "curl" && c.mode == "pasv" && !strings.Contains(got, "(10,20,0,2,") {
				return r.failure(fmt.Sprintf("the client got %q; want the server's private 10,20,0,2 (the helper cannot read the encrypted 227)", got))
			}
			if got == "" {
				got = "no trace of the reply"
			}
			// The whole trace stays in the work directory (kept with -keep).
			os.WriteFile(filepath.Join(s.work, safe(name)+".trace"), []byte(r.out), 0o644)
			fmt.Printf("    %s failed after %s: %s; %s\n", c, r.elapsed.Round(time.Millisecond), got, how)
			return nil
		})
	}

	s.tl.Run(pre+"/removed", func() error {
		if err := restore(); err != nil {
			return err
		}
		// The proxy's namespace is back to forwarding nothing.
		return s.topo.In(nsCli, func() error {
			for _, addr := range []string{net.JoinHostPort(pxyWanIP, strconv.Itoa(ftpsPort)), net.JoinHostPort(srvIP, strconv.Itoa(ftpsPort))} {
				d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(cliIP)}}
				if c, err := d.Dial("tcp", addr); err == nil {
					c.Close()
					return fmt.Errorf("%s still reaches %s after the edge's forwarding was removed", cliIP, addr)
				}
			}
			return nil
		})
	})
}

// caseHProxy: the same NAT client speaks FTPS to ftpproxy, with TLS
// required of it, in front of the TLS vsftpd (re-encryption) and in front
// of the plain one (TLS offload).
func (s *suite) caseHProxy(h *hEnv) {
	tlsArgs := []string{"--tls-cert", h.proxyCert, "--tls-key", h.proxyKey, "--client-tls", "require"}
	clients := []ftpsClient{{"curl", "pasv", false}, {"curl", "epsv", false}, {"lftp", "passive", false}, {"lftp", "epsv", false}, {"ftplib", "pasv", false}}
	for _, v := range []struct {
		name     string
		srv      *peers.Server
		args     []string
		upstream bool
	}{
		{"reencrypt", h.tlsSrv, []string{"--upstream-tls", "explicit", "--upstream-ca", h.pki.CAFile, "--upstream-server-name", ftpsServerName}, true},
		{"offload", s.srv, nil, false},
	} {
		pre := "h/proxy/" + v.name
		px, err := s.startProxy("h-"+v.name, v.srv.Addr(), passiveRange, append(append([]string{}, tlsArgs...), v.args...)...)
		if err != nil {
			s.tl.Report(pre+"/proxy", 0, err)
			continue
		}
		for _, c := range clients {
			name := pre + "/" + c.String()
			s.tl.Run(name, func() error { return px.withLog(s.ftpsRoundTrip(c, h, v.srv, name)) })
		}
		s.tl.Run(pre+"/transfers-tls", func() error { return px.withLog(checkTLSTransfers(px, len(clients)*2, v.upstream)) })
		px.Stop()
	}
}

// ftpsRoundTrip uploads up.bin and downloads down.bin over FTPS through
// the proxy from the NAT client, and checks both by sha256.
func (s *suite) ftpsRoundTrip(c ftpsClient, h *hEnv, srv *peers.Server, tag string) error {
	remote := safe(tag) + ".up"
	local := filepath.Join(s.work, safe(tag)+".down")
	r := c.run(s, pxyWanIP, proxyPort, h.pki.CAFile, "put", s.up.Path, remote, hLimit)
	if r.err != nil {
		return r.failure("upload")
	}
	if err := peers.SameContent(srv.Path(remote), s.up.Size, s.up.Sum); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	os.Remove(srv.Path(remote))
	r = c.run(s, pxyWanIP, proxyPort, h.pki.CAFile, "get", local, "down.bin", hLimit)
	if r.err != nil {
		return r.failure("download")
	}
	defer os.Remove(local)
	if err := peers.SameContent(local, s.down.Size, s.down.Sum); err != nil {
		return fmt.Errorf("download: %w", err)
	}
	if c.client == "curl" && c.mode == "pasv" && !strings.Contains(passiveReply(r.out), "(198,51,100,10,") {
		return r.failure(fmt.Sprintf("the client got %q, want the proxy's public address", passiveReply(r.out)))
	}
	return nil
}

// checkTLSTransfers checks the proxy's transfer log lines: at least want
// of them, each over TLS towards the client from the router's public
// address, and over TLS towards the server exactly when upstream is set.
func checkTLSTransfers(px *proxyRun, want int, upstream bool) error {
	n := 0
	for _, line := range strings.Split(px.Log(), "\n") {
		var ev struct {
			Message     string `json:"message"`
			Cmd         string `json:"cmd"`
			TLS         string `json:"tls"`
			UpstreamTLS bool   `json:"upstream_tls"`
			Client      string `json:"client"`
		}
		if json.Unmarshal([]byte(line), &ev) != nil || ev.Message != "transfer" || ev.Cmd == "" {
			continue
		}
		n++
		if ev.TLS == "" {
			return fmt.Errorf("transfer %s without TLS towards the client", ev.Cmd)
		}
		if ev.UpstreamTLS != upstream {
			return fmt.Errorf("transfer %s: upstream_tls %v, want %v", ev.Cmd, ev.UpstreamTLS, upstream)
		}
		if !strings.HasPrefix(ev.Client, rtrWanIP+":") {
			return fmt.Errorf("transfer %s from %q, want the router's public address %s", ev.Cmd, ev.Client, rtrWanIP)
		}
	}
	if n < want {
		return fmt.Errorf("%d transfers in the proxy's log, want %d", n, want)
	}
	return nil
}
