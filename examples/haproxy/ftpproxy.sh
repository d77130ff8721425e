#!/bin/sh
# The two ftpproxy instances that examples/haproxy/haproxy.cfg balances.
# Run the first on the host with FTPPROXY1 and the second on the host with
# FTPPROXY2 (or both on one host with two addresses):
#
#   FTP_VIP=203.0.113.10 FTPPROXY1=10.0.0.11 FTPPROXY2=10.0.0.12 UPSTREAM=10.0.0.5:21 \
#       LB=10.0.0.2/32 ./ftpproxy.sh 1
#
#   FTP_VIP    the address clients connect to (HAProxy's); announced in 227 replies
#   LB         HAProxy's source address(es) towards the instances, CIDR[,CIDR]
#   UPSTREAM   the FTP server, host:port
#   FTPPROXY   the ftpproxy binary (default: ftpproxy in PATH)
#
# Each instance has its own passive range, the one haproxy.cfg forwards to
# it, and answers health checks on port 813N. SIGTERM drains: the health
# check turns 503, HAProxy sends new sessions elsewhere, and running
# transfers finish within --drain-timeout.
set -eu
n="${1:?usage: ftpproxy.sh 1|2}"
case "$n" in
1) addr="$FTPPROXY1" port=2131 health=8131 range=23000-23099 ;;
2) addr="$FTPPROXY2" port=2132 health=8132 range=23100-23199 ;;
*) echo "ftpproxy.sh: instance 1 or 2" >&2; exit 2 ;;
esac
shift
exec "${FTPPROXY:-ftpproxy}" \
    --listen "$addr:$port" \
    --upstream "$UPSTREAM" \
    --proxy-protocol-from "$LB" \
    --advertise "$FTP_VIP" \
    --passive-ports "$range" \
    --health "$addr:$health" \
    --drain-timeout 5m \
    "$@"
