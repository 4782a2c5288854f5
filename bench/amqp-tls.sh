#!/usr/bin/env bash
# AMQPS throughput: FerryMQ plaintext, FerryMQ over TLS, RabbitMQ over TLS (same certificate).
#
# One producer, one consumer, transient messages, no confirms, prefetch 1000, multi-ack
# (scenario 1 of amqp-vs-rabbitmq.sh), 16 B and 1 KiB bodies. The three configurations run
# alternately (plain, TLS, RabbitMQ TLS, plain, ...) RUNS times each per size, so that a
# burst of load from other work on the machine hits all of them alike; the table has the
# median of each and the ratios FerryMQ AMQPS / FerryMQ plaintext and FerryMQ AMQPS /
# RabbitMQ AMQPS. Certificates: a throwaway CA and server certificate made with openssl
# (RSA 2048, SAN localhost + 127.0.0.1); the client verifies the server against that CA.
#
# Usage: bench/amqp-tls.sh   (from the repository root, after cargo build --release -p ferrymq)
# Environment:
#   FERRYMQ_BIN      broker and bench binary                     [target/release/ferrymq]
#   BENCH            bench command (amqp options after it)       [$FERRYMQ_BIN bench amqp]
#   FERRYMQ_COMMIT   commit the binary was built from, for the results file [HEAD]
#   SECONDS_PER_RUN  seconds of publishing per run               [10]
#   RUNS             runs per configuration and size             [3]
#   SIZES            body sizes                                  ["16 1024"]
#   CONFIRMS         publisher-confirm windows to run, 0 = none  ["0 1000"]
#                    (without confirms the producer outruns a slow broker, whose figure then
#                    is that of an overloaded broker: RabbitMQ over TLS is; with a window of
#                    1000 every broker runs at its own pace)
#   RABBIT_PLAIN     1 = also measure RabbitMQ plaintext (context) [0]
# Output: a table on stdout and in bench/results/<date>-amqp-tls.txt (raw JSON of every run
# beside it in bench/results/<date>-amqp-tls.raw/).
set -euo pipefail

cd "$(dirname "$0")/.."
source bench/lib-sec.sh
FERRYMQ_BIN=${FERRYMQ_BIN:-target/release/ferrymq}
BENCH=${BENCH:-"$FERRYMQ_BIN bench amqp"}
FERRYMQ_COMMIT=${FERRYMQ_COMMIT:-$(head_commit)}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
RUNS=${RUNS:-3}
SIZES=${SIZES:-"16 1024"}
CONFIRMS=${CONFIRMS:-"0 1000"}
RABBIT_PLAIN=${RABBIT_PLAIN:-0}

sec_init amqp-tls
RAW=${RESULTS%.txt}.raw
rm -rf "$RAW"
mkdir -p "$RAW"

make_certs "$WORK/certs"
CA="$WORK/certs/ca.pem"

start_ferrymq ferrymq "$FERRYMQ_BIN" --tls-cert-file "$WORK/certs/server.pem" \
    --tls-key-file "$WORK/certs/server.key" "${TLS_PORTS_ZERO[@]}"
if [[ -z $FERRYMQ_AMQPS ]]; then
    echo "FerryMQ did not print 'amqps listening on' (no AMQPS listener in this binary?)" >&2
    exit 1
fi
start_rabbitmq "$WORK/certs"
log "FerryMQ $FERRYMQ_BIN (commit $FERRYMQ_COMMIT): amqp $FERRYMQ_AMQP, amqps $FERRYMQ_AMQPS, pid $FERRYMQ_PID"
log "$(rabbit_version): amqp $RABBIT_AMQP, amqps $RABBIT_AMQPS, beam pid $RABBIT_BEAM"
FERRY_TLS=$(tls_summary "$FERRYMQ_AMQPS")
RABBIT_TLS=$(tls_summary "$RABBIT_AMQPS")
log "negotiated with openssl s_client: FerryMQ $FERRY_TLS; RabbitMQ $RABBIT_TLS"

CONFIGS=(ferry-plain ferry-tls rabbit-tls)
[[ $RABBIT_PLAIN == 1 ]] && CONFIGS+=(rabbit-plain)

uri_of() {
    case $1 in
    ferry-plain) echo "amqp://guest:guest@127.0.0.1:$FERRYMQ_AMQP/%2f" ;;
    ferry-tls) echo "amqps://guest:guest@localhost:$FERRYMQ_AMQPS/%2f" ;;
    rabbit-tls) echo "amqps://guest:guest@localhost:$RABBIT_AMQPS/%2f" ;;
    rabbit-plain) echo "amqp://guest:guest@127.0.0.1:$RABBIT_AMQP/%2f" ;;
    esac
}
pid_of() { [[ $1 == ferry-* ]] && echo "$FERRYMQ_PID" || echo "$RABBIT_BEAM"; }

