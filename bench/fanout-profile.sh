#!/usr/bin/env bash
# Where a fanout run's CPU goes: one FerryMQ broker, `ferrymq bench amqp --fanout 100` (the
# command line of bench/fanout-fsync.sh) for 25 s; 10 s in its middle are profiled with
# `perf record -F 499 -g` and the broker's and the bench client's CPU time (utime+stime from
# /proc) is measured over the same 10 s. Prints cores used by each and the run's rate;
# leaves perf.data in OUT_DIR for `perf report -i OUT_DIR/perf.data --no-children`.
#   bench/fanout-profile.sh BROKER_BIN OUT_DIR [CLIENT_BIN]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${1:?usage: bench/fanout-profile.sh BROKER_BIN OUT_DIR [CLIENT_BIN]}"
d="${2:?usage: bench/fanout-profile.sh BROKER_BIN OUT_DIR [CLIENT_BIN]}"
client="${3:-$repo/target/release/ferrymq}"
rm -rf "$d"; mkdir -p "$d"
"$bin" serve --data-dir "$d/data" --amqp-port 0 --kafka-port 0 --http-port 0 --prometheus-port 0 --fsync always >"$d/out" 2>&1 &
bpid=$!
for _ in $(seq 100); do grep -q "amqp listening" "$d/out" && break; sleep 0.1; done
port="$(sed -n 's/.*amqp listening on [^ ]*:\([0-9]*\).*/\1/p' "$d/out" | head -1)"
"$client" bench amqp --uri "amqp://guest:guest@127.0.0.1:$port/%2f" --fanout 100 -x 1 -y 1 -s 16 \
    --persistent --confirm 1000 --prefetch 1000 --time 25 --json >"$d/json" 2>"$d/err" &
cpid=$!
sleep 9
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
b0=$(cpu $bpid); c0=$(cpu $cpid)
perf record -F 499 -g -p "$bpid" -o "$d/perf.data" -- sleep 10 >/dev/null 2>&1
b1=$(cpu $bpid); c1=$(cpu $cpid)
echo "$(date -u +%FT%TZ) $bin: broker $(python3 -c "print(round(($b1-$b0)/$hz/10, 2))") cores, client $(python3 -c "print(round(($c1-$c0)/$hz/10, 2))") cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
wait "$cpid" || true
grep "^{" "$d/json" | tail -1 | python3 -c 'import json,sys; s=json.load(sys.stdin); print("publish", round(s["publish_rate"]), "msg/s, confirm p99", s["latency_us"]["p99"]/1000, "ms")'
kill "$bpid"; wait "$bpid" 2>/dev/null || true
