#!/usr/bin/env bash
# Runs every fuzz target of the packages given (default: all that have
# one) for FUZZTIME each (a duration such as 10s, or an execution count
# such as 200000x). A target that fails with a crasher (a new file under
# testdata/fuzz) fails the run at once; a failure without one (the fuzzer's
# own deadline handling on a loaded machine) is retried once.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-10s}
pkgs=("$@")
[ ${#pkgs[@]} -gt 0 ] || pkgs=(./rewrite ./nat ./proxy ./probe ./cmd/ftpproxy)

for pkg in "${pkgs[@]}"; do
  for target in $(go test "$pkg" -list '^Fuzz' | grep '^Fuzz'); do
    for try in 1 2; do
      echo "fuzz $pkg $target ($fuzztime, try $try)"
      before=$(git status --porcelain -- "$pkg/testdata/fuzz" | wc -l)
      if go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime 1s; then
        break
      fi
      after=$(git status --porcelain -- "$pkg/testdata/fuzz" | wc -l)
      if [ "$after" != "$before" ]; then
        # The input a worker was running when it failed. The fuzzer also
        # writes one when a worker on a loaded machine misses its own
        # deadline ("hung or terminated unexpectedly"): an input that
        # passes when run again alone is that, not a crasher.
        new=$(git status --porcelain --untracked-files=all -- "$pkg/testdata/fuzz/$target" | awk '$1 == "??" {print $2}' | head -n 1)
        if [ -n "$new" ] && [ "$try" = 1 ] && go test "$pkg" -run "^${target}\$/^$(basename "$new")\$" -count=1 >/dev/null 2>&1; then
          echo "fuzz: $target: the input $(basename "$new") passes when run alone; not a crasher, retrying" >&2
          rm -f "$new"
          continue
        fi
        echo "fuzz: $target failed; the crasher is in $pkg/testdata/fuzz/$target" >&2
        exit 1
      fi
      if [ "$try" = 2 ]; then
        echo "fuzz: $target failed twice without a crasher" >&2
        exit 1
      fi
    done
  done
done
