#!/usr/bin/env bash
# KIP-848 rebalance time: a group of 10 members over one 100-partition topic; time from
# the 10th member's subscribe to a stable, complete, balanced assignment (10 partitions
# each, held for 1 s), for group.protocol=consumer (uniform assignor) next to the classic
# protocol with the eager range assignor and with cooperative-sticky, same broker, same
# run (bench/kip848_rebalance.py, confluent-kafka). Client and broker defaults
# (KIP-848 heartbeat interval 5 s; classic heartbeat.interval.ms 3 s).
#
# Usage: bench/kip848-rebalance.sh   (from the repository root)
# Environment: FERRYMQ_BIN [target/release/ferrymq], ROUNDS [3], PY [.venv/bin/python],
# FERRYMQ_KAFKA_CONSUMER_HEARTBEAT_INTERVAL_MS (passed to the broker when set).
# Results: stdout and bench/results/<date>-kip848-rebalance.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
FERRYMQ_BIN=${FERRYMQ_BIN:-target/release/ferrymq}
ROUNDS=${ROUNDS:-3}
PY=${PY:-$REPO/.venv/bin/python}
[[ -x $FERRYMQ_BIN ]] || cargo build --release -p ferrymq
RESULTS=bench/results/$(date +%F)-kip848-rebalance.txt
WORK=$(mktemp -d /var/tmp/ferrymq-kip848.XXXXXX)
PID=""
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
"$FERRYMQ_BIN" serve --data-dir "$WORK/data" --amqp-port 0 --kafka-port 0 --http-port 0 --prometheus-port 0 \
    >"$WORK/stdout.log" 2>&1 &
PID=$!
port=""
for _ in $(seq 300); do
    port=$(sed -n 's/^ferrymq: kafka listening on .*:\([0-9][0-9]*\)$/\1/p' "$WORK/stdout.log" | head -1)
    [[ -n $port ]] && break
    sleep 0.1
done
[[ -n $port ]] || { tail -20 "$WORK/stdout.log" >&2; exit 1; }
{
    echo "# bench/kip848-rebalance.sh $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null)"
    echo "# $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); KIP-848 heartbeat interval ${FERRYMQ_KAFKA_CONSUMER_HEARTBEAT_INTERVAL_MS:-5000} ms"
    "$PY" bench/kip848_rebalance.py "127.0.0.1:$port" "$ROUNDS"
} | tee "$RESULTS"
