#!/usr/bin/env bash
# Runs the kernel data path suite: ftpproxy --data-path kernel, whose plain
# passive transfers are redirected by nftables and carried by the kernel,
# with curl and small Go and Python clients behind a masquerading router
# and vsftpd servers only the proxy reaches while its forward guard is on:
# the guard, throughput and the proxy's CPU against direct transfers and
# the splice relay, stolen and second data connections, killed clients and
# servers, 200 concurrent transfers, the fallbacks to the relay (FTPS,
# active mode, IPv4/IPv6 translation, PROXY headers), an unprivileged
# proxy, and the table's lifecycle. The test builds its topology itself,
# six network namespaces named ftpkrn-$$-{cli,rtr,pxy,srv,in,thief} joined
# by veth pairs (addresses in topo_test.go); this script builds the
# binaries outside them (there is no network inside) and, on exit, ends
# whatever still runs in those namespaces and deletes them.
#
# Output: one PASS/FAIL (or SKIP) line per case, then "kernel: N passed,
# N failed". With -bench only the throughput comparison runs (5 rounds
# unless -rounds says otherwise) and prints its table and goals: the kernel
# rows of make bench; it fails only if something did not run or a transfer
# delivered wrong bytes.
#
# Usage: interop/kernel/run.sh [-bench] [test flags, e.g. -cases guard,kills
#        -rounds 3 -download-mib 256 -keep]
# Needs root (ip netns, nft), the peers (interop/install-peers.sh) and go.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

fail() { echo "kernel: $*; this run fails so that it is not taken for a pass" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root for ip netns and nft"
for tool in ip nft curl python3 setpriv getconf go; do
  command -v "$tool" >/dev/null || fail "$tool not found: run interop/install-peers.sh"
done
[ -x "$root/interop/.peers/vsftpd/usr/sbin/vsftpd" ] || fail "peers not unpacked: run interop/install-peers.sh"
[ -r /proc/sys/net/netfilter/nf_conntrack_acct ] || modprobe nf_conntrack 2>/dev/null || true

bench=0
verbose=(-test.v)
for a in "$@"; do
  if [ "$a" = -bench ] || [ "$a" = --bench ]; then
    bench=1
    verbose=()
  fi
done

# Binaries of this run only: suites running beside it build their own.
bindir="$(mktemp -d /tmp/ftpkrn-bin.XXXXXX)"
go build -o "$bindir/ftpproxy" ./cmd/ftpproxy
go test -c -tags interop -o "$bindir/kernel.test" ./interop/kernel

prefix="ftpkrn-$$"
suite=kernel
[ "$bench" = 1 ] && suite="kernel bench"
# shellcheck source=interop/netns-suite.sh
. "$root/interop/netns-suite.sh"

cd "$here"
netns_run "$bindir/kernel.test" "${verbose[@]}" -test.timeout 5m -test.run '^TestKernel$' \
  -prefix "$prefix" \
  -ftpproxy "$bindir/ftpproxy" \
  -peers "$root/interop/.peers" \
  -proxyhdr-client "$here/proxyhdr_client.py" \
  "$@"
