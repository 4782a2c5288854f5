#!/usr/bin/env bash
# Run the management API end-to-end suite (requests, pika, kafka-python and Debian's
# classic rabbitmqadmin script against a FerryMQ binary; each test starts its own broker).
#   FERRYMQ_BIN=path/to/ferrymq tests/http/run.sh      # default target/release/ferrymq
#   RABBITMQADMIN=path/to/rabbitmqadmin tests/http/run.sh
# Extra arguments are passed to pytest (e.g. -k bindings, -x).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/venv.sh
. "$here/../venv.sh"

ensure_venv "$here/requirements.txt"

cd "$repo"
exec "$venv/bin/python" -m pytest "$here" -q --timeout="${HTTP_TEST_TIMEOUT:-90}" "$@"
