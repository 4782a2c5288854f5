#!/usr/bin/env bash
# Side-by-side Kafka-protocol benchmark: FerryMQ against tansu (memory and SQLite engines),
# same clients, same machine, one broker at a time.
#
#   1. `ferrymq bench kafka`: 100 B records, acks=all, one partition: produce N, then consume
#   2. confluent-kafka (bench/kafka_confluent_bench.py), the same shape (the issue's
#      reference figures were taken with it)
#   3. 1 KiB records: MB/s produced and consumed, next to fio's sequential write rate of
#      the disk holding the data dirs
#   4. FerryMQ only: consume a 10-million-record backlog, broker RSS sampled (< 300 MB)
#
# For the produce race alone — brokers alternated run by run, medians, broker CPU time per
# record, an older FerryMQ build beside the new one — see bench/kafka-fsync.sh.
#
# Usage: bench/kafka-vs-tansu.sh   (from the repository root; builds the release binary
#        if missing, installs tansu if missing). Results go to stdout and to
#        bench/results/<date>-kafka-vs-tansu.txt.
# Environment:
#   FERRYMQ_BIN   broker + bench binary                [target/release/ferrymq]
#   BENCH         bench command                       [$FERRYMQ_BIN bench kafka]
#   TANSU_BIN     tansu binary                         [tansu on PATH, else ~/.cargo/bin/tansu]
#   N100          records in scenarios 1               [2000000]
#   NPY           records in scenario 2                [1000000]
#   N1K           records in scenario 3                [500000]
#   NBACKLOG      records in scenario 4                [10000000]
#   ONLY          space-separated subset of "tansu-memory tansu-sqlite ferrymq"; the raw
#                 results of each broker are kept in bench/results/<date>-kafka-vs-tansu.raw/,
#                 so runs of different subsets on one day add up to one table
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD
FERRYMQ_BIN=${FERRYMQ_BIN:-target/release/ferrymq}
N100=${N100:-2000000}
NPY=${NPY:-1000000}
N1K=${N1K:-500000}
NBACKLOG=${NBACKLOG:-10000000}
ONLY=${ONLY:-"tansu-memory tansu-sqlite ferrymq"}
PY=${PY:-$REPO/.venv/bin/python}
mkdir -p bench/results
RESULTS=bench/results/$(date +%F)-kafka-vs-tansu.txt
RAW=bench/results/$(date +%F)-kafka-vs-tansu.raw
mkdir -p "$RAW"

WORK=$(mktemp -d /var/tmp/ferrymq-kbench.XXXXXX)
BROKER_PID=""
cleanup() {
    stop_broker
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { echo "$*" | tee -a "$RAW/log.txt" >&2; }

# ---------------------------------------------------------------- tools
if [[ ! -x $FERRYMQ_BIN ]]; then
    cargo build --release -p ferrymq
fi
if [[ -z ${TANSU_BIN:-} ]]; then
    TANSU_BIN=$(command -v tansu || echo "$HOME/.cargo/bin/tansu")
fi
if [[ ! -x $TANSU_BIN && $ONLY == *tansu* ]]; then
    echo "installing tansu (long compile) ..." >&2
    CARGO_TARGET_DIR=${TANSU_TARGET_DIR:-/var/tmp/tansu-target} CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1} \
        nice -n 10 cargo install tansu --features dynostore,libsql
    TANSU_BIN="$HOME/.cargo/bin/tansu"
fi
[[ -x $TANSU_BIN ]] && TANSU_BIN=$(realpath "$TANSU_BIN")
if [[ ! -x $PY ]]; then
    python3 -m venv "$REPO/.venv"
fi
"$PY" -m pip install -q --disable-pip-version-check -r tests/kafka/requirements.txt

BENCH=${BENCH:-"$FERRYMQ_BIN bench kafka"}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() { # port seconds
    local deadline=$((SECONDS + $2))
    until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        if ((SECONDS > deadline)); then return 1; fi
        sleep 0.2
    done
}

stop_broker() {
    if [[ -n $BROKER_PID ]]; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=""
    fi
}

