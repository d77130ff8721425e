#!/usr/bin/env bash
# Runs the forward-mode suite: lftp (every ftp:proxy-auth-type), curl and
# Python's ftplib name the server at login and ftpproxy --forward connects
# to it, vsftpd on one address and proftpd on another that only the proxy
# reaches; then the refusals (loopback, a hosts-file name resolving to
# loopback, 169.254.169.254, the proxy's own address, a port outside
# --forward-ports, a client outside --forward-from, wrong proxy
# passwords), each a 530 and no connection at listeners the test keeps on
# those destinations. The test builds its topology itself, three network
# namespaces named ftpfwd-$$-{cli,pxy,srv} joined by veth pairs (addresses
# in topo_test.go), and the proxy's hosts file in /etc/netns/ftpfwd-$$-pxy;
# this script builds the binaries outside them (there is no network
# inside) and, on exit, ends whatever still runs in those namespaces and
# deletes them and that hosts file.
#
# Output: one PASS/FAIL line per case, then "forward: N passed, N failed".
#
# Usage: interop/forward/run.sh [extra test flags, e.g. -cases REGEXP -keep -size 16]
# Needs root (ip netns), the peers (interop/install-peers.sh) and go.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

fail() { echo "forward: $*; this run fails so that it is not taken for a pass" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root for ip netns and the servers"
for tool in ip curl lftp python3 go; do
  command -v "$tool" >/dev/null || fail "$tool not found: run interop/install-peers.sh"
done
for server in vsftpd/usr/sbin/vsftpd proftpd/usr/sbin/proftpd; do
  [ -x "$root/interop/.peers/$server" ] || fail "peers not unpacked ($server): run interop/install-peers.sh"
done

# Binaries of this run only: suites running beside it build their own.
bindir="$(mktemp -d /tmp/ftpfwd-bin.XXXXXX)"
go build -o "$bindir/ftpproxy" ./cmd/ftpproxy
go test -c -tags interop -o "$bindir/forward.test" ./interop/forward

prefix="ftpfwd-$$"
suite=forward
hostsdir="/etc/netns/$prefix-pxy"
# shellcheck source=interop/netns-suite.sh
. "$root/interop/netns-suite.sh"

cd "$here"
netns_run "$bindir/forward.test" -test.v -test.timeout 4m -test.run '^TestForward$' \
  -prefix "$prefix" \
  -ftpproxy "$bindir/ftpproxy" \
  -peers "$root/interop/.peers" \
  -ftplib "$root/interop/clients/ftplib_client.py" \
  "$@"
