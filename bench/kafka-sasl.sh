#!/usr/bin/env bash
# Kafka produce: plaintext against SASL_SSL with SCRAM-SHA-256, same FerryMQ broker.
#
# `ferrymq bench kafka --mode produce`, 100-byte records, acks=all, one producer, one
# partition, a fresh topic per run, alternating:
#   plaintext   the plaintext Kafka port, no SASL (the loopback guest)
#   sasl_ssl    the TLS port (--kafka-tls-port), SaslHandshake v1 + SaslAuthenticate
#               SCRAM-SHA-256 as user `kbench` (created by --load-definitions from a clear
#               `password`, permissions .* in vhost /), server verified with the test CA
# RUNS of each; medians, ratio sasl_ssl / plaintext, broker CPU per record.
#
# Needs a broker with Kafka SSL/SASL (branch kafkasec until it is merged into main).
#
# Usage: bench/kafka-sasl.sh   (from the repository root, after cargo build --release -p ferrymq)
# Environment:
#   FERRYMQ_BIN      broker + bench binary                         [target/release/ferrymq]
#   FERRYMQ_COMMIT   what it was built from, for the results file   [HEAD]
#   BENCH            bench command                                 [$FERRYMQ_BIN bench kafka]
#   COUNT            records per run                               [3000000]
#   RUNS             runs per configuration                        [3]
#   FSYNC            broker --fsync policy                         [always, the default]
#                    (another policy writes <date>-kafka-sasl-fsync-<policy>.txt: with
#                    `never` the disk is out of the way and the CPU cost of TLS shows)
set -euo pipefail

cd "$(dirname "$0")/.."
source bench/lib-sec.sh
FERRYMQ_BIN=${FERRYMQ_BIN:-target/release/ferrymq}
FERRYMQ_COMMIT=${FERRYMQ_COMMIT:-$(head_commit)}
BENCH=${BENCH:-"$FERRYMQ_BIN bench kafka"}
COUNT=${COUNT:-3000000}
RUNS=${RUNS:-3}
FSYNC=${FSYNC:-always}

if [[ $FSYNC == always ]]; then sec_init kafka-sasl; else sec_init "kafka-sasl-fsync-$FSYNC"; fi
RAW=${RESULTS%.txt}.raw
rm -rf "$RAW"
mkdir -p "$RAW"

make_certs "$WORK/certs"
# guest is listed too: as RabbitMQ, a broker booted with --load-definitions does not create
# the default user.
cat >"$WORK/definitions.json" <<'EOF'
{
  "users": [{"name": "guest", "password": "guest", "tags": ["administrator"]},
            {"name": "kbench", "password": "kbench-pass", "tags": ""}],
  "vhosts": [{"name": "/"}],
  "permissions": [{"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
                  {"user": "kbench", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]
}
EOF
start_ferrymq ferrymq "$FERRYMQ_BIN" --fsync "$FSYNC" --load-definitions "$WORK/definitions.json" \
    --tls-cert-file "$WORK/certs/server.pem" --tls-key-file "$WORK/certs/server.key" "${TLS_PORTS_ZERO[@]}"
if [[ -z $FERRYMQ_KAFKA_TLS ]]; then
    echo "FerryMQ did not print 'kafka-tls listening on': this binary has no Kafka TLS listener" >&2
    echo "(build one with branch kafkasec merged, see the header of this script)" >&2
    exit 1
fi
log "FerryMQ $FERRYMQ_BIN (commit $FERRYMQ_COMMIT): kafka $FERRYMQ_KAFKA, kafka-tls $FERRYMQ_KAFKA_TLS, pid $FERRYMQ_PID, --fsync $FSYNC"
KAFKA_TLS=$(tls_summary "$FERRYMQ_KAFKA_TLS")
log "negotiated with openssl s_client: $KAFKA_TLS"

args_of() {
    case $1 in
    plaintext) echo "-b 127.0.0.1:$FERRYMQ_KAFKA" ;;
    sasl_ssl) echo "-b localhost:$FERRYMQ_KAFKA_TLS --security-protocol sasl_ssl --sasl-mechanism SCRAM-SHA-256 --sasl-username kbench --sasl-password kbench-pass --tls-ca-file $WORK/certs/ca.pem" ;;
    esac
}

