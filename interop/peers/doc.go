// Package peers runs the real FTP peers of ftpproxy's test suites: FTP
// servers (vsftpd, pure-ftpd, proftpd), the ftpproxy binary in front of
// them, and FTP clients (curl, lftp, Python's ftplib), with helpers for
// files of known content. A suite in a package of its own uses it like
// this:
//
//	ctx := context.Background()
//	// work: a directory of mode 0755 (the servers' sessions run as "daemon")
//	srv, err := peers.StartServer(ctx, peers.Vsftpd, "interop/.peers", work, "127.0.0.3", 2100,
//		peers.PassivePorts(23000, 23099)) // a range no other suite uses
//	if err != nil { ... }
//	defer srv.Stop()
//	px, err := peers.StartProxy(ctx, peers.ProxyConfig{
//		Bin: "bin/ftpproxy", Listen: "127.0.0.2:2121", Upstream: srv.Addr(),
//		PassivePorts: "23100-23199", LogPath: filepath.Join(srv.Dir, "ftpproxy.log"),
//		Args: []string{"--upstream-data-mode", "passive"},
//	})
//	if err != nil { ... }
//	defer px.Stop()
//	f, _ := peers.WriteRandom(filepath.Join(work, "f.bin"), 1<<20, 1)
//	tg := peers.Target{Host: "127.0.0.2", Port: 2121, User: peers.User, Password: peers.Password,
//		Source: "127.0.0.4", Mode: "epsv"}
//	err = peers.Curl{}.Put(ctx, tg, f.Path, "f.bin", 0)
//	err = peers.SameContent(srv.Path("f.bin"), f.Size, f.Sum)
//	downs, ups, err := peers.ReadTransfers(px.LogPath)
//
// The servers are the Debian packages that interop/install-peers.sh unpacks
// into interop/.peers (never installed, so no system daemon runs); the
// clients are the installed curl and lftp and interop/clients/ftplib_client.py
// (Ftplib.Script). Starting a server needs root: vsftpd authenticates
// through a PAM service file it writes to /etc/pam.d (removed by Stop), and
// every server runs the test user's sessions as the system account
// "daemon".
//
// Each Kind has a default passive port range (vsftpd 22000-22099,
// pure-ftpd 22300-22499, proftpd 22200-22299); suites that run servers at
// the same time as others pass PassivePorts to keep them apart, and give
// the proxy a --passive-ports range of its own.
//
// A server speaks FTPS with the option TLS (TLSOptions: certificate and
// key, TLS required, implicit TLS, close_notify required at the end of an
// upload); MakeTestPKI makes a CA and server certificates for it:
//
//	pki, err := peers.MakeTestPKI(filepath.Join(work, "pki"), "ftps.interop.test")
//	srv, err := peers.StartServer(ctx, peers.ProFTPd, "interop/.peers", work, "127.0.0.3", 2140,
//		peers.TLS(peers.TLSOptions{CertFile: pki.CertFile, KeyFile: pki.KeyFile, Require: true}))
//
// The suites that build network namespaces of their own (nat, kernel,
// probe, forward) share their harness from here too: Topology and Within
// for the namespaces; Preflight, AbsPaths, ProxyBinary, NetnsPrefix,
// WorkDir and CleanWorkDir for the setup and the end of a run; Tally and
// RunCases for the PASS/FAIL/SKIP lines, -cases and the closing counts;
// Ctrl, a raw FTP control connection for what the client programs cannot
// do (hold a passive port, read a raw 227, pipeline a login); and
// HealthGet for a proxy's --health endpoint:
//
//	tl := &peers.Tally{}
//	defer func() { ok := tl.Summary("nat", start); ... }()
//	tp := newTopo(peers.NetnsPrefix(*flagPrefix, "ftpnat"))
//	err := peers.Preflight("network namespaces and nftables", "ip", "nft", "curl")
//	work, err := peers.WorkDir(*flagWork, "", "ftpnat-")
//	srv, err := peers.Within(tp, "srv", func() (*peers.Server, error) {
//		return peers.StartServer(ctx, peers.Vsftpd, peersDir, work, "10.20.0.2", 21) })
//	peers.RunCases(tl, *flagCases, []peers.Case{{Name: "a", Run: caseA}}, nil)
//	tl.Run("a/pasv-held", func() error {
//		return tp.In("cli", func() error {
//			c, err := peers.DialLogin("198.51.100.10:2141", "10.10.0.2", 15*time.Second)
//			...
//			ap, err := c.PASV()
//			...
//		})
//	})
//
// Every process is started in a process group of its own and stopped by
// its own PID; nothing here ends processes by name. Client calls are one
// program invocation (one FTP session) each, bounded by OpTimeout.
package peers
