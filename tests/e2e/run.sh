#!/usr/bin/env bash
# Run the pika end-to-end suite.
#   FERRYMQ_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5673/%2f tests/e2e/run.sh   # external broker
#   FERRYMQ_BIN=path/to/ferrymq tests/e2e/run.sh                                   # default target/release/ferrymq
# Extra arguments are passed to pytest (e.g. -k topic, -x).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/venv.sh
. "$here/../venv.sh"

ensure_venv "$here/requirements.txt"

cd "$repo"
exec "$venv/bin/python" -m pytest "$here" -q --timeout="${E2E_TEST_TIMEOUT:-60}" "$@"