log "$(machine_line)"
CASES=()
for confirm in $CONFIRMS; do for size in $SIZES; do CASES+=("$size-c$confirm"); done; done
for case in "${CASES[@]}"; do
    size=${case%-c*}
    confirm=${case#*-c}
    for run in $(seq "$RUNS"); do
        for cfg in "${CONFIGS[@]}"; do
            uri=$(uri_of "$cfg")
            tls_args=()
            [[ $uri == amqps://* ]] && tls_args=(--tls-ca-file "$CA")
            out="$RAW/$cfg-$case-$run.json"
            # shellcheck disable=SC2086
            timed_run "$out" "$(pid_of "$cfg")" $BENCH --uri "$uri" "${tls_args[@]}" --json \
                --time "$SECONDS_PER_RUN" --size "$size" --prefetch 1000 --confirm "$confirm"
            log "$cfg ${size} B confirm $confirm run $run: consumed $(fmt "$(json "$out" consume_rate)") msg/s while publishing, published $(fmt "$(json "$out" publish_rate)") msg/s, client cpu $(json "$out" cpu_percent)% ($(json "$out" thread_cpu_percent | tr -d "{}'")), broker cpu $(json "$out" broker_cpu_percent)%, load $(cut -d' ' -f1 /proc/loadavg)"
            sleep 1
        done
    done
done

{
    echo "# AMQPS throughput, $(date '+%F %H:%M %Z')"
    echo
    echo "FerryMQ: $FERRYMQ_BIN, commit $FERRYMQ_COMMIT, fresh data dir, AMQPS on the same broker as plaintext"
    echo "RabbitMQ: $(rabbit_version), Debian package, TLS listener via rabbitmq.conf listeners.ssl.default"
    echo "certificate: RSA 2048 signed by a throwaway CA; client verifies it (--tls-ca-file), SNI localhost"
    echo "negotiated (openssl s_client): FerryMQ $FERRY_TLS; RabbitMQ $RABBIT_TLS"
    echo "$(machine_line) (at the end)"
    echo "workload: ferrymq bench amqp, 1 producer, 1 consumer, transient messages, prefetch 1000,"
    echo "          multi-ack every 500, ${SECONDS_PER_RUN} s per run, without confirms and with a window of 1000;"
    echo "          configurations alternate; $RUNS runs each; median"
    echo
    printf '%-12s %-34s %12s %12s %12s %10s %10s\n' case "consumed while publishing (msg/s)" "FerryMQ" "FerryMQ" "RabbitMQ" "FerryMQ" "FerryMQ TLS"
    printf '%-12s %-34s %12s %12s %12s %10s %10s\n' "" "" "plaintext" "AMQPS" "AMQPS" "TLS/plain" "/RabbitMQ TLS"
    for case in "${CASES[@]}"; do
        size=${case%-c*}
        confirm=${case#*-c}
        label="$size B"
        ((confirm > 0)) && label="$size B c$confirm"
        declare -A med=()
        for cfg in "${CONFIGS[@]}"; do
            med[$cfg]=$(median_of consume_rate "$RAW/$cfg-$case-"*.json)
        done
        printf '%-12s %-34s %12s %12s %12s %10s %10s\n' "$label" "median" "$(fmt "${med[ferry-plain]}")" \
            "$(fmt "${med[ferry-tls]}")" "$(fmt "${med[rabbit-tls]}")" \
            "$(ratio "${med[ferry-tls]}" "${med[ferry-plain]}")" "$(ratio "${med[ferry-tls]}" "${med[rabbit-tls]}")"
        for cfg in ferry-plain ferry-tls rabbit-tls; do
            printf '%-12s %-34s %s\n' "" "  runs, $cfg" "$(values_of consume_rate "$RAW/$cfg-$case-"*.json | sed 's/ / \/ /g')"
        done
        for key in publish_rate:published confirm_rate:confirmed consume_rate_overall:"consumed incl. drain" \
            broker_cpu_percent:"broker cpu %" broker_cpu_us_per_msg:"broker cpu ns/msg" cpu_percent:"bench client cpu %" \
            latency_us.p50:"latency p50 (µs)"; do
            k=${key%%:*}
            [[ $k == confirm_rate ]] && ((confirm == 0)) && continue
            scale=1
            [[ $k == broker_cpu_us_per_msg ]] && scale=1000
            printf '%-12s %-34s %12s %12s %12s\n' "" "  ${key#*:}" \
                "$(fmt "$(median_of "$k" "$RAW/ferry-plain-$case-"*.json)" $scale)" \
                "$(fmt "$(median_of "$k" "$RAW/ferry-tls-$case-"*.json)" $scale)" \
                "$(fmt "$(median_of "$k" "$RAW/rabbit-tls-$case-"*.json)" $scale)"
        done
        if [[ $RABBIT_PLAIN == 1 ]]; then
            printf '%-12s %-34s %38s\n' "" "RabbitMQ plaintext (context)" "$(fmt "${med[rabbit-plain]}")"
        fi
        unset med
    done
    echo
    echo "runs (in order):"
    sed 's/^/  /' "$WORK/log.txt"
} | tee "$RESULTS"
echo "results: $RESULTS (raw JSON: $RAW/)" >&2
