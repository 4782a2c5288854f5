#!/usr/bin/env bash
# The management plane with 10 000 queues, FerryMQ and RabbitMQ side by side (same
# machine, same run, same client): declares the queues over AMQP (pika), waits for
# statistics to settle, then times a paged /api/queues page (page_size 500), a filtered
# and sorted page, the full /api/queues list, /metrics/per-object and /metrics on the
# Prometheus port, and /api/overview (best and median of 5), and records resident memory
# before and after (per queue). Queues are transient (declaring 10 000 durable ones
# measures the disk's fsync, not the management plane).
#
# Usage: bench/mgmt-10k-queues.sh [OUTPUT]  (from the repository root, after
#        cargo build --release -p ferrymq; RabbitMQ from Debian's rabbitmq-server package
#        with its management and prometheus plugins)
# Environment: FERRYMQ_BIN [target/release/ferrymq], QUEUES [10000], ONLY (rabbitmq|ferrymq),
#              PYTHON [.venv/bin/python, with pika and requests].
set -euo pipefail

cd "$(dirname "$0")/.."
FERRYMQ_BIN=${FERRYMQ_BIN:-target/release/ferrymq}
QUEUES=${QUEUES:-10000}
ONLY=${ONLY:-}
OUT=${1:-}
PYTHON=${PYTHON:-.venv/bin/python}
if [[ ! -x $PYTHON ]]; then
    python3 -m venv .venv
    PYTHON=.venv/bin/python
fi
"$PYTHON" -m pip install -q --disable-pip-version-check pika==1.3.2 requests==2.32.3

