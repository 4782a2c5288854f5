#!/usr/bin/env bash
# Cost of access control on the AMQP hot path (issue 9: "permission checks cost under 3%").
#
# 1 producer / 1 consumer, 16 B transient messages, no confirms, prefetch 1000, multi-ack,
# on a named queue bench.auth-<n> (fresh per run), against:
#   old-guest   guest/guest on the binary of commit 57c2bb9, the last one before users,
#               vhosts and permissions (OLD_COMMIT)
#   new-regex   user `bench` imported with --load-definitions, permissions
#               configure ^bench\..*  write ^(amq\.default|bench\..*)$  read ^bench\..*
#               on the current binary (every declare/publish/consume checked against them)
#   new-guest   guest/guest (.* everywhere) on the current binary: separates the cost of
#               the regexes from other changes between the two commits
# The configurations alternate, RUNS times each; medians, ratios, and the broker's CPU
# time per message (less sensitive to the machine's other load than msg/s).
#
# Usage: bench/auth-overhead.sh   (from the repository root, after cargo build --release -p ferrymq)
# Environment:
#   FERRYMQ_BIN      current broker + bench binary                 [target/release/ferrymq]
#   FERRYMQ_COMMIT   its commit, for the results file                [HEAD]
#   OLD_COMMIT       commit before access control                    [57c2bb9]
#   OLD_BIN          its binary [built if missing: git worktree of OLD_COMMIT in
#                    /var/tmp/ferrymq-wt-OLD_COMMIT, target dir /var/tmp/ferrymq-target-OLD_COMMIT]
#   BENCH            bench command (the current client for every configuration)
#                                                                    [$FERRYMQ_BIN bench amqp]
#   SECONDS_PER_RUN  [10]    RUNS [5]    SIZE [16]
set -euo pipefail

cd "$(dirname "$0")/.."
source bench/lib-sec.sh
FERRYMQ_BIN=${FERRYMQ_BIN:-target/release/ferrymq}
FERRYMQ_COMMIT=${FERRYMQ_COMMIT:-$(head_commit)}
OLD_COMMIT=${OLD_COMMIT:-57c2bb9}
BENCH=${BENCH:-"$FERRYMQ_BIN bench amqp"}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
RUNS=${RUNS:-5}
SIZE=${SIZE:-16}

if [[ -z ${OLD_BIN:-} ]]; then
    old_tree=/var/tmp/ferrymq-wt-$OLD_COMMIT
    old_target=/var/tmp/ferrymq-target-$OLD_COMMIT
    OLD_BIN=$old_target/release/ferrymq
    if [[ ! -x $OLD_BIN ]]; then
        [[ -d $old_tree ]] || git worktree add --detach "$old_tree" "$OLD_COMMIT"
        echo "building $OLD_COMMIT into $old_target (a full release build) ..." >&2
        (cd "$old_tree" && CARGO_TARGET_DIR=$old_target cargo build --release -p ferrymq)
    fi
fi

sec_init auth-overhead
RAW=${RESULTS%.txt}.raw
rm -rf "$RAW"
mkdir -p "$RAW"

# guest is listed too: as RabbitMQ, a broker booted with --load-definitions does not create
# the default user.
cat >"$WORK/definitions.json" <<'EOF'
{
  "users": [{"name": "guest", "password": "guest", "tags": ["administrator"]},
            {"name": "bench", "password": "bench-pass", "tags": ""}],
  "vhosts": [{"name": "/"}],
  "permissions": [{"user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
                  {"user": "bench", "vhost": "/",
                   "configure": "^bench\\..*",
                   "write": "^(amq\\.default|bench\\..*)$",
                   "read": "^bench\\..*"}]
}
EOF

start_ferrymq old "$OLD_BIN"
OLD_PID=$FERRYMQ_PID OLD_PORT=$FERRYMQ_AMQP
start_ferrymq new "$FERRYMQ_BIN" --load-definitions "$WORK/definitions.json"
NEW_PID=$FERRYMQ_PID NEW_PORT=$FERRYMQ_AMQP
log "old: $OLD_BIN (commit $OLD_COMMIT) amqp $OLD_PORT pid $OLD_PID"
log "new: $FERRYMQ_BIN (commit $FERRYMQ_COMMIT) amqp $NEW_PORT pid $NEW_PID, definitions: $(tr -d '\n ' <"$WORK/definitions.json")"

# The regex user must be refused outside its patterns, or the comparison means nothing.
if $BENCH --uri "amqp://bench:bench-pass@127.0.0.1:$NEW_PORT/%2f" --queue other.q --pmessages 1 \
    >/dev/null 2>"$WORK/refusal.err"; then
    echo "user bench was allowed to declare other.q: permissions not enforced?" >&2
    exit 1
fi
log "check: bench declaring other.q is refused: $(grep -o '403[^)]*' "$WORK/refusal.err" | head -1)"

CONFIGS=(old-guest new-regex new-guest)
uri_of() {
    case $1 in
    old-guest) echo "amqp://guest:guest@127.0.0.1:$OLD_PORT/%2f" ;;
    new-regex) echo "amqp://bench:bench-pass@127.0.0.1:$NEW_PORT/%2f" ;;
    new-guest) echo "amqp://guest:guest@127.0.0.1:$NEW_PORT/%2f" ;;
    esac
}
pid_of() { [[ $1 == old-* ]] && echo "$OLD_PID" || echo "$NEW_PID"; }

