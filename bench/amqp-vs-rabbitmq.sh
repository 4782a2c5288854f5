#!/usr/bin/env bash
# Side-by-side AMQP 0-9-1 benchmark: FerryMQ against RabbitMQ, same client, same machine.
#
# Runs four scenarios with `ferrymq bench amqp` against both brokers and prints a table:
#   1. 1 producer, 1 consumer, 16 B transient messages, prefetch 1000, multi-ack
#   2. the same with publisher confirms (window 1000)
#   3. persistent messages (durable queue) with confirms
#   4. declaring (then deleting) 10 000 queues, sequentially, over one channel
#
# Usage: bench/amqp-vs-rabbitmq.sh            (from the repository root, after
#        cargo build --release -p ferrymq)
# Environment:
#   FERRYMQ_BIN      broker binary to test           [target/release/ferrymq]
#   BENCH            bench command (must accept `amqp` options after it)
#                                                    [$FERRYMQ_BIN bench amqp]
#   RABBITMQ_URI     use this RabbitMQ instead of starting one (amqp://guest:guest@host:port/%2f)
#   FERRYMQ_URI      use this FerryMQ instead of starting one
#   SECONDS_PER_RUN  duration of scenarios 1-3      [10]
#   DECLARE_COUNT    queues in scenario 4            [10000]
#   ONLY             run only against "rabbitmq" or "ferrymq"
set -euo pipefail

cd "$(dirname "$0")/.."
FERRYMQ_BIN=${FERRYMQ_BIN:-target/release/ferrymq}
BENCH=${BENCH:-"$FERRYMQ_BIN bench amqp"}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
DECLARE_COUNT=${DECLARE_COUNT:-10000}
ONLY=${ONLY:-}

