#!/usr/bin/env bash
# Run the web UI suite: Selenium drives Debian's headless Chromium (`chromium`,
# `chromium-driver`) against a FerryMQ binary, with pika and kafka-python as the clients
# whose traffic the UI must show.
#   FERRYMQ_BIN=path/to/ferrymq tests/ui/run.sh      # default target/release/ferrymq
#   CHROMIUM=/usr/bin/chromium CHROMEDRIVER=/usr/bin/chromedriver tests/ui/run.sh
# Extra arguments are passed to pytest (e.g. -k login, -x).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tests/venv.sh
. "$here/../venv.sh"

ensure_venv "$here/requirements.txt"

cd "$repo"
exec "$venv/bin/python" -m pytest "$here" -q --timeout="${UI_TEST_TIMEOUT:-90}" "$@"
