// Package probe diagnoses the path from here to an FTP server: which of DNS,
// the control port, the greeting, TLS, the login, passive and active data
// connections works, and for each that does not, what is most likely in the
// way and what fixes it. It is what `ftpproxy probe` runs.
//
//	rep := probe.Run(ctx, probe.Config{Host: "ftp.example.com", Port: 21})
//	rep.WriteText(os.Stdout, false) // "OK greeting: 220 (vsFTPd 3.0.5)." ...
//	os.Exit(rep.ExitCode)           // 0 all OK, 1 warnings, 2 failures
//
// With Config.Through set, the FTP checks connect to that FTP proxy instead
// (the proxy in front of Host, as ftpproxy's --upstream names it), so the
// same report shows whether the proxy fixes the path.
//
// The checks run one after another on one control connection, as a client
// would, with a second connection for the TLS check so that the plain-FTP
// checks carry on. Every blocking step is bounded by Config.Timeout and the
// whole probe by Config.Deadline. The password is sent once, after USER,
// and appears nowhere in a Report: the transcript shows "PASS ****", and
// server text that quotes it back has it masked.
//
// Each check yields a Result, "STATUS check: finding. fix.", with the checks
// named in a fixed vocabulary (see docs/probe.md): dns4, dns6, tcp, tcp/PORT,
// greeting, feat, tls, login, pasv, epsv, list, active, deadline.
package probe
