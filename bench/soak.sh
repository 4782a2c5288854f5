#!/usr/bin/env bash
# Soak: mixed AMQP (pika, confirms) and Kafka (confluent-kafka, acks=all) load on durable
# and transient queues/topics, consumers running, kill -9 of the broker every few minutes
# and restart on the same data dir; at the end a checker (no confirmed persistent message
# or acks=all record lost, RSS under the watermark + margin). See bench/soak.py.
#   bench/soak.sh [DURATION_S [KILL_EVERY_S]]   (default 3600 and 180)
#   FERRYMQ_BIN=... SOAK_WATERMARK=400MB SOAK_ARGS="--amqp-publishers 3" bench/soak.sh 600 60
# Needs target/release/ferrymq; installs pika and confluent-kafka into ./.venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv="$PWD/.venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
    -r tests/memory/requirements.txt
export FERRYMQ_BIN="${FERRYMQ_BIN:-$PWD/target/release/ferrymq}"
exec "$venv/bin/python" bench/soak.py --duration "${1:-3600}" --kill-every "${2:-180}" \
    --watermark "${SOAK_WATERMARK:-400MB}" ${SOAK_ARGS:-}
