#!/usr/bin/env bash
# Runs the fault-injection and graceful-drain cases of ftpproxy against real
# servers (vsftpd, proftpd) in a network namespace of its own
# (ftpproxy-faults-<pid>, only lo, deleted on exit):
#   127.0.0.2  the proxies   127.0.0.3  the FTP servers
#   127.0.0.4  the clients   127.0.0.5  a second client address
# Ports: proxies 2150-2151, 2156-2157 (health 2150, 2166, 2167), servers
# 2152-2153, silent-upstream gate 2155; passive 25000-25099 (proxies),
# 25100-25299 (servers). The services cases: proxy 2161-2163 (health
# 2164), pool servers 2175-2176; passive 25640-25699 (proxy), 25700-25799
# (pool servers).
#
# Usage: interop/faults/run.sh [test flags, e.g. -cases 'drain|churn' -churn 500 -keep]
# Needs root (ip netns; the servers need root) and the peers
# (interop/install-peers.sh). Prints one PASS/FAIL line per case and
# "faults: N passed, N failed"; exits non-zero on any failure.
set -euo pipefail

# soak.sh runs the soak through this script with FAULTS_SUITE=soak.
suite="${FAULTS_SUITE:-faults}"
case "$suite" in
  faults) test_run='^TestFaults$'; test_timeout=15m ;;
  soak) test_run='^TestSoak$'; test_timeout=20m ;;
  *) echo "run.sh: unknown FAULTS_SUITE $suite" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if [ "$(id -u)" != 0 ]; then
  echo "$suite: needs root for ip netns and the servers" >&2
  exit 1
fi
for tool in ip curl python3; do
  command -v "$tool" >/dev/null || { echo "$suite: $tool not found: run interop/install-peers.sh" >&2; exit 1; }
done
[ -x "$root/interop/.peers/vsftpd/usr/sbin/vsftpd" ] || { echo "$suite: peers not unpacked: run interop/install-peers.sh" >&2; exit 1; }

bindir="$(mktemp -d "/tmp/ftpproxy-$suite-bin.XXXXXX")"
ns="ftpproxy-faults-$$"
cleanup() {
  # Whatever still runs in the namespace is this run's (a server's session
  # process can outlive a killed server): stop it by PID first.
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$bindir"
}
trap cleanup EXIT INT TERM

# Built outside the namespace: it has no network.
(cd "$root" && go build -o "$bindir/ftpproxy" ./cmd/ftpproxy && go test -c -tags interop -o "$bindir/faults.test" ./interop/faults)

ip netns add "$ns" || { echo "$suite: the kernel refused to create a network namespace" >&2; exit 1; }
ip netns exec "$ns" ip link set lo up

cd "$here"
ip netns exec "$ns" "$bindir/faults.test" -test.run "$test_run" -test.v -test.timeout "$test_timeout" \
  -ftpproxy "$bindir/ftpproxy" \
  -peers "$root/interop/.peers" \
  -slowftplib "$here/slow_ftplib.py" \
  "$@"
