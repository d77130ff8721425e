#!/usr/bin/env bash
# Runs the HAProxy suite: HAProxy in front of ftpproxy instances that read
# PROXY protocol headers, a real vsftpd behind them, curl, lftp and ftplib
# as clients. Two network namespaces, joined by a veth pair:
#
#   ftpproxy-haproxy-$$ (the test, HAProxy, the clients, vsftpd):
#     127.0.0.1   HAProxy's frontends        127.0.0.4   the clients
#     127.0.0.2   ftpproxy, data direct      127.0.0.6/7 ftpproxy chain A -> B
#     10.213.0.1  HAProxy's source towards the balanced instances (veth)
#     10.213.0.5  vsftpd (veth; reached by every proxy)
#   ftpproxy-haproxy-$$-b (the balanced instances, examples/haproxy):
#     10.213.0.2  ftpproxy1                  10.213.0.3  ftpproxy2
#
# The balanced instances forward their passive ranges through HAProxy with
# the same port numbers; they live in a namespace of their own because on
# one network stack HAProxy's listeners on those ports and an instance's
# wildcard passive listeners cannot both bind.
#
# Firewall (main namespace): TCP from the clients to vsftpd, to the second
# namespace, to the instances' control ports and to chain B is reset; new
# TCP connections to the clients are reset unless they come from an
# instance that opens active-mode data connections (127.0.0.2, 127.0.0.6).
#
# Usage: interop/haproxy/run.sh [extra test flags, e.g. -big 16 -keep]
# Needs root (ip netns, nft), haproxy and the peers (interop/install-peers.sh).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

fail() { echo "haproxy: $*; this run fails so that it is not taken for a pass" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root for ip netns and nft"
for tool in ip nft haproxy curl lftp python3 go; do
  command -v "$tool" >/dev/null || fail "$tool not found: run interop/install-peers.sh"
done
[ -x "$root/interop/.peers/vsftpd/usr/sbin/vsftpd" ] || fail "peers not unpacked: run interop/install-peers.sh"

# Built outside the namespaces: there is no network inside.
mkdir -p bin
go build -o bin/ftpproxy ./cmd/ftpproxy
go test -c -tags interop -o bin/haproxy.test ./interop/haproxy

ns="ftpproxy-haproxy-$$"
nsb="$ns-b"
cleanup() {
  ip netns del "$nsb" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

ip netns add "$ns" || fail "the kernel refused to create a network namespace"
ip netns add "$nsb" || fail "the kernel refused to create a second network namespace"
ip -n "$ns" link set lo up
ip -n "$nsb" link set lo up
ip -n "$ns" link add hpx0 type veth peer name hpx1 netns "$nsb" || fail "cannot create a veth pair"
ip -n "$ns" addr add 10.213.0.1/24 dev hpx0
ip -n "$ns" addr add 10.213.0.5/24 dev hpx0
ip -n "$nsb" addr add 10.213.0.2/24 dev hpx1
ip -n "$nsb" addr add 10.213.0.3/24 dev hpx1
ip -n "$ns" link set hpx0 up
ip -n "$nsb" link set hpx1 up

if ! ip netns exec "$ns" nft -f - <<'NFT'
table inet ftpproxy_haproxy {
  chain output {
    type filter hook output priority 0; policy accept;
    ip saddr 127.0.0.4 ip daddr 10.213.0.0/24 meta l4proto tcp reject with tcp reset
    ip saddr 127.0.0.4 ip daddr 127.0.0.2 tcp dport 2137 reject with tcp reset
    ip saddr 127.0.0.4 ip daddr 127.0.0.7 meta l4proto tcp reject with tcp reset
    ip daddr 127.0.0.4 ip saddr != { 127.0.0.2, 127.0.0.6 } meta l4proto tcp ct state new reject with tcp reset
  }
}
NFT
then
  fail "nft rules refused by the kernel (nf_tables/conntrack missing?)"
fi

cd "$here"
start=$(date +%s)
set +e
ip netns exec "$ns" timeout 9m "$root/bin/haproxy.test" -test.v -test.timeout 8m \
  -ftpproxy "$root/bin/ftpproxy" \
  -peers "$root/interop/.peers" \
  -ftplib "$root/interop/clients/ftplib_client.py" \
  -example "$root/examples/haproxy" \
  -netns-b "$nsb" \
  "$@"
rc=$?
set -e
echo "haproxy: suite took $(( $(date +%s) - start ))s, exit status $rc"
exit "$rc"
