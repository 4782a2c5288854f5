#!/usr/bin/env bash
# The memory-alarm flood, side by side: 4 producers publish 1 KiB transient messages as
# fast as they can into one queue with no consumer for SECS seconds; then one consumer
# drains it. Reports peak RSS against the watermark, the publish rate before and after the
# alarm (from the broker's RSS and the bench tool's per-second lines), and the drain rate.
#   bench/memory-flood.sh                     (after cargo build --release -p ferrymq)
# Environment:
#   FERRYMQ_BIN   broker (and bench client) binary       [target/release/ferrymq]
#   SECS          flood duration                        [20]
#   WATERMARKS    FerryMQ runs, one per watermark       ["300MB"] (the default 0.4 of a
#                 large machine lets the flood take gigabytes: run it on a quiet machine)
#   RABBITMQ      "0" skips RabbitMQ; otherwise Debian's rabbitmq-server runs with its
#                 default watermark (0.4) and with 300MB absolute
set -euo pipefail
cd "$(dirname "$0")/.."
FERRYMQ_BIN=${FERRYMQ_BIN:-target/release/ferrymq}
SECS=${SECS:-20}
WATERMARKS=${WATERMARKS:-"300MB"}
PY=${PY:-.venv/bin/python}   # with pika (tests/memory/run.sh installs it)
RABBITMQ=${RABBITMQ:-1}
WORK=$(mktemp -d /tmp/ferrymq-flood.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# sample_rss PID OUT: one "seconds rss_kB" line every 100 ms until the process ends or
# OUT.stop exists.
sample_rss() {
    local pid=$1 out=$2 t0; t0=$(date +%s.%N)
    while [[ ! -e $out.stop ]] && kill -0 "$pid" 2>/dev/null; do
        awk -v t0="$t0" -v now="$(date +%s.%N)" '/^VmRSS/{printf "%.1f %d\n", now-t0, $2}' "/proc/$pid/status" >>"$out" 2>/dev/null || true
        sleep 0.1
    done
}

# flood NAME URI PID: publish, then drain; prints one summary line.
flood() {
    local name=$1 uri=$2 pid=$3 dir="$WORK/$1"
    mkdir -p "$dir"
    sample_rss "$pid" "$dir/rss" &
    local sampler=$!
    "$FERRYMQ_BIN" bench amqp --uri "$uri" -x 4 -y 0 -s 1024 -z "$SECS" -u flood --json \
        >"$dir/pub.json" 2>"$dir/pub.err" || true
    local peak_flood; peak_flood=$(sort -k2 -n "$dir/rss" | tail -1 | cut -d' ' -f2)
    # Drain with pika (the bench tool's consumers stop with their producers).
    "$PY" - "$uri" >"$dir/drain.json" 2>"$dir/drain.err" <<'PY' || true
import json, sys, time
import pika
c = pika.BlockingConnection(pika.URLParameters(sys.argv[1]))
ch = c.channel()
ch.basic_qos(prefetch_count=2000)
n, t0, last = 0, time.monotonic(), time.monotonic()
for m, _p, _b in ch.consume("flood", auto_ack=True, inactivity_timeout=2):
    if m is None:
        break
    n += 1
    last = time.monotonic()
print(json.dumps({"consumed": n, "consume_rate": round(n / max(last - t0, 1e-9))}))
PY
    touch "$dir/rss.stop"; wait "$sampler" 2>/dev/null || true
    python3 - "$name" "$dir" "$peak_flood" <<'PY'
import json, re, sys
name, d, peak = sys.argv[1], sys.argv[2], int(sys.argv[3] or 0)
def last_json(p):
    try:
        return json.loads([l for l in open(p) if l.startswith("{")][-1])
    except Exception:
        return {}
pub, drain = last_json(d + "/pub.json"), last_json(d + "/drain.json")
# Per-second publish rates from the progress lines ("... pub N/s ..." style).
rates = []
for line in open(d + "/pub.err", errors="replace"):
    # "   2.0s  published 41 758/s  consumed 0/s ..."
    m = re.search(r"published ([0-9][0-9 ,]*)/s", line)
    if m and re.match(r"\s*\d", line):
        rates.append(int(re.sub(r"[ ,]", "", m.group(1))))
first = rates[:3]
last = rates[-5:]
print(f"{name:<28} published {pub.get('published', pub.get('sent', '?'))} "
      f"({pub.get('publish_rate', pub.get('send_rate', '?'))} msg/s avg); "
      f"first-3s rates {first}; last-5s rates {last}; peak RSS during flood {peak / 1024:.0f} MB; "
      f"drained {drain.get('consumed', drain.get('received', '?'))} at "
      f"{drain.get('consume_rate', drain.get('receive_rate', '?'))} msg/s")
PY
    echo "  raw: $dir (kept until exit)" >&2
}

start_ferrymq() { # watermark
    local dir="$WORK/ferrymq-$1" port=""
    mkdir -p "$dir"
    setsid "$FERRYMQ_BIN" serve --data-dir "$dir/data" --amqp-port 0 --kafka-port 0 --http-port 0 --prometheus-port 0 \
        --memory-high-watermark "$1" >"$dir/stdout.log" 2>&1 &
    PIDS+=($!)
    FPID=$!
    for _ in $(seq 300); do
        port=$(sed -n 's/.*amqp listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$dir/stdout.log" | head -1)
        [[ -n $port ]] && break
        sleep 0.1
    done
    FURI="amqp://guest:guest@127.0.0.1:$port/%2f"
}

start_rabbitmq() { # extra rabbitmq.conf line
    local port dist dir server
    port=$(free_port); dist=$(free_port)
    dir="$WORK/rabbitmq-$port"
    mkdir -p "$dir/mnesia" "$dir/log"
    echo "[]." >"$dir/enabled_plugins"
    printf '%s\n' "$1" >"$dir/rabbitmq.conf"
    server=/usr/lib/rabbitmq/bin/rabbitmq-server
    [[ -x $server ]] || server=$(command -v rabbitmq-server)
    RABBITMQ_NODENAME=rabbit-flood-$port@localhost RABBITMQ_NODE_PORT=$port RABBITMQ_DIST_PORT=$dist \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" RABBITMQ_PID_FILE="$dir/pid" \
        setsid "$server" >"$dir/stdout.log" 2>&1 &
    PIDS+=($!)
    local deadline=$((SECONDS + 120))
    until [[ -s $dir/pid ]] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        ((SECONDS < deadline)) || { echo "RabbitMQ did not start" >&2; tail -20 "$dir/stdout.log" >&2; return 1; }
        sleep 0.5
    done
    sleep 2
    RPID=$(cat "$dir/pid")
    RURI="amqp://guest:guest@127.0.0.1:$port/%2f"
}

echo "# memory flood: 4 producers x 1 KiB transient, no consumer, ${SECS}s; then 1 consumer drains"
echo "# $(date -u +%FT%TZ) $(nproc) cores, $(awk '/MemTotal/{printf "%.1f GB", $2/1048576}' /proc/meminfo) RAM"
for wm in $WATERMARKS; do
    start_ferrymq "$wm"
    flood "ferrymq watermark=$wm" "$FURI" "$FPID"
    grep -E "memory alarm|memory high watermark" "$WORK/ferrymq-$wm/stdout.log" | head -4 | sed 's/^/    /'
    kill -TERM -- "-$FPID" 2>/dev/null || true
done
if [[ $RABBITMQ != 0 ]]; then
    for conf in "vm_memory_high_watermark.relative = 0.4" "vm_memory_high_watermark.absolute = 300MB"; do
        start_rabbitmq "$conf" || continue
        flood "rabbitmq-3.10 ${conf##* }" "$RURI" "$RPID"
        kill -TERM -- "-${PIDS[-1]}" 2>/dev/null || true
    done
fi
