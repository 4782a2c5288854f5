#!/usr/bin/env bash
# Memory suite: the memory alarm (connection.blocked for pika publishers, throttled
# kafka-python producers), a slow consumer, thousands of connections, connection and
# consumer caps. Each test starts its own broker with a small --memory-high-watermark and
# samples its RSS from /proc.
#   FERRYMQ_BIN=path/to/ferrymq tests/memory/run.sh      # default target/release/ferrymq
# Extra arguments are passed to pytest (e.g. -k flood, -x).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/venv.sh
. "$here/../venv.sh"

ensure_venv "$here/requirements.txt"

cd "$repo"
exec "$venv/bin/python" -m pytest "$here" -q --timeout="${MEMORY_TEST_TIMEOUT:-150}" "$@"
