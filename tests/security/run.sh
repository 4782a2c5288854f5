#!/usr/bin/env bash
# Run the security suite (users, vhosts, permissions, definitions, TLS, Kafka SASL) with
# pika, confluent-kafka, kafka-python and kcat against brokers it starts itself.
#   tests/security/run.sh                               # target/release/ferrymq (or $FERRYMQ_BIN)
#   FERRYMQ_BIN=path/to/ferrymq tests/security/run.sh -k tls -x   # extra args go to pytest
# Guest-from-a-remote-address tests need a non-loopback IPv4 address on this host; without
# one they create a dummy interface (root and iproute2 needed) or are skipped.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/venv.sh
. "$here/../venv.sh"

ensure_venv "$here/requirements.txt"
command -v kcat >/dev/null || echo "warning: kcat not installed: its tests will be skipped (apt-get install -y kcat; .ci/run does it)" >&2

cd "$here"
exec "$venv/bin/python" -m pytest "$here" -q --timeout="${SECURITY_TEST_TIMEOUT:-90}" "$@"
