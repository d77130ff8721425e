#!/usr/bin/env bash
# Runs the suite of `ftpproxy probe`: the probe, from a client's network
# namespace, against real servers (vsftpd, pure-ftpd, proftpd), an SSH
# banner and an ftpproxy, one topology per diagnosis, each made by the
# router's nftables rules. The test builds its topology itself, four
# network namespaces named ftpprobe-$$-{cli,lan,rtr,srv} joined by veth
# pairs (addresses in topo_test.go), and the client's hosts file in
# /etc/netns/ftpprobe-$$-cli; this script builds the binaries outside them
# (there is no network inside) and, on exit, ends whatever still runs in
# those namespaces and deletes them and that hosts file.
#
# Output: one PASS/FAIL line per case, then "probe: N passed, N failed".
#
# Usage: interop/probe/run.sh [extra test flags, e.g. -cases REGEXP -keep]
# Needs root (ip netns, nft), the peers (interop/install-peers.sh) and go.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

fail() { echo "probe: $*; this run fails so that it is not taken for a pass" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root for ip netns and nft"
for tool in ip nft openssl go; do
  command -v "$tool" >/dev/null || fail "$tool not found: run interop/install-peers.sh"
done
for server in vsftpd/usr/sbin/vsftpd pure-ftpd/usr/sbin/pure-ftpd proftpd/usr/sbin/proftpd; do
  [ -x "$root/interop/.peers/$server" ] || fail "peers not unpacked ($server): run interop/install-peers.sh"
done

mkdir -p bin
go build -o bin/ftpproxy ./cmd/ftpproxy
go test -c -tags interop -o bin/probe.test ./interop/probe

prefix="ftpprobe-$$"
suite=probe
hostsdir="/etc/netns/$prefix-cli"
# shellcheck source=interop/netns-suite.sh
. "$root/interop/netns-suite.sh"

cd "$here"
netns_run "$root/bin/probe.test" -test.v -test.timeout 3m -test.run '^TestProbe$' \
  -prefix "$prefix" \
  -ftpproxy "$root/bin/ftpproxy" \
  -peers "$root/interop/.peers" \
  "$@"
