#!/usr/bin/env bash
# Run the management API end-to-end suite (requests, pika, kafka-python and Debian's
# classic rabbitmqadmin script against a FerryMQ binary; each test starts its own broker).
#   FERRYMQ_BIN=path/to/ferrymq tests/http/run.sh      # default target/release/ferrymq
#   RABBITMQADMIN=path/to/rabbitmqadmin tests/http/run.sh
# Extra arguments are passed to pytest (e.g. -k bindings, -x).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$repo/.venv"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$here/requirements.txt"

cd "$repo"
exec "$venv/bin/python" -m pytest "$here" -q --timeout="${HTTP_TEST_TIMEOUT:-90}" "$@"
