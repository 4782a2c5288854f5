#!/usr/bin/env bash
# Delayed messages (the issue's figure): COUNT persistent messages published with
# confirms to an x-delayed-message exchange, x-delay uniform in [1, SPREAD_MS] ms, consumed
# from the bound queue by `ferrymq bench amqp --delay-spread`. Prints the publish rate, the
# lateness of delivery (arrival minus due time), the broker's peak RSS while messages are
# pending (sampled from /proc every second) and that RSS over the idle broker's per
# pending message.
#   bench/delayed.sh [COUNT] [SPREAD_MS]        (cargo build --release -p ferrymq first)
# Environment: FERRYMQ_BIN [target/release/ferrymq], PRODUCERS [1], CONFIRM [1000],
# SIZE [16], FSYNC [always].
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${FERRYMQ_BIN:-$repo/target/release/ferrymq}"
count="${1:-1000000}"
spread="${2:-60000}"
producers="${PRODUCERS:-1}"
confirm="${CONFIRM:-1000}"
size="${SIZE:-16}"
fsync="${FSYNC:-always}"
dir="$(mktemp -d /tmp/ferrymq-delayed.XXXXXX)"
pid="" sampler=""
cleanup() {
    [[ -n $sampler ]] && kill "$sampler" 2>/dev/null || true
    [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
if [[ ! -x $bin ]]; then
    echo "no broker binary at $bin (cargo build --release -p ferrymq)" >&2
    exit 1
fi

"$bin" serve --data-dir "$dir/data" --amqp-port 0 --kafka-port 0 --http-port 0 --prometheus-port 0 \
    --fsync "$fsync" >"$dir/out" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "amqp listening" "$dir/out" && break; sleep 0.1; done
port="$(sed -n 's/.*amqp listening on [^ ]*:\([0-9]*\).*/\1/p' "$dir/out" | head -1)"
if [[ -z $port ]]; then
    echo "the broker did not start:" >&2
    cat "$dir/out" >&2
    exit 1
fi
uri="amqp://guest:guest@127.0.0.1:$port/%2f"
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$pid/status"; }
# utime + stime of the broker in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }

sleep 1
idle_kb="$(rss_kb)"
(
    while kill -0 "$pid" 2>/dev/null; do
        echo "$(date +%s.%N) $(rss_kb)"
        sleep 1
    done
) >"$dir/rss" &
sampler=$!

echo "ferrymq $("$bin" --version 2>/dev/null | awk '{print $NF}') on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); --fsync $fsync; idle broker RSS $((idle_kb / 1024)) MiB"
cpu0="$(cpu_ticks)"
t0="$(date +%s.%N)"
# Progress and the human summary go to stderr (shown and kept), the JSON summary to stdout.
"$bin" bench amqp --uri "$uri" -x "$producers" -y 1 -s "$size" --persistent \
    --confirm "$confirm" -C "$((count / producers))" --delay-spread "$((spread - 1))" \
    --delay-min 1 --json 2> >(tee "$dir/progress" >&2) >"$dir/summary.json"
t1="$(date +%s.%N)"
cpu1="$(cpu_ticks)"
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
sampler=""
final_kb="$(rss_kb)"

python3 - "$dir" "$idle_kb" "$final_kb" "$cpu0" "$cpu1" "$t0" "$t1" "$(getconf CLK_TCK)" <<'EOF'
import json, re, sys
d, idle_kb, final_kb, cpu0, cpu1, t0, t1, hz = sys.argv[1:]
idle_kb, final_kb = int(idle_kb), int(final_kb)
s = json.load(open(f"{d}/summary.json"))
rss = [int(l.split()[1]) for l in open(f"{d}/rss") if len(l.split()) == 2]
pending = [int(m.group(1).replace(" ", "")) for m in
           re.finditer(r"pending ([\d ]+?)  ", open(f"{d}/progress").read())]
peak_kb, max_pending = max(rss), max(pending, default=0)
late = s["lateness_us"]
ms = lambda us: f"{us / 1000:.1f} ms"
cpu = (float(cpu1) - float(cpu0)) / float(hz) / (float(t1) - float(t0)) * 100
print("== results")
print(f"published          {s['published']:,} msgs in {s['producing_secs']:.1f} s = {s['publish_rate']:,.0f} msg/s (confirmed {s['confirmed']:,})")
print(f"consumed           {s['consumed']:,} msgs")
print(f"lateness           p50 {ms(late['p50'])}  p95 {ms(late['p95'])}  p99 {ms(late['p99'])}  max {ms(late['max'])}")
print(f"broker RSS         idle {idle_kb / 1024:.1f} MiB, peak {peak_kb / 1024:.1f} MiB while up to {max_pending:,} msgs were pending, {final_kb / 1024:.1f} MiB at the end")
if max_pending:
    print(f"RSS per pending    {(peak_kb - idle_kb) * 1024 / max_pending:.0f} bytes/msg ((peak - idle) / max pending)")
print(f"broker CPU         {cpu:.0f}% of one core on average over the run ({float(t1) - float(t0):.0f} s)")
print(f"bench client CPU   {s['cpu_percent']:.0f}% of one core while publishing")
EOF
