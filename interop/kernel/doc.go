// Package kernel holds the kernel data path suite of ftpproxy: with
// --data-path kernel, plain passive transfers are redirected by nftables
// and carried by the kernel, not by the proxy process. Real clients (curl,
// and small Go and Python clients for what curl cannot do) behind a
// masquerading router talk through ftpproxy to real vsftpd servers: the
// forward guard keeps the proxy host from routing anything else; the
// throughput and the proxy's CPU are compared with direct transfers and
// the splice relay; a thief's connection and a second connection to an
// announced port are refused; killed clients and servers leave an empty
// table and no 226; 200 sessions transfer at once; TLS, active mode,
// IPv4/IPv6 translation and PROXY headers fall back to the relay, each
// counted; an unprivileged proxy says once that the path is unavailable
// and relays; a stale table is rebuilt and SIGTERM removes it.
//
// The tests carry the build tag "interop" and build their own topology of
// network namespaces joined by veth pairs (see topo_test.go for the
// addresses); run.sh builds the binaries outside the namespaces and runs
// the suite as root. The servers, the proxy launcher, the raw FTP client
// and the harness (the PASS/FAIL tally, -cases, the work directory) come
// from package peers (interop/peers).
package kernel