log "$(machine_line)"
for run in $(seq "$RUNS"); do
    for cfg in plaintext sasl_ssl; do
        out="$RAW/$cfg-$run.json"
        # shellcheck disable=SC2046
        timed_run "$out" "$FERRYMQ_PID" $BENCH $(args_of "$cfg") -t "bench-$cfg-$run" --mode produce \
            -n "$COUNT" -s 100 --acks all -p 1 -x 1 --json
        log "$cfg run $run: $(fmt "$(json "$out" produce_records_per_sec)") records/s, p99 $(json "$out" produce_latency_ms.p99) ms, broker cpu $(json "$out" broker_cpu_percent)% = $(json "$out" broker_cpu_us_per_msg) µs/record, client cpu $(json "$out" client_cpu_percent)%, $(grep -o 'kafka bench: [^)]*)' "$out.err" | head -1), load $(cut -d' ' -f1 /proc/loadavg)"
        sleep 1
    done
done

{
    echo "# Kafka produce, plaintext vs SASL_SSL SCRAM-SHA-256, $(date '+%F %H:%M %Z')"
    echo
    echo "FerryMQ: $FERRYMQ_BIN, commit $FERRYMQ_COMMIT, fresh data dir, --fsync $FSYNC"
    echo "TLS (openssl s_client against the Kafka TLS port): $KAFKA_TLS; RSA 2048 certificate, client verifies it"
    echo "$(machine_line) (at the end)"
    echo "workload: ferrymq bench kafka --mode produce, $COUNT x 100 B, acks=all, 1 producer, 1 partition,"
    echo "          fresh topic per run; plaintext and sasl_ssl alternate; $RUNS runs each; median"
    echo
    printf '%-36s %14s %14s %10s\n' "" "plaintext" "SASL_SSL" "ratio"
    row() { # label key
        local p s
        p=$(median_of "$2" "$RAW/plaintext-"*.json)
        s=$(median_of "$2" "$RAW/sasl_ssl-"*.json)
        printf '%-36s %14s %14s %10s\n' "$1" "$(fmt "$p")" "$(fmt "$s")" "$(ratio "$s" "$p")"
    }
    row "produced (records/s)" produce_records_per_sec
    for cfg in plaintext sasl_ssl; do
        printf '%-36s %s\n' "  runs, $cfg" "$(values_of produce_records_per_sec "$RAW/$cfg-"*.json | sed 's/ / \/ /g')"
    done
    python3 - "$RAW" <<'EOF'
import glob, json, statistics, sys
raw = sys.argv[1]
def med(cfg, key):
    vals = []
    for f in sorted(glob.glob(f"{raw}/{cfg}-*.json")):
        try:
            d = json.loads([l for l in open(f) if l.startswith("{")][-1])
            for k in key.split("."):
                d = d[k]
            vals.append(float(d))
        except Exception:
            pass
    return statistics.median(vals) if vals else None
for label, key in [("produce latency p50 (ms)", "produce_latency_ms.p50"),
                   ("produce latency p99 (ms)", "produce_latency_ms.p99"),
                   ("broker CPU per record (µs)", "broker_cpu_us_per_msg"),
                   ("broker cpu (% of one core)", "broker_cpu_percent"),
                   ("bench client cpu (% of one core)", "client_cpu_percent")]:
    p, s = med("plaintext", key), med("sasl_ssl", key)
    f = lambda x: "-" if x is None else f"{x:.2f}"
    r = "-" if not p or not s else f"{s / p:.2f}x"
    print(f"{label:<36} {f(p):>14} {f(s):>14} {r:>10}")
EOF
    echo
    echo "runs (in order):"
    sed 's/^/  /' "$WORK/log.txt"
} | tee "$RESULTS"
echo "results: $RESULTS (raw JSON: $RAW/)" >&2
