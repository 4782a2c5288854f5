#!/usr/bin/env bash
# Backlogs on disk (issue 10, queue side). Two measurements, each against two broker
# binaries (BEFORE: in-memory backlogs; AFTER: paged backlogs), the same bench client:
#  1. drain: a transient backlog of N messages of SIZE bytes published with no consumer
#     (-x 1 -y 0, confirms), then drained by one consumer (-x 0 -y 1, prefetch 1000);
#     reports publish rate, peak broker RSS, drain rate (messages / seconds until empty).
#  2. 1p/1c 16 B transient end-to-end rate, interleaved rounds, unthrottled and at RATE.
#   BEFORE=/path/old-ferrymq AFTER=target/release/ferrymq bench/spill.sh
# Environment: N [2000000], SIZE [1024], BUDGET [64MiB] (AFTER only), ROUNDS [3], SECS [10],
# RATE [100000],
# CLIENT [$AFTER].
set -u
BEFORE=${BEFORE:?path of the broker binary before}
AFTER=${AFTER:-target/release/ferrymq}
CLIENT=${CLIENT:-$AFTER}
N=${N:-2000000}
SIZE=${SIZE:-1024}
start() { # bin extra-args... ; sets DIR PID PORT
  DIR=$(mktemp -d /tmp/spillbench.XXXX)
  local bin=$1; shift
  setsid "$bin" serve --data-dir "$DIR/data" --amqp-port 0 --kafka-port 0 --http-port 0 --prometheus-port 0 "$@" > "$DIR/out" 2>&1 &
  PID=$!
  for _ in $(seq 100); do grep -q "amqp listening" "$DIR/out" && break; sleep 0.1; done
  PORT=$(grep "amqp listening" "$DIR/out" | sed 's/.*://')
}
stop() { kill -TERM -- -"$PID" 2>/dev/null; wait "$PID" 2>/dev/null; rm -rf "$DIR"; }
rss_mb() { awk '/VmRSS/ {print int($2/1024)}' /proc/"$PID"/status; }
uri() { echo "amqp://guest:guest@127.0.0.1:$PORT/%2f"; }
drain() { # label bin extra-args...
  local label=$1; shift
  start "$@"
  local peak=0
  ( while kill -0 "$PID" 2>/dev/null; do rss_mb; sleep 0.5; done ) > "$DIR/rss" &
  local sampler=$!
  local pub; pub=$("$CLIENT" bench amqp --uri "$(uri)" -u drain -x 1 -y 0 -s "$SIZE" -C "$N" -c 1000 --json 2>/dev/null)
  local held; held=$(rss_mb)
  local scratch; scratch=$(du -sm "$DIR/data/scratch" 2>/dev/null | cut -f1)
  local t0; t0=$(date +%s.%N)
  "$CLIENT" bench amqp --uri "$(uri)" -u drain -x 0 -y 1 -s "$SIZE" -z $(( N / 60000 + 10 )) --json 2> "$DIR/drain.err" > "$DIR/drain.json"
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
  peak=$(sort -n "$DIR/rss" | tail -1)
  # Seconds until empty: full seconds with deliveries, the last partial one pro rata.
  local rate; rate=$(python3 - "$DIR/drain.err" "$N" <<'PY'
import re, sys
rates = [int(m.group(1).replace(' ', '').replace('\u202f', ''))
         for m in re.finditer(r'consumed ([\d  ]+)/s', open(sys.argv[1]).read())]
rates = [r for r in rates]
while rates and rates[-1] == 0: rates.pop()
n = int(sys.argv[2])
if not rates: print(0); sys.exit()
full = rates[:-1]
top = max(full) if full else rates[-1]
secs = len(full) + rates[-1] / max(top, 1)
print(int(n / secs))
PY
)
  echo "$label drain N=$N size=$SIZE: publish $(echo "$pub" | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["publish_rate"]))') msg/s, RSS peak ${peak} MB (holding backlog ${held} MB), scratch ${scratch:-0} MB, drain ${rate} msg/s"
  stop
}
e2e() { # label rate bin extra-args...  (rate 0 = unthrottled)
  local label=$1 rate=$2; shift 2
  start "$@"
  local r; r=$("$CLIENT" bench amqp --uri "$(uri)" -x 1 -y 1 -s 16 -r "$rate" -z "${SECS:-10}" --json 2>/dev/null)
  echo "$label 1p1c16B rate-limit=$rate publish/consume msg/s: $(echo "$r" | python3 -c 'import json,sys; j=json.load(sys.stdin); print(int(j["publish_rate"]), int(j["consume_rate"]))') RSS-at-end $(rss_mb) MB"
  stop
}
echo "# $(date -u +%FT%TZ) N=$N SIZE=$SIZE BUDGET=${BUDGET:-64MiB} $(nproc) cores"
drain before "$BEFORE"
drain after "$AFTER" --queue-memory-budget "${BUDGET:-64MiB}"
# Unthrottled, the producer outruns the consumer and a backlog grows (in RAM before, paged
# after); at RATE msg/s (below both brokers' consumer rate) no backlog builds and only the
# accounting is measured.
for _ in $(seq "${ROUNDS:-3}"); do
  e2e before 0 "$BEFORE"
  e2e after 0 "$AFTER"
  e2e before "${RATE:-100000}" "$BEFORE"
  e2e after "${RATE:-100000}" "$AFTER"
done
