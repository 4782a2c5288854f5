#!/usr/bin/env bash
# AMQP persistent + confirms, 1 producer / 1 consumer, 16 B, durable queue, --fsync always:
# the maximum rate, then end-to-end latency (consumer arrival minus send time) at half that
# rate, for FerryMQ before and after (two binaries), in one run.
#   bench/amqp-persistent-latency.sh OLD_BIN [NEW_BIN]
# Environment: SECONDS_PER_RUN [15].
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
old="${1:?usage: bench/amqp-persistent-latency.sh OLD_BIN [NEW_BIN]}"
new="${2:-$repo/target/release/ferrymq}"
secs="${SECONDS_PER_RUN:-15}"
base=(-x 1 -y 1 -s 16 --persistent --confirm 1000 --prefetch 1000 --time "$secs" --json)
echo "# bench/amqp-persistent-latency.sh $*  ($(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
echo "# ferrymq bench amqp ${base[*]} [--rate R/2]"

field() { python3 -c 'import json,sys; l=[x for x in open(sys.argv[1]) if x.startswith("{")]; v=json.loads(l[-1]) if l else {}
for k in sys.argv[2].split("."): v=v.get(k,{}) if isinstance(v,dict) else {}
print(v if v!={} else 0)' "$1" "$2"; }

run() { # label bin
    local dir pid port uri rate half
    dir="$(mktemp -d /tmp/ferrymq-lat.XXXXXX)"
    "$2" serve --data-dir "$dir/data" --amqp-port 0 --kafka-port 0 --http-port 0 --prometheus-port 0 --fsync always >"$dir/out" 2>&1 &
    pid=$!
    for _ in $(seq 100); do grep -q "amqp listening" "$dir/out" && break; sleep 0.1; done
    port="$(sed -n 's/.*amqp listening on [^ ]*:\([0-9]*\).*/\1/p' "$dir/out" | head -1)"
    uri="amqp://guest:guest@127.0.0.1:$port/%2f"
    "$new" bench amqp --uri "$uri" "${base[@]}" >"$dir/max.json" 2>/dev/null || true
    rate="$(field "$dir/max.json" publish_rate)"
    half="$(python3 -c "print(round(float('$rate') / 2))")"
    "$new" bench amqp --uri "$uri" "${base[@]}" --rate "$half" >"$dir/half.json" 2>/dev/null || true
    python3 - "$1" "$dir/max.json" "$dir/half.json" "$half" <<'PY'
import json, sys
label, mx, hf, half = sys.argv[1:]
load = lambda p: json.loads([l for l in open(p) if l.startswith("{")][-1])
m, h = load(mx), load(hf)
ms = lambda us: f"{us / 1000:.2f} ms"
lm, lh = m["latency_us"], h["latency_us"]
print(f"{label:<16} max {m['publish_rate']:>9,.0f} msg/s (latency p50 {ms(lm['p50'])} p99 {ms(lm['p99'])})   "
      f"at {int(half):,} msg/s: {h['publish_rate']:,.0f} msg/s, latency p50 {ms(lh['p50'])} p95 {ms(lh['p95'])} p99 {ms(lh['p99'])} max {ms(lh['max'])}")
PY
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
}

for r in 1 2; do
    run "before (run $r)" "$old"
    run "after (run $r)" "$new"
done
