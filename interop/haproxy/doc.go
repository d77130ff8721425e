// Package haproxy holds the load-balancer suite of ftpproxy: HAProxy in
// front of ftpproxy instances that read PROXY protocol headers, with a real
// vsftpd behind them and curl, lftp and Python's ftplib as clients.
//
// The tests carry the build tag "interop" and run inside the network
// namespaces that run.sh creates; they use examples/haproxy as it is, so
// the example configuration is tested with every run. See run.sh for the
// addresses and firewall rules.
package haproxy
