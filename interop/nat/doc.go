// Package nat holds the NAT and addressing suite of ftpproxy: real clients
// (curl, lftp, Python's ftplib) behind a masquerading router, on an inside
// network and on IPv6, talking through ftpproxy to real vsftpd servers that
// only the proxy can reach, among them a "legacy" server that announces an
// address it does not own in its 227 replies. It also shows FTPS from
// behind the NAT: failing through an edge router's DNAT with the kernel's
// FTP helper, which cannot read the encrypted 227, and working through
// ftpproxy.
//
// The tests carry the build tag "interop" and build their own topology of
// network namespaces joined by veth pairs (see topo_test.go for the
// addresses); run.sh builds the binaries outside the namespaces and runs
// the suite as root. The servers, the proxy launcher, the client drivers,
// the raw FTP client and the harness (the PASS/FAIL tally, -cases, the
// work directory) come from package peers (interop/peers).
package nat
