#!/usr/bin/env bash
# Runs the NAT and addressing suite: curl, lftp and ftplib behind a
# masquerading router (with and without the kernel's FTP helper), on an
# inside network and over IPv6, through ftpproxy to vsftpd servers only the
# proxy reaches (one of them announcing an address it does not own), and
# FTPS from behind the NAT, through an edge router's DNAT with the FTP helper
# (where it fails) and through ftpproxy (where it works). The
# test builds its topology itself, five network namespaces named
# ftpnat-$$-{cli,rtr,pxy,srv,in} joined by veth pairs (addresses in
# topo_test.go); this script builds the binaries outside them (there is no
# network inside) and, on exit, ends whatever still runs in those
# namespaces and deletes them.
#
# Output: one PASS/FAIL (or SKIP) line per case, then "nat: N passed, N failed".
#
# Usage: interop/nat/run.sh [extra test flags, e.g. -size 16 -clients 40 -keep]
# Needs root (ip netns, nft), the peers (interop/install-peers.sh) and go.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

fail() { echo "nat: $*; this run fails so that it is not taken for a pass" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root for ip netns and nft"
for tool in ip nft curl lftp python3 go; do
  command -v "$tool" >/dev/null || fail "$tool not found: run interop/install-peers.sh"
done
[ -x "$root/interop/.peers/vsftpd/usr/sbin/vsftpd" ] || fail "peers not unpacked: run interop/install-peers.sh"

mkdir -p bin
go build -o bin/ftpproxy ./cmd/ftpproxy
go test -c -tags interop -o bin/nat.test ./interop/nat

prefix="ftpnat-$$"
suite=nat
# shellcheck source=interop/netns-suite.sh
. "$root/interop/netns-suite.sh"

cd "$here"
netns_run "$root/bin/nat.test" -test.v -test.timeout 5m30s -test.run '^TestNAT$' \
  -prefix "$prefix" \
  -ftpproxy "$root/bin/ftpproxy" \
  -peers "$root/interop/.peers" \
  -ftplib "$root/interop/clients/ftplib_client.py" \
  "$@"
