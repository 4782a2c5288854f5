# Helpers shared by the security benchmarks (amqp-tls.sh, auth-overhead.sh, kafka-sasl.sh,
# tls-idle-connections.sh). Sourced, not run. Expects: set -euo pipefail, the repository
# root as the working directory, and $WORK (a private temporary directory) set.
#
# Servers are started in their own process group (setsid) and recorded in SERVER_PIDS;
# sec_cleanup (installed as the EXIT trap by sec_init) stops exactly those groups.

SERVER_PIDS=()
TLS_PORTS_ZERO=(--amqps-port 0 --kafka-tls-port 0 --https-port 0)

sec_cleanup() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${SERVER_PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    [[ -n ${WORK:-} && -d $WORK ]] && rm -rf "$WORK"
}

sec_init() { # name -> sets WORK, RESULTS; installs the cleanup trap
    WORK=$(mktemp -d "/var/tmp/ferrymq-$1.XXXXXX")
    mkdir -p bench/results
    RESULTS=bench/results/$(date +%F)-$1.txt
    trap sec_cleanup EXIT
}

log() { echo "$*" | tee -a "$WORK/log.txt" >&2; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() { # port seconds
    local deadline=$((SECONDS + $2))
    until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        if ((SECONDS > deadline)); then return 1; fi
        sleep 0.3
    done
}

# The commit a binary was built from cannot be read from it; scripts record what they were
# told (FERRYMQ_COMMIT) or the working tree's HEAD.
head_commit() { git rev-parse --short HEAD 2>/dev/null || echo unknown; }

# make_certs DIR: a CA and a server certificate for localhost / 127.0.0.1 (RSA 2048, as
# many deployments use), PEM, key in PKCS#8. Prints nothing; files: ca.pem, server.pem,
# server.key.
make_certs() {
    local d=$1
    mkdir -p "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ferrymq bench CA" \
        -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
    printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
        "keyUsage=digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" >"$d/ext.cnf"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
        -days 2 -extfile "$d/ext.cnf" -out "$d/server.pem" 2>/dev/null
    chmod 644 "$d"/*.pem "$d"/*.key
}

# tls_summary PORT: "TLSv1.3 TLS_AES_256_GCM_SHA384" as OpenSSL negotiates it.
tls_summary() {
    openssl s_client -connect "127.0.0.1:$1" -brief </dev/null 2>&1 |
        awk -F': *' '/Protocol version/ {p=$2} /Ciphersuite/ {c=$2} END {print p, c}'
}

# start_ferrymq NAME BIN [extra serve args...] -> sets FERRYMQ_PID, FERRYMQ_AMQP,
# FERRYMQ_AMQPS, FERRYMQ_KAFKA, FERRYMQ_KAFKA_TLS (ports; empty when not open).
# Fresh data dir under $WORK/NAME; every port picked by the kernel (pass TLS_PORTS_ZERO
# with TLS, so that no default TLS port collides with another broker on the machine).
start_ferrymq() {
    local name=$1 bin=$2 dir="$WORK/$1" out
    shift 2
    mkdir -p "$dir"
    if [[ ! -x $bin ]]; then
        echo "no broker binary at $bin (cargo build --release -p ferrymq)" >&2
        exit 1
    fi
    setsid "$bin" serve --data-dir "$dir/data" --amqp-port 0 --kafka-port 0 --http-port 0 --prometheus-port 0 \
        "$@" >"$dir/stdout.log" 2>"$dir/stderr.log" &
    FERRYMQ_PID=$!
    SERVER_PIDS+=("$FERRYMQ_PID")
    out="$dir/stdout.log"
    for _ in $(seq 300); do
        grep -q 'amqp listening on' "$out" && grep -q 'kafka listening on' "$out" && break
        if ! kill -0 "$FERRYMQ_PID" 2>/dev/null; then break; fi
        sleep 0.1
    done
    port_of() { sed -n "s/^ferrymq: $1 listening on .*:\([0-9][0-9]*\)\$/\1/p" "$out" | head -1; }
    FERRYMQ_AMQP=$(port_of amqp)
    FERRYMQ_AMQPS=$(port_of amqps)
    FERRYMQ_KAFKA=$(port_of kafka)
    FERRYMQ_KAFKA_TLS=$(port_of kafka-tls)
    if [[ -z $FERRYMQ_AMQP ]]; then
        echo "FerryMQ ($bin) did not start; its output:" >&2
        tail -20 "$out" "$dir/stderr.log" >&2
        exit 1
    fi
}

stop_server() { # pid
    local pid=$1 p
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    local keep=()
    for p in "${SERVER_PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    SERVER_PIDS=("${keep[@]}")
}

# start_rabbitmq CERTDIR -> sets RABBIT_PID (process group), RABBIT_BEAM (the VM's pid),
# RABBIT_AMQP, RABBIT_AMQPS. Debian's rabbitmq-server, private node name, ports, mnesia
# and log dirs, no plugins, TLS listener with the same certificate as FerryMQ.
start_rabbitmq() {
    local certs=$1 dir="$WORK/rabbitmq" dist server
    RABBIT_AMQP=$(free_port)
    RABBIT_AMQPS=$(free_port)
    dist=$(free_port)
    mkdir -p "$dir/mnesia" "$dir/log"
    echo "[]." >"$dir/enabled_plugins"
    cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.default = $RABBIT_AMQP
listeners.ssl.default = $RABBIT_AMQPS
ssl_options.cacertfile = $certs/ca.pem
ssl_options.certfile = $certs/server.pem
ssl_options.keyfile = $certs/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
EOF
    if ! command -v rabbitmq-server >/dev/null && [[ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]]; then
        echo "installing rabbitmq-server ..." >&2
        apt-get install -y rabbitmq-server >/dev/null
        # Debian starts a system node on 5672; the benchmarks use their own.
        systemctl stop rabbitmq-server 2>/dev/null || service rabbitmq-server stop 2>/dev/null || true
    fi
    # The Debian wrapper /usr/sbin/rabbitmq-server switches to the rabbitmq user; the real
    # script runs as whoever starts it, which keeps the temp dirs ours.
    server=/usr/lib/rabbitmq/bin/rabbitmq-server
    [[ -x $server ]] || server=$(command -v rabbitmq-server)
    RABBITMQ_NODENAME="rabbit-sec$$@localhost" RABBITMQ_DIST_PORT=$dist \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" RABBITMQ_PID_FILE="$dir/pid" \
        setsid "$server" >"$dir/stdout.log" 2>&1 &
    RABBIT_PID=$!
    SERVER_PIDS+=("$RABBIT_PID")
    if ! wait_for_port "$RABBIT_AMQPS" 120; then
        echo "RabbitMQ did not open its TLS port; its output:" >&2
        tail -30 "$dir/stdout.log" >&2
        exit 1
    fi
    sleep 2 # the ports open a moment before the node finishes booting
    RABBIT_BEAM=$(cat "$dir/pid" 2>/dev/null || pgrep -f "rabbit-sec$$@localhost" | head -1)
}

rabbit_version() { sed -n 's/.*Starting RabbitMQ \([0-9.]*\) on Erlang \([0-9.]*\).*/RabbitMQ \1, Erlang \2/p' "$WORK/rabbitmq/log/"*.log 2>/dev/null | head -1; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# json FILE KEY.PATH -> value from the last JSON line of FILE ("" if missing)
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

# timed_run OUTFILE BROKER_PID cmd...: runs cmd with stdout to OUTFILE, then appends the
# bench's JSON again with the broker's CPU over the whole run added (broker_cpu_percent,
# broker_cpu_seconds, run_seconds, broker_cpu_us_per_msg = broker CPU per message consumed
# or produced), as the file's last JSON line.
timed_run() {
    local out=$1 pid=$2 t0 c0 rc=0
    shift 2
    t0=$(date +%s.%N)
    c0=$(cpu_ticks "$pid")
    "$@" >"$out" 2>"$out.err" || rc=$?
    python3 -c 'import sys; t,s,o=float(sys.argv[1]),float(sys.argv[2]),sys.argv[3]
import json; d={}
try:
    d=json.loads([l for l in open(o) if l.startswith("{")][-1])
except Exception: pass
d["broker_cpu_percent"]=round(t/100/s*100,1)
d["broker_cpu_seconds"]=t/100
d["run_seconds"]=round(s,3)
n=d.get("consumed") or d.get("records_produced") or 0
if n: d["broker_cpu_us_per_msg"]=round(t/100/n*1e6,3)
open(o,"a").write(json.dumps(d)+"\n")' "$(($(cpu_ticks "$pid") - c0))" "$(echo "$(date +%s.%N) - $t0" | bc)" "$out"
    if ((rc != 0)); then
        log "   FAILED ($rc): $(tail -2 "$out.err" | tr '\n' ' ')"
    fi
    return 0
}

# median_of KEY FILE... -> median of KEY over the files' last JSON lines ("" if none)
median_of() {
    local key=$1
    shift
    python3 - "$key" "$@" <<'EOF'
import json, statistics, sys
key, files = sys.argv[1], sys.argv[2:]
vals = []
for f in files:
    try:
        v = json.loads([l for l in open(f) if l.startswith("{")][-1])
        for k in key.split("."):
            v = v[k]
        vals.append(float(v))
    except Exception:
        pass
print(statistics.median(vals) if vals else "")
EOF
}

# values_of KEY FILE... -> the values, space separated, in run order
values_of() {
    local key=$1
    shift
    python3 - "$key" "$@" <<'EOF'
import json, sys
key, files = sys.argv[1], sys.argv[2:]
out = []
for f in files:
    try:
        v = json.loads([l for l in open(f) if l.startswith("{")][-1])
        for k in key.split("."):
            v = v[k]
        out.append(f"{float(v):.0f}")
    except Exception:
        out.append("-")
print(" ".join(out))
EOF
}

fmt() { # VALUE [SCALE]: thousands separated by spaces, no decimals
    python3 -c 'import sys
try: print(f"{float(sys.argv[1]) * float(sys.argv[2]):,.0f}".replace(",", " "))
except ValueError: print("-")' "$1" "${2:-1}"
}

ratio() { python3 -c 'import sys
try: print(f"{float(sys.argv[1]) / float(sys.argv[2]):.2f}x")
except (ValueError, ZeroDivisionError): print("-")' "$1" "$2"; }

machine_line() {
    echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load average $(cut -d' ' -f1-3 /proc/loadavg)"
}
