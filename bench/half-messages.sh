#!/usr/bin/env bash
# Half messages (issue 11's closing figures): commits/s with confirms for one producer
# (half publish + commit per transaction) next to plain persistent publishes with confirms
# in the same run, and the broker's RSS per pending half (N halves of 1 KiB).
#   bench/half-messages.sh [TXNS] [PENDING]   (cargo build --release -p ferrymq first)
# Environment: FERRYMQ_BIN [target/release/ferrymq], FSYNC [always], PYTHON [.venv python
# with pika; created like tests/e2e/run.sh if missing].
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${FERRYMQ_BIN:-$repo/target/release/ferrymq}"
txns="${1:-2000}"
pending="${2:-200000}"
fsync="${FSYNC:-always}"
py="${PYTHON:-$repo/.venv/bin/python}"
if [[ ! -x $py ]]; then
    python3 -m venv "$repo/.venv"
    py="$repo/.venv/bin/python"
fi
"$py" -c "import pika" 2>/dev/null || "$py" -m pip install -q pika==1.3.2
dir="$(mktemp -d /var/tmp/ferrymq-half.XXXXXX)"
pid=""
cleanup() {
    [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
"$bin" serve --data-dir "$dir/data" --amqp-port 0 --kafka-port 0 --http-port 0 \
    --prometheus-port 0 --fsync "$fsync" >"$dir/out" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "http listening" "$dir/out" && grep -q "amqp listening" "$dir/out" && break; sleep 0.1; done
port="$(sed -n 's/.*amqp listening on [^ ]*:\([0-9]*\).*/\1/p' "$dir/out" | head -1)"
hport="$(sed -n 's/.*http listening on [^ ]*:\([0-9]*\).*/\1/p' "$dir/out" | head -1)"
if [[ -z $port || -z $hport ]]; then
    echo "the broker did not start:" >&2
    cat "$dir/out" >&2
    exit 1
fi
echo "ferrymq on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); --fsync $fsync; data dir on $(df --output=source "$dir" | tail -1)"
"$py" "$repo/bench/half-messages.py" --url "amqp://guest:guest@127.0.0.1:$port/%2f" \
    --http "http://127.0.0.1:$hport" --pid "$pid" --txns "$txns" --pending "$pending"
