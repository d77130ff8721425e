// Package interop holds the interoperability suites of ftpproxy: real FTP
// servers (vsftpd, pure-ftpd, proftpd) and real FTP clients (curl, lftp,
// Python's ftplib) talking through the proxy in every data-connection mode
// (TestInterop); clients that send commands before the replies to earlier
// ones have arrived (TestPipeline); the same clients speaking FTPS to
// the proxy, which speaks plain FTP to the servers (TestFTPS); and the
// proxy speaking FTPS to servers that require it (TestFTPSUpstream).
//
// The tests carry the build tag "interop" and need the peers that
// install-peers.sh installs and unpacks. run.sh builds everything and runs
// the suite inside a network namespace whose firewall rules make any data
// connection that bypasses the proxy fail; see README.md. The servers,
// the proxy launcher and the client drivers live in the package peers
// (interop/peers), which other suites import too.
package interop
