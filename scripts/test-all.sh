#!/usr/bin/env bash
# The whole FerryMQ test suite: formatting and lints, Rust unit and integration tests
# (lapin against the real binary), the pika end-to-end suite, the management API suite,
# the web UI suite (Selenium, headless Chromium),
# the Kafka end-to-end suite (confluent-kafka, kafka-python, kcat), the security suite
# (users, vhosts, permissions, TLS, Kafka SASL), kombu's own py-amqp integration tests and the
# power-cut suite (root and /dev/fuse). Python
# clients are installed into ./.venv by the scripts they need. The slower Python suites
# print their slowest tests (--durations), to see which test nears its timeout.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

step() { printf '\n==== %s ====\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build --release (the binary the Python suites drive, and the power-cut file system)"
cargo build --release --locked -p ferrymq -p ferrymq-powercut

step "cargo test (unit tests, lapin integration tests against the real binary)"
cargo test --workspace --locked

export FERRYMQ_BIN="$repo/target/release/ferrymq"

step "pika end-to-end suite"
bash tests/e2e/run.sh --durations=8

step "management API end-to-end suite (requests, pika, kafka-python, classic rabbitmqadmin)"
bash tests/http/run.sh --durations=8

step "Prometheus metrics and ferrymq admin suite (prometheus_client, pika, kafka-python)"
bash tests/metrics/run.sh

step "web UI suite (Selenium in headless Chromium, pika, kafka-python)"
bash tests/ui/run.sh

step "Kafka end-to-end suite (confluent-kafka, kafka-python, kcat)"
bash tests/kafka/run.sh --durations=8

step "Kafka consumer groups end to end (confluent-kafka, kafka-python, kcat)"
"$repo/.venv/bin/python" tests/kafka-groups/groups_e2e.py "$FERRYMQ_BIN"

step "Security suite: users, vhosts, permissions, definitions, TLS, Kafka SASL (pika, confluent-kafka, kafka-python, kcat)"
bash tests/security/run.sh --durations=8

step "Memory suite: memory alarm (pika connection.blocked, kafka-python throttled), slow consumer, many connections, caps, assembly cap, held bytes, 90 s soak with kill -9"
bash tests/memory/run.sh --durations=8

step "librdkafka's own tests against ferrymq (tests/librdkafka/PASSING: 0011 produce batches, 0081 admin, 0103 transactions, 0129 aborted fetch, 0092 mixed message versions as a 3.x broker)"
bash tests/librdkafka/run.sh

step "librdkafka's KIP-848 tests (group.protocol=consumer, full mode: tests/librdkafka/PASSING-KIP848 0106 0118 0153, then 0045's two regex subtests)"
bash tests/librdkafka/run.sh --kip848

step "kombu py-amqp integration suite"
bash tests/kombu/run.sh

step "Power-cut suite: the broker under load on a FUSE file system that loses everything not fsynced (pika, confluent-kafka)"
bash tests/powercut/run.sh --durations=8

step "all tests passed"
