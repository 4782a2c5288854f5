#!/usr/bin/env bash
# Broker memory per idle AMQP connection, plaintext and AMQPS.
#
# For each transport, a fresh FerryMQ (TLS listener configured in both cases, so the
# baselines match) and bench/idle_connections.py opening COUNT connections that complete
# the handshake (TLS, then AMQP up to connection.open-ok, heartbeats off) and stay idle.
# Broker RSS (VmRSS) is read before, once all are open (after SETTLE seconds), and again
# SETTLE seconds after they closed; per connection = (open - before) / COUNT.
#
# Usage: bench/tls-idle-connections.sh   (from the repository root, after cargo build --release -p ferrymq)
# Environment:
#   FERRYMQ_BIN      broker binary                                [target/release/ferrymq]
#   FERRYMQ_COMMIT   its commit, for the results file              [HEAD]
#   COUNT            connections                                   [10000]
#   SETTLE           seconds to wait before reading RSS            [5]
#   CONCURRENCY      handshakes in flight from the client          [100]
set -euo pipefail

cd "$(dirname "$0")/.."
source bench/lib-sec.sh
FERRYMQ_BIN=${FERRYMQ_BIN:-target/release/ferrymq}
FERRYMQ_COMMIT=${FERRYMQ_COMMIT:-$(head_commit)}
COUNT=${COUNT:-10000}
SETTLE=${SETTLE:-5}
CONCURRENCY=${CONCURRENCY:-100}

# Both the broker and the client hold one descriptor per connection.
need=$((COUNT + 200))
if (($(ulimit -Hn) < need)); then
    echo "the hard limit on open files ($(ulimit -Hn)) is below $need" >&2
    exit 1
fi
ulimit -n "$(ulimit -Hn)"

sec_init tls-idle-connections
make_certs "$WORK/certs"

declare -A BEFORE OPEN AFTER SECS THREADS
measure() { # transport
    local t=$1 port pid hold cl tls_args=()
    start_ferrymq "ferrymq-$t" "$FERRYMQ_BIN" --tls-cert-file "$WORK/certs/server.pem" \
        --tls-key-file "$WORK/certs/server.key" "${TLS_PORTS_ZERO[@]}"
    pid=$FERRYMQ_PID
    port=$FERRYMQ_AMQP
    if [[ $t == amqps ]]; then
        port=$FERRYMQ_AMQPS
        tls_args=(--tls --ca-file "$WORK/certs/ca.pem")
    fi
    sleep "$SETTLE"
    BEFORE[$t]=$(rss_kib "$pid")
    hold="$WORK/hold-$t"
    touch "$hold"
    python3 bench/idle_connections.py 127.0.0.1 "$port" "$COUNT" "${tls_args[@]}" \
        --concurrency "$CONCURRENCY" --hold-file "$hold" >"$WORK/client-$t.json" 2>"$WORK/client-$t.err" &
    cl=$!
    for _ in $(seq 1200); do
        [[ -s $WORK/client-$t.json ]] && break
        kill -0 "$cl" 2>/dev/null || break
        sleep 0.5
    done
    if [[ $(json "$WORK/client-$t.json" open) != "$COUNT" ]]; then
        log "$t: only $(json "$WORK/client-$t.json" open) of $COUNT connections opened: $(tail -2 "$WORK/client-$t.err" | tr '\n' ' ')"
    fi
    SECS[$t]=$(json "$WORK/client-$t.json" seconds)
    sleep "$SETTLE"
    OPEN[$t]=$(rss_kib "$pid")
    THREADS[$t]=$(awk '/^Threads/ {print $2}' "/proc/$pid/status")
    log "$t: $(json "$WORK/client-$t.json" open) connections open in ${SECS[$t]} s (port $port); broker RSS $((BEFORE[$t] / 1024)) MiB before, $((OPEN[$t] / 1024)) MiB with them open, ${THREADS[$t]} threads, $(ls "/proc/$pid/fd" | wc -l) fds"
    rm -f "$hold"
    wait "$cl" || true
    sleep "$SETTLE"
    AFTER[$t]=$(rss_kib "$pid")
    log "$t: broker RSS $((AFTER[$t] / 1024)) MiB ${SETTLE} s after they closed"
    stop_server "$pid"
}

log "$(machine_line)"
measure amqp
measure amqps

per_conn() { python3 -c 'import sys; b,o,n=map(float,sys.argv[1:4]); print(f"{(o-b)*1024/n/1024:.1f}")' "$1" "$2" "$COUNT"; }
{
    echo "# Broker memory per idle connection, plaintext AMQP vs AMQPS, $(date '+%F %H:%M %Z')"
    echo
    echo "FerryMQ: $FERRYMQ_BIN, commit $FERRYMQ_COMMIT, fresh broker per transport (TLS listener configured in both)"
    echo "client: bench/idle_connections.py, $COUNT connections, handshake through connection.open-ok, heartbeat 0,"
    echo "        $CONCURRENCY handshakes in flight; TLS: RSA 2048 certificate verified by the client"
    echo "$(machine_line) (at the end)"
    echo
    printf '%-10s %10s %14s %16s %14s %18s %14s\n' transport "open in" "RSS before" "RSS all open" "per conn" "RSS after close" "threads open"
    for t in amqp amqps; do
        printf '%-10s %9ss %11s MiB %13s MiB %10s KiB %15s MiB %14s\n' "$t" "${SECS[$t]}" \
            "$((BEFORE[$t] / 1024))" "$((OPEN[$t] / 1024))" "$(per_conn "${BEFORE[$t]}" "${OPEN[$t]}")" \
            "$((AFTER[$t] / 1024))" "${THREADS[$t]}"
    done
    echo
    echo "AMQPS / plaintext per connection: $(python3 -c 'import sys; a,b,c,d=map(float,sys.argv[1:5]); print(f"{(d-c)/(b-a):.2f}x")' \
        "${BEFORE[amqp]}" "${OPEN[amqp]}" "${BEFORE[amqps]}" "${OPEN[amqps]}")"
    echo
    echo "log:"
    sed 's/^/  /' "$WORK/log.txt"
} | tee "$RESULTS"
echo "results: $RESULTS" >&2
