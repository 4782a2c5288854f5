#!/usr/bin/env bash
# Longer kill -9 durability run: the e2e kill -9 test with many cycles.
#   bench/kill9-loop.sh [CYCLES]    (default 100; needs target/release/ferrymq)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export FERRYMQ_KILL9_CYCLES="${1:-100}"
export FERRYMQ_BIN="${FERRYMQ_BIN:-$PWD/target/release/ferrymq}"
export E2E_TEST_TIMEOUT=$((FERRYMQ_KILL9_CYCLES * 5 + 120))
exec bash tests/e2e/run.sh -k kill9_cycles -s