WORK=$(mktemp -d /tmp/ferrymq-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        # Each server runs in its own process group (setsid): end the whole group.
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() { # host port seconds
    local deadline=$((SECONDS + $3))
    until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
        if ((SECONDS > deadline)); then return 1; fi
        sleep 0.5
    done
}

start_rabbitmq() {
    local port dist dir server
    port=$(free_port)
    dist=$(free_port)
    dir="$WORK/rabbitmq"
    mkdir -p "$dir/mnesia" "$dir/log"
    echo "[]." >"$dir/enabled_plugins"
    # The Debian wrapper /usr/sbin/rabbitmq-server switches to the rabbitmq user; the real
    # script runs as whoever starts it, which keeps the temp dirs ours.
    server=/usr/lib/rabbitmq/bin/rabbitmq-server
    [[ -x $server ]] || server=$(command -v rabbitmq-server)
    if [[ $server == /usr/sbin/* && $(id -u) == 0 ]]; then chown -R rabbitmq "$dir"; fi
    echo "starting RabbitMQ on port $port ..." >&2
    RABBITMQ_NODENAME=rabbit-bench@localhost RABBITMQ_NODE_PORT=$port RABBITMQ_DIST_PORT=$dist \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" RABBITMQ_PID_FILE="$dir/pid" \
        setsid "$server" >"$dir/stdout.log" 2>&1 &
    PIDS+=($!)
    if ! wait_for_port 127.0.0.1 "$port" 120; then
        echo "RabbitMQ did not start; its output:" >&2
        tail -30 "$dir/stdout.log" >&2
        exit 1
    fi
    sleep 2 # the port opens a moment before the node finishes booting
    RABBITMQ_URI="amqp://guest:guest@127.0.0.1:$port/%2f"
}

start_ferrymq() {
    local dir="$WORK/ferrymq" port=""
    mkdir -p "$dir"
    if [[ ! -x $FERRYMQ_BIN ]]; then
        echo "no broker binary at $FERRYMQ_BIN (cargo build --release -p ferrymq)" >&2
        exit 1
    fi
    echo "starting FerryMQ ..." >&2
    setsid "$FERRYMQ_BIN" serve --data-dir "$dir/data" --amqp-port 0 --kafka-port 0 --http-port 0 --prometheus-port 0 \
        >"$dir/stdout.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 300); do
        port=$(sed -n 's/.*amqp listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$dir/stdout.log" | head -1)
        [[ -n $port ]] && break
        sleep 0.1
    done
    if [[ -z $port ]]; then
        echo "FerryMQ did not print 'amqp listening on'; its output:" >&2
        tail -30 "$dir/stdout.log" >&2
        exit 1
    fi
    FERRYMQ_URI="amqp://guest:guest@127.0.0.1:$port/%2f"
}

# json_field FILE KEY.PATH -> value (empty if missing)
json_field() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
try:
    lines = [l for l in open(sys.argv[1]) if l.startswith("{")]
    v = json.loads(lines[-1])
    for k in sys.argv[2].split("."):
        v = v[k]
    print(v)
except Exception:
    print("")
EOF
}

SCENARIOS=(
    "transient|--time $SECONDS_PER_RUN --size 16 --prefetch 1000"
    "confirm|--time $SECONDS_PER_RUN --size 16 --prefetch 1000 --confirm 1000"
    "persistent|--time $SECONDS_PER_RUN --size 16 --prefetch 1000 --confirm 1000 --persistent"
    "declare|--queue-declare $DECLARE_COUNT"
)

run_all() { # name uri
    local name=$1 uri=$2 s key args
    for s in "${SCENARIOS[@]}"; do
        key=${s%%|*}
        args=${s#*|}
        echo "== $name: $key ($args)" >&2
        # shellcheck disable=SC2086
        if ! $BENCH --uri "$uri" --json $args >"$WORK/$name-$key.json" 2>"$WORK/$name-$key.err"; then
            echo "   failed: $(tail -1 "$WORK/$name-$key.err")" >&2
        fi
        grep -E '^(summary|  )' "$WORK/$name-$key.err" | sed 's/^/   /' >&2 || true
        tail -1 "$WORK/$name-$key.err" | grep -q '^queue.declare' && tail -1 "$WORK/$name-$key.err" | sed 's/^/   /' >&2
        sleep 1
    done
}

if [[ $ONLY != ferrymq ]]; then
    if [[ -z ${RABBITMQ_URI:-} ]]; then start_rabbitmq; fi
    run_all rabbitmq "$RABBITMQ_URI"
fi
if [[ $ONLY != rabbitmq ]]; then
    if [[ -z ${FERRYMQ_URI:-} ]]; then start_ferrymq; fi
    run_all ferrymq "$FERRYMQ_URI"
fi

value() { # broker key field
    local f="$WORK/$1-$2.json"
    [[ -s $f ]] && json_field "$f" "$3" || echo ""
}

row() { # label key field unit higher_is_better
    python3 - "$1" "$(value rabbitmq "$2" "$3")" "$(value ferrymq "$2" "$3")" "$4" "$5" <<'EOF'
import sys
label, r, f, unit, higher = sys.argv[1:6]
def num(x):
    try: return float(x)
    except ValueError: return None
r, f = num(r), num(f)
def fmt(x):
    if x is None: return "-"
    return f"{x:,.0f}".replace(",", " ")
ratio = "-"
if r and f and higher != "-":
    ratio = f"{f / r:.2f}x" if higher == "1" else f"{r / f:.2f}x"
print(f"{label:<44} {fmt(r):>12} {fmt(f):>12} {ratio:>8}  {unit}")
EOF
}

echo
printf '%-44s %12s %12s %8s\n' "scenario" "RabbitMQ" "FerryMQ" "ratio"
row "1 transient 16 B, 1p/1c: consumed" transient consume_rate "msg/s while publishing" 1
row "  published" transient publish_rate "msg/s" 1
row "  consumed, including the backlog drain" transient consume_rate_overall "msg/s" 1
row "  p99 latency" transient latency_us.p99 "µs" 0
row "  bench client cpu" transient cpu_percent "% of one core" -
row "2 + confirms (1000): confirmed" confirm confirm_rate "msg/s" 1
row "  consumed" confirm consume_rate "msg/s while publishing" 1
row "  p99 latency" confirm latency_us.p99 "µs" 0
row "  bench client cpu" confirm cpu_percent "% of one core" -
row "3 persistent + confirms: confirmed" persistent confirm_rate "msg/s" 1
row "  consumed" persistent consume_rate "msg/s while publishing" 1
row "  p99 latency" persistent latency_us.p99 "µs" 0
row "4 declare $DECLARE_COUNT queues (sequential)" declare declare_per_sec "queues/s" 1
row "  delete them" declare delete_per_sec "queues/s" 1
echo
echo "ratio = FerryMQ / RabbitMQ for rates, RabbitMQ / FerryMQ for latencies (above 1 = FerryMQ better)."
