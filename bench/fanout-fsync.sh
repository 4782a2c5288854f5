#!/usr/bin/env bash
# Fanout to N durable queues (default 100), persistent messages, publisher confirms
# (window 1000), one producer, one consumer per queue, 16 B, for SECONDS each: FerryMQ
# before and after (two binaries) and RabbitMQ (Debian's rabbitmq-server, started by hand
# on free ports, as bench/amqp-vs-rabbitmq.sh does), all in one run. The figure is the
# producer's confirmed publish rate (each confirm waits for all N queues' fsyncs).
#   bench/fanout-fsync.sh OLD_BIN [NEW_BIN]
# Environment: QUEUES [100], SECONDS_PER_RUN [20], ROUNDS [1] (before/after alternate that
# many times, to see the noise of a shared machine), SKIP_RABBITMQ [unset], FSYNC [always]
# (FerryMQ's --fsync for both binaries: `never` shows what the same code does with no
# fsync at all, i.e. what is left once fsync costs nothing).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
old="${1:?usage: bench/fanout-fsync.sh OLD_BIN [NEW_BIN]}"
new="${2:-$repo/target/release/ferrymq}"
queues="${QUEUES:-100}"
secs="${SECONDS_PER_RUN:-20}"
fsync="${FSYNC:-always}"
args=(--fanout "$queues" -x 1 -y 1 -s 16 --persistent --confirm 1000 --prefetch 1000 --time "$secs" --json)
echo "# bench/fanout-fsync.sh $*  ($(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
echo "# ferrymq serve --fsync $fsync; ferrymq bench amqp ${args[*]}"

summarize() { # label json
    python3 - "$1" "$2" <<'PY'
import json, sys
label, path = sys.argv[1:]
lines = [l for l in open(path) if l.startswith("{")]
if not lines:
    print(f"{label:<28} failed"); sys.exit()
s = json.loads(lines[-1])
lat = s.get("latency_us", {})
print(f"{label:<28} publish {s['publish_rate']:>9,.0f} msg/s  confirmed {s['confirmed']:>9,}  nacked {s['nacked']}  "
      f"consumed {s['consumed']:>10,} ({s['consume_rate']:,.0f} deliveries/s)  latency p50 {lat.get('p50',0)/1000:.1f} ms p99 {lat.get('p99',0)/1000:.1f} ms")
PY
}

run_ferrymq() { # label bin
    local dir pid port
    dir="$(mktemp -d /tmp/ferrymq-fanout.XXXXXX)"
    "$2" serve --data-dir "$dir/data" --amqp-port 0 --kafka-port 0 --http-port 0 --prometheus-port 0 --fsync "$fsync" >"$dir/out" 2>&1 &
    pid=$!
    for _ in $(seq 100); do grep -q "amqp listening" "$dir/out" && break; sleep 0.1; done
    port="$(sed -n 's/.*amqp listening on [^ ]*:\([0-9]*\).*/\1/p' "$dir/out" | head -1)"
    "$new" bench amqp --uri "amqp://guest:guest@127.0.0.1:$port/%2f" "${args[@]}" >"$dir/json" 2>"$dir/err" || true
    summarize "$1" "$dir/json"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
}

run_rabbitmq() {
    local dir port dist server pid
    dir="$(mktemp -d /tmp/rabbit-fanout.XXXXXX)"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    dist=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p "$dir/mnesia" "$dir/log"
    echo "[]." >"$dir/enabled_plugins"
    server=/usr/lib/rabbitmq/bin/rabbitmq-server
    [[ -x $server ]] || { echo "rabbitmq                     not installed"; return; }
    RABBITMQ_NODENAME="rabbit-fanout-$$@localhost" RABBITMQ_NODE_PORT=$port RABBITMQ_DIST_PORT=$dist \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" RABBITMQ_PID_FILE="$dir/pid" \
        setsid "$server" >"$dir/stdout.log" 2>&1 &
    pid=$!
    for _ in $(seq 240); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.5; done
    sleep 3
    "$new" bench amqp --uri "amqp://guest:guest@127.0.0.1:$port/%2f" "${args[@]}" >"$dir/json" 2>"$dir/err" || true
    summarize "rabbitmq $(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null)" "$dir/json"
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -rf "$dir"
}

for r in $(seq "${ROUNDS:-1}"); do
    run_ferrymq "ferrymq before #$r" "$old"
    run_ferrymq "ferrymq after #$r" "$new"
done
[[ -n ${SKIP_RABBITMQ:-} ]] || run_rabbitmq
