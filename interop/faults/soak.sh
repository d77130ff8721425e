#!/usr/bin/env bash
# Soak of ftpproxy: many concurrent clients (the suite's Go client, curl and
# a paced ftplib client; passive and active modes) doing transfers of
# random sizes through the proxy to a real server, with random faults:
# clients killed or resetting their connections mid-transfer, upstream
# session processes killed now and then. Runs in a network namespace of its
# own (ftpproxy-faults-<pid>, only lo, deleted on exit): proxy
# 127.0.0.2:2171 (health 2170, passive 25000-25099), server 127.0.0.3:2172
# (passive 25100-25399), clients 127.0.0.4.
#
# Usage: interop/faults/soak.sh [-soak-duration 150s] [-soak-clients 200]
#        [-soak-server vsftpd|proftpd] [-soak-fault 0.15] [-soak-upkill 2s]
#        [-soak-subprocs 16] [-soak-seed N] [-keep]
# Prints the summary and "soak: N passed, N failed"; exits non-zero if a
# transfer was lost or unclear, or the proxy's goroutines, sockets or fds
# did not come back to where they started.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if [ "$(id -u)" != 0 ]; then
  echo "soak: needs root for ip netns and the servers" >&2
  exit 1
fi
for tool in ip curl python3; do
  command -v "$tool" >/dev/null || { echo "soak: $tool not found: run interop/install-peers.sh" >&2; exit 1; }
done
[ -x "$root/interop/.peers/vsftpd/usr/sbin/vsftpd" ] || { echo "soak: peers not unpacked: run interop/install-peers.sh" >&2; exit 1; }

bindir="$(mktemp -d /tmp/ftpproxy-soak-bin.XXXXXX)"
ns="ftpproxy-faults-$$"
cleanup() {
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$bindir"
}
trap cleanup EXIT INT TERM

# Built outside the namespace: it has no network.
(cd "$root" && go build -o "$bindir/ftpproxy" ./cmd/ftpproxy && go test -c -tags interop -o "$bindir/faults.test" ./interop/faults)

ip netns add "$ns" || { echo "soak: the kernel refused to create a network namespace" >&2; exit 1; }
ip netns exec "$ns" ip link set lo up

cd "$here"
ip netns exec "$ns" "$bindir/faults.test" -test.run '^TestSoak$' -test.v -test.timeout 20m \
  -ftpproxy "$bindir/ftpproxy" \
  -peers "$root/interop/.peers" \
  -slowftplib "$here/slow_ftplib.py" \
  "$@"
