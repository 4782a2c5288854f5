#!/usr/bin/env bash
# Run kombu's own py-amqp integration tests (t/integration/test_py_amqp.py from
# the pinned kombu sdist) against FerryMQ, or against FERRYMQ_TEST_AMQP_URL.
#   tests/kombu/run.sh                                   # starts target/release/ferrymq (or FERRYMQ_BIN)
#   FERRYMQ_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:5673/%2f tests/kombu/run.sh
#   KOMBU_NO_DESELECT=1 ...    also run the tests listed in tests/kombu/deselect.txt
# Extra arguments are passed to pytest (default -q).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/venv.sh
. "$here/../venv.sh"

ensure_venv "$here/requirements.txt"

exec "$venv/bin/python" "$here/run_kombu.py" "$@"
