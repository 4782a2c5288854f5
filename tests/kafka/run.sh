#!/usr/bin/env bash
# Run the Kafka end-to-end suite (confluent-kafka, kafka-python, kcat).
#   tests/kafka/run.sh                                        # starts target/release/ferrymq (or $FERRYMQ_BIN)
#   FERRYMQ_TEST_KAFKA_BOOTSTRAP=127.0.0.1:19092 tests/kafka/run.sh   # an external Kafka-protocol broker
# Extra arguments are passed to pytest (e.g. -k codec, -x).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/venv.sh
. "$here/../venv.sh"

ensure_venv "$here/requirements.txt"
command -v kcat >/dev/null || echo "warning: kcat not installed: its tests will be skipped (apt-get install -y kcat)" >&2

cd "$here"
exec "$venv/bin/python" -m pytest "$here" -q --timeout="${KAFKA_TEST_TIMEOUT:-90}" "$@"
