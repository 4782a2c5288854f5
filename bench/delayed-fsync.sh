#!/usr/bin/env bash
# Delayed messages under --fsync always, before and after the delay log's fsync moved off
# the exchange's loop (issue 14): runs bench/delayed.sh (1 M messages, x-delay uniform over
# 60 s, publisher confirms) with the old binary, then the new one, then the old one and
# the new one again, in one session on the same machine.
#   bench/delayed-fsync.sh OLD_BIN [NEW_BIN] [COUNT] [SPREAD_MS] [ROUNDS]
# OLD_BIN: a release build of the commit before (e.g. `git worktree add /tmp/old main`,
# build there, or copy target/release/ferrymq aside before changing the code).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
old="${1:?usage: bench/delayed-fsync.sh OLD_BIN [NEW_BIN] [COUNT] [SPREAD_MS] [ROUNDS]}"
new="${2:-$repo/target/release/ferrymq}"
count="${3:-1000000}"
spread="${4:-60000}"
rounds="${5:-1}"
echo "# bench/delayed-fsync.sh $*  ($(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
for r in $(seq "$rounds"); do
    for which in old new; do
        bin="$old"
        [[ $which == new ]] && bin="$new"
        echo
        echo "=== round $r: $which ($bin)"
        FSYNC=always FERRYMQ_BIN="$bin" "$repo/bench/delayed.sh" "$count" "$spread" 2>/dev/null
    done
done