log "$(machine_line)"
n=0
for run in $(seq "$RUNS"); do
    for cfg in "${CONFIGS[@]}"; do
        n=$((n + 1))
        out="$RAW/$cfg-$run.json"
        # shellcheck disable=SC2086
        timed_run "$out" "$(pid_of "$cfg")" $BENCH --uri "$(uri_of "$cfg")" --json \
            --queue "bench.auth-$n" --time "$SECONDS_PER_RUN" --size "$SIZE" --prefetch 1000
        log "$cfg run $run: consumed $(fmt "$(json "$out" consume_rate)") msg/s while publishing, published $(fmt "$(json "$out" publish_rate)") msg/s, broker cpu $(json "$out" broker_cpu_percent)% = $(json "$out" broker_cpu_us_per_msg) µs/msg, client cpu $(json "$out" cpu_percent)%, load $(cut -d' ' -f1 /proc/loadavg)"
        sleep 1
    done
done

{
    echo "# Permission-check cost on the AMQP hot path, $(date '+%F %H:%M %Z')"
    echo
    echo "old: commit $OLD_COMMIT (before access control), user guest"
    echo "new: commit $FERRYMQ_COMMIT, user bench from --load-definitions with regex permissions"
    echo "     (configure ^bench\\..*, write ^(amq\\.default|bench\\..*)\$, read ^bench\\..*), and guest for reference"
    echo "$(machine_line) (at the end)"
    echo "workload: ferrymq bench amqp (client of $FERRYMQ_COMMIT for all), 1p/1c, $SIZE B transient, no confirms,"
    echo "          prefetch 1000, named queue per run, ${SECONDS_PER_RUN} s; configurations alternate; $RUNS runs each; median"
    echo
    printf '%-38s %14s %14s %14s %12s %12s\n' "" "old guest" "new regex" "new guest" "regex/old" "regex/guest"
    row() { # label key higher_is_better
        local o r g
        o=$(median_of "$2" "$RAW/old-guest-"*.json)
        r=$(median_of "$2" "$RAW/new-regex-"*.json)
        g=$(median_of "$2" "$RAW/new-guest-"*.json)
        printf '%-38s %14s %14s %14s %12s %12s\n' "$1" "$(fmt "$o")" "$(fmt "$r")" "$(fmt "$g")" \
            "$(ratio "$r" "$o")" "$(ratio "$r" "$g")"
    }
    row "consumed while publishing (msg/s)" consume_rate
    for cfg in old-guest new-regex new-guest; do
        printf '%-38s %s\n' "  runs, $cfg" "$(values_of consume_rate "$RAW/$cfg-"*.json | sed 's/ / \/ /g')"
    done
    row "published (msg/s)" publish_rate
    row "consumed incl. drain (msg/s)" consume_rate_overall
    python3 - "$RAW" <<'EOF'
import glob, json, statistics, sys
raw = sys.argv[1]
def med(cfg):
    vals = []
    for f in sorted(glob.glob(f"{raw}/{cfg}-*.json")):
        try:
            d = json.loads([l for l in open(f) if l.startswith("{")][-1])
            vals.append(d["broker_cpu_us_per_msg"])
        except Exception:
            pass
    return statistics.median(vals) if vals else None
o, r, g = med("old-guest"), med("new-regex"), med("new-guest")
f = lambda x: "-" if x is None else f"{x:.3f}"
q = lambda a, b: "-" if not a or not b else f"{a / b:.2f}x"
print(f"{'broker CPU per message (µs)':<38} {f(o):>14} {f(r):>14} {f(g):>14} {q(r, o):>12} {q(r, g):>12}")
EOF
    row "broker cpu (% of one core)" broker_cpu_percent
    row "bench client cpu (% of one core)" cpu_percent
    echo
    echo "regex/old above 1.00x = faster with permission checks; for CPU per message, above 1.00x = more CPU."
    echo
    echo "runs (in order):"
    sed 's/^/  /' "$WORK/log.txt"
} | tee "$RESULTS"
echo "results: $RESULTS (raw JSON: $RAW/)" >&2
