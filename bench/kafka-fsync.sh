#!/usr/bin/env bash
# Kafka produce with the fsync pipelined off the partition task (issue 14): one producer,
# 100 B records, acks=all, one partition, brokers alternated ROUNDS times in one run so
# that the machine's noise hits them alike:
#
#   ferrymq       the build under test ($FERRYMQ_BIN), default policy --fsync always
#   ferrymq-old   optional: an older build ($OLD_BIN, e.g. main before the change), same
#   tansu-memory  optional: tansu's in-memory engine ($TANSU_BIN; `cargo install tansu --features dynostore`, the default build has no memory engine; skipped if not installed)
#
# Per run: throughput and produce latency p50/p99 from `ferrymq bench kafka` (the same
# client binary, $FERRYMQ_BIN, for every broker), and the broker's CPU time (utime+stime
# from /proc/<pid>/stat before and after the run, fsync threads included) per record.
# Then one confluent-kafka produce run per broker (bench/kafka_confluent_bench.py).
# The summary gives medians and the ratios against each peer.
#
# Usage: bench/kafka-fsync.sh   (from the repository root)
# Environment: N (6000000 records per run), ROUNDS (3), NPY (1000000, confluent-kafka;
#   0 skips it), OLD_BIN, TANSU_BIN, PY (./.venv/bin/python), OUT (results file,
#   bench/results/<date>-kafka-fsync.txt).
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD
FERRYMQ_BIN=$(realpath "${FERRYMQ_BIN:-target/release/ferrymq}")
OLD_BIN=${OLD_BIN:-}
N=${N:-6000000}
ROUNDS=${ROUNDS:-3}
NPY=${NPY:-1000000}
PY=${PY:-$REPO/.venv/bin/python}
OUT=${OUT:-bench/results/$(date +%F)-kafka-fsync.txt}
TANSU_BIN=${TANSU_BIN:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}
CLK_TCK=$(getconf CLK_TCK)

BROKERS="ferrymq"
[[ -n $OLD_BIN && -x $OLD_BIN ]] && BROKERS="$BROKERS ferrymq-old"
[[ -x $TANSU_BIN ]] && BROKERS="$BROKERS tansu-memory"

