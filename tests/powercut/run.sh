#!/usr/bin/env bash
# Run the power-cut suite: the real broker on a FUSE file system that models power loss
# (crates/ferrymq-powercut). Needs root and /dev/fuse.
#   FERRYMQ_BIN=path/to/ferrymq FERRYMQ_POWERCUT_BIN=path/to/ferrymq-powercut tests/powercut/run.sh
# Defaults: target/release/ferrymq and target/release/ferrymq-powercut (built if missing).
# Extra arguments are passed to pytest (e.g. -k early, -x).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/venv.sh
. "$here/../venv.sh"

if [ -z "${FERRYMQ_POWERCUT_BIN:-}" ] && [ ! -x "$repo/target/release/ferrymq-powercut" ]; then
    (cd "$repo" && cargo build --release --locked -p ferrymq-powercut)
fi
ensure_venv "$here/requirements.txt"

cd "$here"
exec "$venv/bin/python" -m pytest "$here" -q --timeout="${POWERCUT_TEST_TIMEOUT:-180}" "$@"
