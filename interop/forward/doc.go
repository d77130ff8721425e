// Package forward holds the forward-mode suite of ftpproxy: real clients
// (lftp with every ftp:proxy-auth-type it has, curl and Python's ftplib)
// name the server at login (user@host, OPEN, SITE, the lftp proxy
// styles) and ftpproxy, started with --forward, connects to it: vsftpd on
// one address and proftpd on another, both reachable only through the
// proxy. Every file is checked by sha256 on both sides, in passive and in
// active mode. The refusals (a loopback destination, a name the proxy's
// hosts file resolves to loopback, 169.254.169.254, the proxy's own
// address, a port outside --forward-ports, a destination outside
// --allow-dest, a client outside --forward-from, a wrong or missing proxy
// password) must each answer 530, log "forward refused" and dial nothing:
// listeners on those destinations count every connection.
//
// The tests carry the build tag "interop" and build their own topology of
// network namespaces joined by veth pairs (see topo_test.go for the
// addresses); run.sh builds the binaries outside the namespaces and runs
// the suite as root. The servers, the raw FTP client and the harness (the
// PASS/FAIL tally, the work directory) come from package peers
// (interop/peers).
package forward