WORK=$(mktemp -d /var/tmp/ferrymq-kfsync.XXXXXX)
RAW=$WORK/raw.jsonl
BROKER_PID=""
stop_broker() {
    if [[ -n $BROKER_PID ]]; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=""
    fi
}
trap 'stop_broker; rm -rf "$WORK"' EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_broker() { # name -> BOOT, BROKER_PID
    local name=$1 port="" data="$WORK/$1"
    rm -rf "$data"
    mkdir -p "$data"
    case $name in
    ferrymq | ferrymq-old)
        local bin=$FERRYMQ_BIN
        [[ $name == ferrymq-old ]] && bin=$OLD_BIN
        "$bin" serve --data-dir "$data/data" --amqp-port 0 --kafka-port 0 --http-port 0 --prometheus-port 0 \
            >"$data/stdout.log" 2>&1 &
        BROKER_PID=$!
        for _ in $(seq 300); do
            port=$(sed -n 's/^ferrymq: kafka listening on .*:\([0-9][0-9]*\)$/\1/p' "$data/stdout.log" | head -1)
            [[ -n $port ]] && break
            sleep 0.1
        done
        ;;
    tansu-memory)
        port=$(free_port)
        (cd "$data" && exec "$TANSU_BIN" broker --listener-url "tcp://127.0.0.1:$port" \
            --advertised-listener-url "tcp://127.0.0.1:$port" \
            --storage-engine "memory://tansu/" >"$data/stdout.log" 2>&1) &
        BROKER_PID=$!
        for _ in $(seq 300); do
            (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
            sleep 0.2
        done
        ;;
    esac
    [[ -n $port ]] || { echo "$name did not start" >&2; tail "$data/stdout.log" >&2; exit 1; }
    BOOT="127.0.0.1:$port"
    sleep 1
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run NAME ROUND KIND command...: one measured run, one JSON line appended to $RAW.
run() {
    local name=$1 round=$2 kind=$3 c0 c1 out
    shift 3
    c0=$(cpu_ticks "$BROKER_PID")
    out=$("$@" 2>"$WORK/err.txt" | grep '^{' | tail -1) || true
    c1=$(cpu_ticks "$BROKER_PID")
    [[ -n $out ]] || { echo "$name round $round $kind failed: $(tail -3 "$WORK/err.txt")" >&2; out='{}'; }
    python3 - "$name" "$round" "$kind" "$out" "$((c1 - c0))" "$CLK_TCK" "$(cut -d' ' -f1 /proc/loadavg)" <<'PYEOF' | tee -a "$RAW" >&2
import json, sys
name, rnd, kind, out, ticks, hz, load = sys.argv[1:8]
d = json.loads(out)
n = d.get("records_produced", d.get("produced", 0)) or 0
cpu = int(ticks) / int(hz)
print(json.dumps({
    "broker": name, "round": int(rnd), "kind": kind, "records": n,
    "rps": d.get("produce_records_per_sec", 0),
    "p50": d.get("produce_latency_ms", {}).get("p50"),
    "p99": d.get("produce_latency_ms", {}).get("p99"),
    "broker_cpu_s": cpu, "cpu_ns_per_record": cpu * 1e9 / n if n else None,
    "load": float(load),
}))
PYEOF
}

if ((NPY > 0)); then
    [[ -x $PY ]] || python3 -m venv "$REPO/.venv"
    "$PY" -m pip install -q --disable-pip-version-check -r tests/kafka/requirements.txt
fi

echo "brokers: $BROKERS; $ROUNDS rounds of $N records" >&2
for round in $(seq "$ROUNDS"); do
    for name in $BROKERS; do
        start_broker "$name"
        run "$name" "$round" bench "$FERRYMQ_BIN" bench kafka -b "$BOOT" -t b100 --mode produce \
            -n "$N" -s 100 --acks all -p 1 --json
        stop_broker
    done
done
if ((NPY > 0)); then
    for name in $BROKERS; do
        start_broker "$name"
        "$FERRYMQ_BIN" bench kafka -b "$BOOT" -t py100 --mode produce -n 0 -p 1 >/dev/null 2>&1 || true
        run "$name" 1 confluent "$PY" bench/kafka_confluent_bench.py --bootstrap "$BOOT" \
            --topic py100 --count "$NPY" --size 100 --acks all --mode produce
        stop_broker
    done
fi

mkdir -p "$(dirname "$OUT")"
{
    echo "# Kafka produce, fsync pipelined off the partition task: $(date -u '+%F %H:%M UTC')"
    echo "# machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# ferrymq: $FERRYMQ_BIN ($(git rev-parse --short HEAD))${OLD_BIN:+; ferrymq-old: $OLD_BIN}; tansu: $([[ -x $TANSU_BIN ]] && "$TANSU_BIN" --version 2>/dev/null || echo 'not installed: not measured')"
    echo "# client: ferrymq bench kafka -s 100 --acks all -p 1 -n $N (one producer, 5 requests in flight, 128 KiB batches), $ROUNDS rounds alternating brokers; FerryMQ default policy (--fsync always)"
    echo "# broker CPU = utime+stime of the broker process over the run (fsync threads included)"
    echo
    echo "## raw runs"
    cat "$RAW"
    echo
    python3 - "$RAW" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
brokers = []
for r in rows:
    if r["broker"] not in brokers:
        brokers.append(r["broker"])
def med(b, kind, key):
    v = [r[key] for r in rows if r["broker"] == b and r["kind"] == kind and r.get(key) is not None and r["records"]]
    return statistics.median(v) if v else None
print("## medians (bench: %d runs per broker; confluent-kafka: 1 run)" % max(
    (sum(1 for r in rows if r["broker"] == b and r["kind"] == "bench") for b in brokers), default=0))
print(f"{'broker':<14} {'records/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'CPU ns/record':>14} {'confluent rec/s':>16}")
for b in brokers:
    f = lambda x, fmt: (fmt % x) if x is not None else "-"
    print(f"{b:<14} {f(med(b,'bench','rps'),'%12.0f')} {f(med(b,'bench','p50'),'%8.2f')} {f(med(b,'bench','p99'),'%8.2f')} "
          f"{f(med(b,'bench','cpu_ns_per_record'),'%14.0f')} {f(med(b,'confluent','rps'),'%16.0f')}")
print()
for peer in brokers[1:]:
    t, tp = med("ferrymq", "bench", "rps"), med(peer, "bench", "rps")
    c, cp = med("ferrymq", "bench", "cpu_ns_per_record"), med(peer, "bench", "cpu_ns_per_record")
    y, yp = med("ferrymq", "confluent", "rps"), med(peer, "confluent", "rps")
    parts = []
    if t and tp: parts.append(f"throughput {t/tp:.2f}x")
    if c and cp: parts.append(f"broker CPU per record {c/cp:.2f}x")
    if y and yp: parts.append(f"confluent-kafka throughput {y/yp:.2f}x")
    print(f"ferrymq vs {peer}: " + ", ".join(parts))
PYEOF
} | tee "$OUT"
