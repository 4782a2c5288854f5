#!/usr/bin/env bash
# Kafka transactions: transactional produce (100 records per transaction) against
# idempotent produce on the same FerryMQ, same run, and EndTxn latency
# (bench/kafka_txn_bench.py, confluent-kafka). Default fsync policy (always).
#
# Usage: bench/kafka-txn.sh   (from the repository root)
# Environment: FERRYMQ_BIN [target/release/ferrymq], N records per mode and round
# [200000], ROUNDS [3], PRODUCERS [1: N producers per mode at once, each its own
# process, partition and (transactional) id; the records are split between them], PY [.venv/bin/python], RESULTS [bench/results/<date>-kafka-txn.txt].
# Results: stdout and bench/results/<date>-kafka-txn.txt (-2, -3, ... if taken).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
FERRYMQ_BIN=${FERRYMQ_BIN:-target/release/ferrymq}
N=${N:-200000}
ROUNDS=${ROUNDS:-3}
PY=${PY:-$REPO/.venv/bin/python}
[[ -x $FERRYMQ_BIN ]] || cargo build --release -p ferrymq
if [[ -z ${RESULTS:-} ]]; then
    # Never overwrite an earlier run's file: <date>-kafka-txn.txt, then -2, -3, ...
    RESULTS=bench/results/$(date +%F)-kafka-txn.txt
    n=2
    while [[ -e $RESULTS ]]; do RESULTS=bench/results/$(date +%F)-kafka-txn-$n.txt; n=$((n + 1)); done
fi
WORK=$(mktemp -d /var/tmp/ferrymq-txnbench.XXXXXX)
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
    echo "# bench/kafka-txn.sh $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null)"
    echo "# $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); FerryMQ --fsync always (default)"
    PRODUCERS=${PRODUCERS:-1} "$PY" bench/kafka_txn_bench.py "127.0.0.1:$port" "$N" "$ROUNDS"
} | tee "$RESULTS"
