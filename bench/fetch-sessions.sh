#!/usr/bin/env bash
# Fetch sessions (KIP-227, issue 12): one consumer assigned PARTS (1000) partitions of one
# topic, with and without incremental fetch sessions, on one FerryMQ broker in one run.
# Per mode (bench/fetch_sessions.py): Fetch request/response bytes per second as the
# broker counted them (ferrymq_kafka_request_bytes_total / response_bytes_total
# {api="Fetch"}, read from its Prometheus endpoint before and after each window), Fetch
# requests per second and request bytes per Fetch, and the broker's CPU seconds per
# second, idle and under light produce (RATE records/s of 100 B spread over the
# partitions), WINDOW s each.
#
#   kp-sessions     kafka-python with incremental fetch sessions (its default)
#   kp-sessionless  kafka-python with enable_incremental_fetch_sessions=False (the peer)
#   rdkafka         confluent-kafka / librdkafka (it implements no fetch sessions)
#
# Modes alternate ROUNDS times so the machine's noise hits them alike.
# Usage: bench/fetch-sessions.sh   (from the repository root)
# Environment: PARTS (1000), WINDOW (10), RATE (200), ROUNDS (2), PY (./.venv/bin/python),
#   OUT (bench/results/<date>-fetch-sessions.txt).
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD
FERRYMQ_BIN=$(realpath "${FERRYMQ_BIN:-target/release/ferrymq}")
PARTS=${PARTS:-1000}
WINDOW=${WINDOW:-10}
RATE=${RATE:-200}
ROUNDS=${ROUNDS:-2}
PY=${PY:-$REPO/.venv/bin/python}
OUT=${OUT:-bench/results/$(date +%F)-fetch-sessions.txt}

WORK=$(mktemp -d /var/tmp/ferrymq-fsess.XXXXXX)
BROKER_PID=""
cleanup() {
    [[ -n $BROKER_PID ]] && kill "$BROKER_PID" 2>/dev/null && wait "$BROKER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

"$FERRYMQ_BIN" serve --data-dir "$WORK/data" --amqp-port 0 --kafka-port 0 --http-port 0 \
    --prometheus-port 0 >"$WORK/log" 2>&1 &
BROKER_PID=$!
for _ in $(seq 100); do
    grep -q "kafka listening on" "$WORK/log" && grep -q "prometheus listening on" "$WORK/log" && break
    sleep 0.1
done
PORT=$(sed -n 's/.*kafka listening on .*:\([0-9]*\).*/\1/p' "$WORK/log" | head -1)
BOOT=127.0.0.1:$PORT
PROM=$(sed -n 's/.*prometheus listening on .*:\([0-9]*\).*/\1/p' "$WORK/log" | head -1)
METRICS_URL=http://127.0.0.1:$PROM/metrics
TOPIC=fetch-sessions
"$PY" - <<PY
from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({"bootstrap.servers": "$BOOT"})
a.create_topics([NewTopic("$TOPIC", $PARTS, 1)])["$TOPIC"].result(30)
PY

RAW=$WORK/raw.jsonl
for round in $(seq "$ROUNDS"); do
    for mode in kp-sessions kp-sessionless rdkafka; do
        echo "round $round: $mode" >&2
        "$PY" bench/fetch_sessions.py "$mode" "$BOOT" "$TOPIC" "$PARTS" "$BROKER_PID" "$WINDOW" "$RATE" "$METRICS_URL" >>"$RAW"
    done
done
METRICS=$("$PY" -c "
import urllib.request
t = urllib.request.urlopen('$METRICS_URL').read().decode()
print('\n'.join(l for l in t.splitlines() if l.startswith(('ferrymq_kafka_fetch', 'ferrymq_kafka_request_bytes', 'ferrymq_kafka_response_bytes'))))
")

{
    echo "# bench/fetch-sessions.sh, $(date -u +%FT%TZ), $(nproc) CPUs, $(uname -r)"
    echo "# one consumer, $PARTS partitions, windows of ${WINDOW}s idle and under $RATE records/s (100 B)"
    echo "# Fetch max wait 500 ms in every client; bytes/s of Fetch requests read and responses"
    echo "# written, counted by the broker (size prefixes included); broker CPU = utime+stime per second."
    echo "# clients: kafka-python $("$PY" -c 'import kafka; print(kafka.__version__)'), confluent-kafka $("$PY" -c 'import confluent_kafka as c; print(c.version()[0], "librdkafka", c.libversion()[0])')"
    echo
    "$PY" - "$RAW" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
modes = ["kp-sessions", "kp-sessionless", "rdkafka"]
keys = ["idle_req_Bps", "idle_resp_Bps", "idle_fetches_per_s", "idle_req_B_per_fetch",
        "idle_broker_cpu_s_per_s", "produce_req_Bps", "produce_resp_Bps",
        "produce_fetches_per_s", "produce_req_B_per_fetch", "produce_broker_cpu_s_per_s",
        "produce_records"]
print(f"{'mode':16}" + "".join(f"{k:>28}" for k in keys))
med = {}
for m in modes:
    rs = [r for r in rows if r["mode"] == m]
    med[m] = {k: statistics.median(r[k] for r in rs) for k in keys}
    print(f"{m:16}" + "".join(f"{med[m][k]:>28.8g}" for k in keys))
print()
print("medians over rounds; ratios sessionless / sessions:")
for k in keys[:-1]:
    a, b = med["kp-sessions"][k], med["kp-sessionless"][k]
    print(f"  {k:28} {b / a if a else float('inf'):8.1f}x")
print()
print("raw:")
for r in rows:
    print(" ", json.dumps(r))
PY
    echo
    echo "broker counters after the run:"
    echo "$METRICS"
} | tee "$OUT"
