#!/usr/bin/env bash
# The cost of statistics on the message path: interleaved 1 producer / 1 consumer, 16 B
# transient runs against two broker binaries (BEFORE, AFTER), the same bench client.
#   BEFORE=/path/old-ferrymq AFTER=target/release/ferrymq bench/stats-cost.sh
# Environment: ROUNDS [3], SECS [10], CLIENT (bench client binary) [$AFTER].
set -u
BEFORE=${BEFORE:?path of the broker binary before}
AFTER=${AFTER:-target/release/ferrymq}
CLIENT=${CLIENT:-$AFTER}
run() { # bin label
  local dir; dir=$(mktemp -d /tmp/hbench.XXXX)
  setsid "$1" serve --data-dir "$dir/data" --amqp-port 0 --kafka-port 0 --http-port 0 --prometheus-port 0 > "$dir/out" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do grep -q "amqp listening" "$dir/out" && break; sleep 0.1; done
  local port; port=$(grep "amqp listening" "$dir/out" | sed 's/.*://')
  local r; r=$("$CLIENT" bench amqp --uri "amqp://guest:guest@127.0.0.1:$port/%2f" -x 1 -y 1 -s 16 -z ${SECS:-10} --json 2>/dev/null)
  echo "$2 $r"
  kill -TERM -- -$pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"
}
for i in $(seq ${ROUNDS:-3}); do
  run "$BEFORE" before
  run "$AFTER" after
done
