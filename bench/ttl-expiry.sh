#!/usr/bin/env bash
# Publish rate while a queue's x-message-ttl expires messages, versus the same publish
# without TTL (issue 5's figure). One producer, no consumer, 16-byte transient messages,
# confirms (window 1000); the TTL run expires (almost) everything it publishes while the
# producer keeps publishing.
#   bench/ttl-expiry.sh [COUNT] [TTL_MS]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${FERRYMQ_BIN:-$repo/target/release/ferrymq}"
count="${1:-2000000}"
ttl="${2:-200}"
dir="$(mktemp -d)"
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
"$bin" serve --data-dir "$dir/data" --amqp-port 0 --kafka-port 0 --http-port 0 --prometheus-port 0 >"$dir/out" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "amqp listening" "$dir/out" && break; sleep 0.1; done
port="$(sed -n 's/.*amqp listening on [^ ]*:\([0-9]*\).*/\1/p' "$dir/out" | head -1)"
uri="amqp://guest:guest@127.0.0.1:$port/%2f"
run() {
    "$bin" bench amqp --uri "$uri" -x 1 -y 0 -c 1000 -C "$count" "$@" --json 2>/dev/null | tail -1
}
echo "== without TTL ($count messages)"
run -u bench-no-ttl
echo "== with x-message-ttl=$ttl ms ($count messages, expiring while publishing)"
run -u bench-ttl --queue-arg "x-message-ttl=$ttl"
echo "== broker RSS after both runs: $(awk '/VmRSS/{print $2" kB"}' /proc/$pid/status)"
