#!/usr/bin/env bash
# Benchmarks ftpproxy against a real vsftpd on loopback: the bench program
# (bench/, built to bin/ftpbench) starts vsftpd on 127.0.0.1:2100 and
# bin/ftpproxy on 127.0.0.1:2121 in front of it (free ports instead if those
# are taken), alternates direct and proxied runs and prints a table with the
# ratios and the goals. See docs/bench.md.
#
# Usage: interop/bench.sh [ftpbench flags, e.g. -rounds 3 -download-mib 256]
# Needs root (vsftpd's anonymous chroot), the unpacked vsftpd
# (interop/install-peers.sh) and bin/ftpproxy (make build); 'make bench'
# does both first. Exits non-zero only if something failed to run or a
# transfer delivered wrong bytes; a missed goal is informational.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
cd "$root"

if [ "$(id -u)" != 0 ]; then
  echo "bench: needs root: vsftpd's anonymous chroot" >&2
  exit 1
fi
vsftpd=interop/.peers/vsftpd/usr/sbin/vsftpd
[ -x "$vsftpd" ] || { echo "bench: $vsftpd missing: run interop/install-peers.sh (make peers)" >&2; exit 1; }
[ -x bin/ftpproxy ] || { echo "bench: bin/ftpproxy missing: run make build" >&2; exit 1; }

# 1,000 idle sessions take 1,000 descriptors here and 2,000 in the proxy
# (which raises its own soft limit to the hard one at start).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

"${GO:-go}" build -o bin/ftpbench ./bench
# The program bounds itself (-timeout, 6 minutes); this is the backstop.
exec timeout --kill-after=10s 420s bin/ftpbench -vsftpd "$vsftpd" -proxy bin/ftpproxy "$@"