start_broker() { # name -> sets BOOT, BROKER_PID, DATA
    local name=$1 port
    DATA="$WORK/$name"
    mkdir -p "$DATA"
    case $name in
    tansu-memory | tansu-sqlite)
        port=$(free_port)
        local engine="memory://tansu/"
        # tansu reads sqlite://PATH as relative: run it in the data dir.
        [[ $name == tansu-sqlite ]] && engine="sqlite://tansu.db"
        (cd "$DATA" && exec "$TANSU_BIN" broker --listener-url "tcp://127.0.0.1:$port" \
            --advertised-listener-url "tcp://127.0.0.1:$port" \
            --storage-engine "$engine" >"$DATA/stdout.log" 2>&1) &
        BROKER_PID=$!
        if ! wait_for_port "$port" 60; then
            log "$name did not start:"; tail -20 "$DATA/stdout.log" >&2; exit 1
        fi
        BOOT="127.0.0.1:$port"
        ;;
    ferrymq)
        "$FERRYMQ_BIN" serve --data-dir "$DATA/data" --amqp-port 0 --kafka-port 0 --http-port 0 \
            >"$DATA/stdout.log" 2>&1 &
        BROKER_PID=$!
        port=""
        for _ in $(seq 300); do
            port=$(sed -n 's/^ferrymq: kafka listening on .*:\([0-9][0-9]*\)$/\1/p' "$DATA/stdout.log" | head -1)
            [[ -n $port ]] && break
            sleep 0.1
        done
        if [[ -z $port ]]; then
            log "FerryMQ did not print 'ferrymq: kafka listening on':"; tail -20 "$DATA/stdout.log" >&2; exit 1
        fi
        BOOT="127.0.0.1:$port"
        ;;
    esac
    sleep 1
}

