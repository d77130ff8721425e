#!/usr/bin/env bash
# Runs the interop suite through the proxy inside a network namespace of its
# own, where firewall rules make any data connection that bypasses the proxy
# fail at once:
#   127.0.0.2  the proxy      127.0.0.3  the FTP servers
#   127.0.0.4  the clients
#   - TCP from 127.0.0.4 to 127.0.0.3 is rejected (with a TCP reset);
#   - new TCP connections to 127.0.0.4 are rejected unless they come from
#     127.0.0.2.
# So a PASV/EPSV reply the proxy did not rewrite sends the client to the
# server and fails, and so does a PORT/EPRT the proxy passed on unchanged.
#
# Usage: interop/run.sh [extra test flags, e.g. -servers vsftpd -big 16]
# Needs root (ip netns, nft) and the peers (interop/install-peers.sh).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"

if [ "$(id -u)" != 0 ]; then
  echo "interop: SKIP: needs root for ip netns and nft; this run fails so that it is not taken for a pass" >&2
  exit 1
fi
for tool in ip nft curl lftp python3; do
  if ! command -v "$tool" >/dev/null; then
    echo "interop: $tool not found: run interop/install-peers.sh" >&2
    exit 1
  fi
done
if [ ! -x "$here/.peers/vsftpd/usr/sbin/vsftpd" ]; then
  echo "interop: peers not unpacked: run interop/install-peers.sh" >&2
  exit 1
fi

mkdir -p bin
go build -o bin/ftpproxy ./cmd/ftpproxy
go test -c -tags interop -o bin/interop.test ./interop

ns="ftpproxy-interop-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; }
trap cleanup EXIT INT TERM

if ! ip netns add "$ns"; then
  echo "interop: SKIP: the kernel refused to create a network namespace; this run fails so that it is not taken for a pass" >&2
  exit 1
fi
ip netns exec "$ns" ip link set lo up
if ! ip netns exec "$ns" nft -f - <<'NFT'
table inet ftpproxy_interop {
  chain output {
    type filter hook output priority 0; policy accept;
    ip saddr 127.0.0.4 ip daddr 127.0.0.3 meta l4proto tcp reject with tcp reset
    ip daddr 127.0.0.4 ip saddr != 127.0.0.2 meta l4proto tcp ct state new reject with tcp reset
  }
}
NFT
then
  echo "interop: SKIP: nft rules refused by the kernel (nf_tables/conntrack missing?); this run fails so that it is not taken for a pass" >&2
  exit 1
fi

cd "$here"
ip netns exec "$ns" "$root/bin/interop.test" -test.v -test.timeout 25m \
  -isolated \
  -ftpproxy "$root/bin/ftpproxy" \
  -peers "$here/.peers" \
  -ftplib "$here/clients/ftplib_client.py" \
  "$@"
