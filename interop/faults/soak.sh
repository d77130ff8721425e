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
FAULTS_SUITE=soak exec bash "$(dirname "$0")/run.sh" "$@"
