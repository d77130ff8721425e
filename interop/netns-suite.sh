# Sourced by the run.sh of the suites whose test builds network namespaces
# of its own (nat, probe, forward). Before sourcing, the script sets:
#   suite    the suite's name, for the last line ("nat: run.sh took ...")
#   prefix   the namespaces' prefix, <suite-tag>-$$: only this run's
# and may set:
#   hostsdir an /etc/netns/<name> directory the test writes, removed at exit
#   bindir   a directory of this run's binaries, removed at exit
# On exit, whatever still runs in this run's namespaces is ended, the
# namespaces are deleted, and so are vsftpd's PAM service files of a test
# binary that was killed.

testpid=""
netns_cleanup() {
  local ns pid
  if [ -n "$testpid" ]; then
    kill -9 "$testpid" 2>/dev/null || true
  fi
  for ns in $(ip netns list | awk '{print $1}' | grep "^$prefix-" || true); do
    # Only processes of this run live in its namespaces.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
      kill -9 "$pid" 2>/dev/null || true
    done
    ip netns del "$ns" 2>/dev/null || true
  done
  if [ -n "${hostsdir:-}" ]; then
    rm -rf "$hostsdir"
    rmdir /etc/netns 2>/dev/null || true
  fi
  if [ -n "$testpid" ]; then
    rm -f /etc/pam.d/ftpproxy-interop-"$testpid"-* 2>/dev/null || true
  fi
  if [ -n "${bindir:-}" ]; then
    rm -rf "$bindir"
  fi
}
trap netns_cleanup EXIT
trap 'exit 130' INT TERM

# netns_run TESTBIN ARGS...: runs the suite's test binary in the
# background, so that a signal to this script reaches the cleanup, and
# exits with its status after a line with the time it took.
netns_run() {
  local rc start
  start=$(date +%s)
  set +e
  "$@" &
  testpid=$!
  wait "$testpid"
  rc=$?
  set -e
  echo "$suite: run.sh took $(( $(date +%s) - start ))s, exit status $rc"
  exit "$rc"
}
