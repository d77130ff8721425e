// Package probe holds the suite of `ftpproxy probe`: the probe program run
// from a client's network namespace against real servers (vsftpd,
// pure-ftpd, proftpd), an SSH banner and an ftpproxy, with a router
// between them whose nftables rules make one diagnosis per topology: a
// working server, port 21 dropped, reset or refused with ICMP, the passive
// range dropped, a server announcing an address no route leads to in its
// 227, something that is not FTP on the port, an implicit-FTPS port, the
// client behind NAT for active mode, and the blocked path through an
// ftpproxy on an alternate port. Each case checks the result lines of the
// text and the JSON report, the exit code and the transcript.
//
// The tests carry the build tag "interop" and build their own topology of
// network namespaces joined by veth pairs (see topo_test.go for the
// addresses); run.sh builds the binaries outside the namespaces and runs
// the suite as root. The servers, the proxy launcher and the harness (the
// PASS/FAIL tally, the work directory) come from package peers
// (interop/peers).
package probe