rss_mb() { awk '/^VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status" 2>/dev/null || echo 0; }

# sample_rss PID OUTFILE: background sampler, every 0.5 s; kill it to stop.
sample_rss() {
    while kill -0 "$1" 2>/dev/null; do rss_mb "$1" >>"$2"; echo >>"$2"; sleep 0.5; done
}

# json FILE KEY -> value of the last JSON line's KEY ("" if missing)
json() {
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

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

run() { # name key command...: runs, stores stdout in $RAW/name-key.json, broker CPU beside
    local name=$1 key=$2 t0 c0 secs
    shift 2
    log "== $name: $key"
    t0=$(date +%s.%N)
    c0=$(cpu_ticks "$BROKER_PID")
    if ! "$@" >"$RAW/$name-$key.json" 2>"$WORK/$name-$key.err"; then
        log "   failed: $(tail -3 "$WORK/$name-$key.err" | tr '\n' ' ')"
    fi
    secs=$(echo "$(date +%s.%N) - $t0" | bc)
    python3 -c 'import sys; t,s=map(float,sys.argv[1:3]); print("{\"broker_cpu_percent\": %.0f}" % (t/100/s*100))' \
        "$(($(cpu_ticks "$BROKER_PID") - c0))" "$secs" >"$RAW/$name-$key.cpu.json"
    log "   $(tail -1 "$RAW/$name-$key.json") broker cpu: $(json "$RAW/$name-$key.cpu.json" broker_cpu_percent)% of one core over ${secs}s"
}

for name in tansu-memory tansu-sqlite ferrymq; do
    [[ " $ONLY " == *" $name "* ]] || continue
    log "load before $name: $(cut -d' ' -f1-3 /proc/loadavg)"
    start_broker "$name"
    run "$name" p100 $BENCH -b "$BOOT" -t b100 --mode produce -n "$N100" -s 100 --acks all -p 1 --json
    run "$name" c100 $BENCH -b "$BOOT" -t b100 --mode consume -n "$N100" -s 100 --json
    $BENCH -b "$BOOT" -t py100 --mode produce -n 0 -p 1 >/dev/null 2>&1 || true
    run "$name" py100 "$PY" bench/kafka_confluent_bench.py --bootstrap "$BOOT" --topic py100 \
        --count "$NPY" --size 100 --acks all
    run "$name" p1k $BENCH -b "$BOOT" -t b1k --mode produce -n "$N1K" -s 1024 --acks all -p 1 --json
    run "$name" c1k $BENCH -b "$BOOT" -t b1k --mode consume -n "$N1K" -s 1024 --json
    if [[ $name == ferrymq ]]; then
        run "$name" pbig $BENCH -b "$BOOT" -t backlog --mode produce -n "$NBACKLOG" -s 100 --acks all -p 1 --json
        log "   RSS after producing the backlog: $(rss_mb "$BROKER_PID") MB"
        sample_rss "$BROKER_PID" "$WORK/rss.txt" &
        SAMPLER=$!
        run "$name" cbig $BENCH -b "$BOOT" -t backlog --mode consume -n "$NBACKLOG" -s 100 --json
        kill "$SAMPLER" 2>/dev/null || true
        wait "$SAMPLER" 2>/dev/null || true
        PEAK_RSS=$(sort -n "$WORK/rss.txt" | tail -1)
        log "   peak broker RSS while consuming the backlog: ${PEAK_RSS} MB"
        echo "{\"peak_rss_mb\": ${PEAK_RSS:-0}}" >"$RAW/ferrymq-rss.json"
    fi
    stop_broker
    rm -rf "$DATA" # the backlog alone is over 1 GB
done

# fio: sequential write rate of the disk the data dirs were on (fsync at the end).
FIO_MBS=""
if command -v fio >/dev/null; then
    fio --name=seqwrite --directory="$WORK" --rw=write --bs=1M --size=1G --ioengine=psync \
        --end_fsync=1 --output-format=json >"$WORK/fio.json" 2>"$WORK/fio.err" ||
        log "fio failed: $(head -2 "$WORK/fio.err")"
    rm -f "$WORK"/seqwrite.*
    FIO_MBS=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(round(d["jobs"][0]["write"]["bw_bytes"]/1e6))' "$WORK/fio.json" 2>/dev/null || echo "")
    [[ -n $FIO_MBS ]] && echo "{\"fio_mb_per_sec\": $FIO_MBS}" >"$RAW/fio.json"
fi

value() { [[ -s "$RAW/$1-$2.json" ]] && json "$RAW/$1-$2.json" "$3" || echo ""; }

row() { # label key field unit better(1 = higher, 0 = lower, - = no ratio)
    python3 - "$1" "$(value tansu-memory "$2" "$3")" "$(value tansu-sqlite "$2" "$3")" \
        "$(value ferrymq "$2" "$3")" "$4" "${5:-1}" <<'EOF'
import sys
label, m, s, f, unit, better = sys.argv[1:7]
def num(x):
    try: return float(x)
    except ValueError: return None
m, s, f = num(m), num(s), num(f)
def fmt(x):
    if x is None: return "-"
    return f"{x:,.1f}".replace(",", " ") if x < 100 else f"{x:,.0f}".replace(",", " ")
def ratio(a, b):
    if better == "-" or not a or not b:
        return "-"
    r = a / b if better == "1" else b / a
    return f"{r:.2f}x" if r < 100 else f"{r:.0f}x"
print(f"{label:<40} {fmt(m):>12} {fmt(s):>12} {fmt(f):>12} {ratio(f, m):>9} {ratio(f, s):>9}  {unit}")
EOF
}

{
    echo "# FerryMQ vs tansu, Kafka protocol, $(date -u '+%F %H:%M UTC')"
    echo "# machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# ferrymq $(git rev-parse --short HEAD), tansu: $("$TANSU_BIN" --version 2>/dev/null || echo '?'), confluent-kafka $("$PY" -c 'import confluent_kafka as c; print(c.version()[0], "librdkafka", c.libversion()[0])')"
    echo "# FerryMQ: release build, fresh data dir, default fsync policy (always: fsync before ack)"
    cat "$RAW/log.txt"
    echo
    printf '%-40s %12s %12s %12s %9s %9s\n' "scenario" "tansu-mem" "tansu-sqlite" "FerryMQ" "F/mem" "F/sqlite"
    row "1 bench 100 B acks=all produce" p100 produce_records_per_sec "records/s"
    row "  produce p99 latency" p100 produce_latency_ms.p99 "ms" 0
    row "  bench client cpu (produce)" p100 client_cpu_percent "% of one core" -
    row "  broker cpu (produce)" p100.cpu broker_cpu_percent "% of one core (whole run)" -
    row "  consume" c100 consume_records_per_sec "records/s"
    row "  bench client cpu (consume)" c100 client_cpu_percent "% of one core" -
    row "  broker cpu (consume)" c100.cpu broker_cpu_percent "% of one core (whole run)" -
    row "2 confluent-kafka 100 B produce" py100 produce_records_per_sec "records/s"
    row "  consume" py100 consume_records_per_sec "records/s"
    row "3 bench 1 KiB produce" p1k produce_mb_per_sec "MB/s"
    row "  consume" c1k consume_mb_per_sec "MB/s"
    echo "  fio sequential write (1 MiB blocks, fsync at end): $(json "$RAW/fio.json" fio_mb_per_sec) MB/s"
    row "4 FerryMQ backlog of $NBACKLOG: produce" pbig produce_records_per_sec "records/s"
    row "  consume" cbig consume_records_per_sec "records/s"
    echo "  peak broker RSS while consuming: $(json "$RAW/ferrymq-rss.json" peak_rss_mb) MB (limit 300 MB)"
    echo
    echo "F/mem, F/sqlite: FerryMQ / tansu for rates, tansu / FerryMQ for latencies (above 1 = FerryMQ better)."
} | tee "$RESULTS"