WORK=$(mktemp -d /tmp/ferrymq-mgmt-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_http() { # url seconds
    local deadline=$((SECONDS + $2))
    until curl -s -o /dev/null -u guest:guest "$1"; do
        if ((SECONDS > deadline)); then return 1; fi
        sleep 0.5
    done
}

run_rabbitmq() {
    local amqp dist http prom dir server pid
    amqp=$(free_port); dist=$(free_port); http=$(free_port); prom=$(free_port)
    dir="$WORK/rabbitmq"
    mkdir -p "$dir/mnesia" "$dir/log"
    echo "[rabbitmq_management,rabbitmq_prometheus]." >"$dir/enabled_plugins"
    printf 'management.tcp.port = %s\nprometheus.tcp.port = %s\nloopback_users = none\n' \
        "$http" "$prom" >"$dir/rabbitmq.conf"
    server=/usr/lib/rabbitmq/bin/rabbitmq-server
    [[ -x $server ]] || server=$(command -v rabbitmq-server)
    echo "starting RabbitMQ (amqp $amqp, http $http, prometheus $prom) ..." >&2
    RABBITMQ_NODENAME=rabbit-mgmt-bench@localhost RABBITMQ_NODE_PORT=$amqp \
        RABBITMQ_DIST_PORT=$dist RABBITMQ_MNESIA_BASE="$dir/mnesia" \
        RABBITMQ_LOG_BASE="$dir/log" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" RABBITMQ_PID_FILE="$dir/pid" \
        setsid "$server" >"$dir/stdout.log" 2>&1 &
    PIDS+=($!)
    if ! wait_for_http "http://127.0.0.1:$http/api/overview" 180; then
        echo "RabbitMQ did not start; its output:" >&2
        tail -30 "$dir/stdout.log" >&2
        exit 1
    fi
    pid=$(cat "$dir/pid")
    "$PYTHON" bench/mgmt_10k.py --amqp "amqp://guest:guest@127.0.0.1:$amqp/%2f" \
        --http "http://127.0.0.1:$http" --prometheus "http://127.0.0.1:$prom" \
        --pid "$pid" --queues "$QUEUES" >"$WORK/rabbitmq.json"
    rabbitmqctl -n rabbit-mgmt-bench@localhost eval \
        'io:format("~p~n", [erlang:memory(total)]).' 2>/dev/null | head -1 \
        >"$WORK/rabbitmq.erlang-memory" || true
    kill -TERM -- "-${PIDS[-1]}" 2>/dev/null || true
}

run_ferrymq() {
    local dir="$WORK/ferrymq" http="" prom="" amqp=""
    mkdir -p "$dir"
    echo "starting FerryMQ ..." >&2
    setsid "$FERRYMQ_BIN" serve --data-dir "$dir/data" --amqp-port 0 --kafka-port 0 \
        --http-port 0 --prometheus-port 0 >"$dir/stdout.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 300); do
        prom=$(sed -n 's/.*prometheus listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$dir/stdout.log" | head -1)
        [[ -n $prom ]] && break
        sleep 0.1
    done
    amqp=$(sed -n 's/.*amqp listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$dir/stdout.log" | head -1)
    http=$(sed -n 's/.*http listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$dir/stdout.log" | head -1)
    if [[ -z $prom || -z $http ]]; then
        echo "FerryMQ did not report its listeners; its output:" >&2
        tail -30 "$dir/stdout.log" >&2
        exit 1
    fi
    "$PYTHON" bench/mgmt_10k.py --amqp "amqp://guest:guest@127.0.0.1:$amqp/%2f" \
        --http "http://127.0.0.1:$http" --prometheus "http://127.0.0.1:$prom" \
        --pid "${PIDS[-1]}" --queues "$QUEUES" >"$WORK/ferrymq.json"
    kill -TERM -- "-${PIDS[-1]}" 2>/dev/null || true
}

[[ $ONLY == rabbitmq ]] || run_ferrymq
[[ $ONLY == ferrymq ]] || run_rabbitmq

report() {
    "$PYTHON" - "$WORK" "$QUEUES" <<'PY'
import json, os, sys
work, n = sys.argv[1], int(sys.argv[2])
res = {}
for name in ("ferrymq", "rabbitmq"):
    p = os.path.join(work, name + ".json")
    if os.path.exists(p):
        res[name] = json.load(open(p))
names = list(res)
rows = [("paged_500", "/api/queues?page=1&page_size=500"),
        ("paged_500_filtered_sorted", "/api/queues/%2F?page=2&page_size=500&name=perf.0&sort=messages"),
        ("full_list", f"/api/queues (all {n})"),
        ("per_object", "/metrics/per-object (Prometheus port)"),
        ("aggregated", "/metrics (Prometheus port)"),
        ("overview", "/api/overview")]
print(f"{n} queues in vhost /, declared over AMQP with pika; times best / median of 5 (ms), body size")
print()
print(f"{'request':<64}" + "".join(f"{x:>30}" for x in names))
for key, label in rows:
    cells = []
    for x in names:
        r = res[x][key]
        cells.append(f"{r['best_ms']:>8} / {r['median_ms']:<8} {r['bytes']/1024:>8.0f} KiB")
    print(f"{label:<64}" + "".join(f"{c:>30}" for c in cells))
print()
print(f"{'memory':<64}" + "".join(f"{x:>30}" for x in names))
for key, label in [("rss_before", "RSS before declaring (MiB)"),
                   ("rss_declared", f"RSS right after declaring {n} (MiB)"),
                   ("rss_after", "RSS after statistics settled and the requests (MiB)")]:
    print(f"{label:<64}" + "".join(f"{res[x][key]/2**20:>30.1f}" for x in names))
print(f"{'RSS per queue once declared and sampled (settled - before, B)':<64}" + "".join(
    f"{(res[x]['rss_settled'] - res[x]['rss_before'])/n:>30.0f}" for x in names))
print(f"{'RSS per queue after the requests (after - before, B)':<64}" + "".join(
    f"{(res[x]['rss_after'] - res[x]['rss_before'])/n:>30.0f}" for x in names))
print(f"{'declaring (s)':<64}" + "".join(f"{res[x]['declare_s']:>30}" for x in names))
PY
}

report | tee "$WORK/report.txt"
if [[ -n $OUT ]]; then
    cp "$WORK/report.txt" "$OUT"
    for x in ferrymq rabbitmq; do
        [[ -f $WORK/$x.json ]] && { echo; echo "$x raw: $(cat "$WORK/$x.json")"; } >>"$OUT"
    done
    if [[ -s $WORK/rabbitmq.erlang-memory ]]; then
        echo "rabbitmq erlang:memory(total) after: $(cat "$WORK/rabbitmq.erlang-memory")" >>"$OUT"
    fi
fi
exit 0
