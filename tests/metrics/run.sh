#!/usr/bin/env bash
# The Prometheus metrics and `ferrymq admin` suite: prometheus_client's parser on
# /metrics, /metrics/per-object and /metrics/detailed (Prometheus port and management
# port), pika and kafka-python as the clients that move the numbers, and the real
# `ferrymq admin` binary against a real broker. Each test starts its own broker.
#   FERRYMQ_BIN=path/to/ferrymq tests/metrics/run.sh     # default target/release/ferrymq
# Extra arguments are passed to pytest (e.g. -k admin, -x).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/venv.sh
. "$here/../venv.sh"

ensure_venv "$here/requirements.txt"

cd "$repo"
exec "$venv/bin/python" -m pytest "$here" -q --timeout="${METRICS_TEST_TIMEOUT:-90}" "$@"
