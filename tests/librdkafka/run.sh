#!/usr/bin/env bash
# Run librdkafka's own broker tests (its tests/ test-runner) against a real ferrymq.
#   tests/librdkafka/run.sh 0011 0103 0129     # these tests (numbers or name prefixes)
#   tests/librdkafka/run.sh                    # the list in tests/librdkafka/PASSING
#                                              # (per-test VAR=value words set env)
#   tests/librdkafka/run.sh --build-only       # fetch and build, run nothing
#   tests/librdkafka/run.sh --kip848           # the KIP-848 list (PASSING-KIP848) with
#                                              # TEST_CONSUMER_GROUP_PROTOCOL=consumer
# The librdkafka source comes from the rdkafka-sys crate (cargo fetches it from
# crates.io into ~/.cargo); it is built once under target/librdkafka/ (cached).
# Environment:
#   FERRYMQ_BIN               broker binary (default target/release/ferrymq)
#   TEST_KAFKA_VERSION        broker version the tests assume (default 4.0.0, the
#                             ApiVersions ranges ferrymq advertises)
#   LIBRDKAFKA_TEST_ARGS      test-runner options (default "-p1 -Q": one at a time, quick mode)
#   LIBRDKAFKA_TIMEOUT_MULT   test.timeout.multiplier (default 2: a busy 2-core machine)
#   TEST_DEBUG, TEST_LEVEL, SUBTESTS ... are read by the test-runner itself.
# Exit status: the test-runner's (0 when every test run passed).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

RDKAFKA_SYS_VERSION="4.10.0+2.12.1"   # librdkafka 2.12.1
LIBRDKAFKA_VERSION="${RDKAFKA_SYS_VERSION#*+}"
cache="$repo/target/librdkafka"
src="$cache/librdkafka-$LIBRDKAFKA_VERSION"
bin="${FERRYMQ_BIN:-$repo/target/release/ferrymq}"
jobs="${LIBRDKAFKA_BUILD_JOBS:-2}"

log() { echo "librdkafka-tests: $*" >&2; }

# ---------------------------------------------------------------- fetch the source
fetch_source() {
    [ -f "$src/configure" ] && return 0
    log "fetching rdkafka-sys $RDKAFKA_SYS_VERSION with cargo"
    local proj="$cache/fetch"
    mkdir -p "$proj/src"
    cat > "$proj/Cargo.toml" <<EOF
[package]
name = "rdk-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
rdkafka-sys = { version = "=$RDKAFKA_SYS_VERSION", default-features = false }
EOF
    : > "$proj/src/lib.rs"
    (cd "$proj" && cargo fetch -q)
    local crate
    crate="$(ls -1 "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"rdkafka-sys-$RDKAFKA_SYS_VERSION.crate" | head -n1)"
    [ -f "$crate" ] || { log "cargo fetch did not leave rdkafka-sys-$RDKAFKA_SYS_VERSION.crate"; exit 1; }
    local tmp="$cache/extract.$$"
    rm -rf "$tmp" && mkdir -p "$tmp"
    tar -xzf "$crate" -C "$tmp"
    rm -rf "$src"
    mv "$tmp/rdkafka-sys-$RDKAFKA_SYS_VERSION/librdkafka" "$src"
    rm -rf "$tmp"
}

# ---------------------------------------------------------------- build (cached)
build() {
    local stamp="$src/tests/.ferrymq-built"
    if [ -f "$stamp" ] && [ -x "$src/tests/test-runner" ]; then
        return 0
    fi
    log "building librdkafka $LIBRDKAFKA_VERSION and its test-runner (once; a few minutes)"
    (
        cd "$src"
        if [ ! -f Makefile.config ]; then
            ./configure --disable-gssapi --disable-curl --disable-sasl >"$cache/configure.log" 2>&1 \
                || { tail -n 30 "$cache/configure.log" >&2; exit 1; }
        fi
        make -j"$jobs" libs >"$cache/build.log" 2>&1 || { tail -n 30 "$cache/build.log" >&2; exit 1; }
        # The interceptor plugin with its own flags, then the ~190 test files unoptimised
        # and without warnings (several times faster to build).
        make -C tests/interceptor_test >>"$cache/build.log" 2>&1 \
            || { tail -n 30 "$cache/build.log" >&2; exit 1; }
        make -C tests -j"$jobs" test-runner CPPFLAGS="-O0 -fPIC -w" >>"$cache/build.log" 2>&1 \
            || { tail -n 30 "$cache/build.log" >&2; exit 1; }
    )
    touch "$stamp"
}

fetch_source
build
if [ "${1:-}" = "--build-only" ]; then
    log "built: $src/tests/test-runner"
    exit 0
fi
if [ "${1:-}" = "--kip848" ]; then
    # librdkafka's KIP-848 tests against a real broker, in full mode (their subtests are
    # not "quick" ones): the tests listed in PASSING-KIP848, then 0045's two regex
    # subtests alone (do_test_regex and do_test_resubscribe_with_regex: SUBTESTS is a
    # substring of the subtest names "<function>:<line>..."; the rest of 0045 is
    # mock-cluster work or subscribe_many_updates, see README.md), each on a fresh broker.
    export TEST_CONSUMER_GROUP_PROTOCOL=consumer
    export LIBRDKAFKA_TEST_ARGS="${LIBRDKAFKA_TEST_ARGS:--p1}"
    mapfile -t kip848 < <(grep -v '^\s*#' "$here/PASSING-KIP848" | awk 'NF {print $1}')
    "${BASH_SOURCE[0]}" "${kip848[@]}" || exit $?
    SUBTESTS="_regex:" exec "${BASH_SOURCE[0]}" 0045
fi

# ---------------------------------------------------------------- which tests
# Each run of the test-runner gets a list of tests and extra environment: from the
# arguments one run with the caller's environment; from PASSING one run per distinct set
# of VAR=value words after the test number (e.g. `0092 TEST_KAFKA_VERSION=3.9.0`).
declare -a run_envs=() run_tests=()
if [ $# -gt 0 ]; then
    run_envs+=("")
    run_tests+=("$(IFS=,; echo "$*")")
else
    while read -r num rest; do
        envs="$(tr ' ' '\n' <<<"$rest" | grep -E '^[A-Z_][A-Z0-9_]*=' | sort | tr '\n' ' ' | sed 's/ $//' || true)"
        found=""
        for i in "${!run_envs[@]}"; do
            if [ "${run_envs[$i]}" = "$envs" ]; then
                run_tests[i]="${run_tests[$i]},$num"; found=1; break
            fi
        done
        [ -n "$found" ] || { run_envs+=("$envs"); run_tests+=("$num"); }
    done < <(sed 's/#.*//' "$here/PASSING" | awk 'NF')
fi
[ ${#run_tests[@]} -gt 0 ] || { log "no tests named"; exit 2; }

# ---------------------------------------------------------------- start ferrymq
[ -x "$bin" ] || { log "no broker binary at $bin (cargo build --release -p ferrymq)"; exit 1; }
work="$(mktemp -d "${TMPDIR:-/tmp}/ferrymq-librdkafka.XXXXXX")"
broker_pid=""
cleanup() {
    if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
        kill "$broker_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$broker_pid" 2>/dev/null || true
    fi
    if [ "${KEEP_WORK:-0}" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# librdkafka's default scenario: topic auto-creation on, 4 partitions, replication
# factor 3 asked by the tests (a one-node ferrymq keeps 1 replica).
"$bin" serve --data-dir "$work/data" --amqp-port 0 --kafka-port 0 --http-port 0 \
    --prometheus-port 0 --kafka-auto-create-topics true --kafka-default-partitions 4 >"$work/broker.log" 2>&1 &
broker_pid=$!
kport=""
for _ in $(seq 300); do
    kport="$(sed -n 's/^ferrymq: kafka listening on .*:\([0-9][0-9]*\)\s*$/\1/p' "$work/broker.log" | head -n1)"
    [ -n "$kport" ] && break
    kill -0 "$broker_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$kport" ]; then
    log "ferrymq did not open its Kafka listener:"; tail -n 30 "$work/broker.log" >&2; exit 1
fi
log "ferrymq (pid $broker_pid) kafka on 127.0.0.1:$kport"

cat > "$work/test.conf" <<EOF
bootstrap.servers=127.0.0.1:$kport
test.timeout.multiplier=${LIBRDKAFKA_TIMEOUT_MULT:-2}
EOF

# ---------------------------------------------------------------- run
rc=0
for i in "${!run_tests[@]}"; do
    log "tests ${run_tests[$i]}${run_envs[$i]:+ with ${run_envs[$i]}}"
    set +e
    (
        cd "$src/tests"
        export LD_LIBRARY_PATH="$src/src:$src/src-cpp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        export RDKAFKA_TEST_CONF="$work/test.conf" TESTS="${run_tests[$i]}"
        export TEST_KAFKA_VERSION="${TEST_KAFKA_VERSION:-4.0.0}"
        export RDKAFKA_GITVER="v$LIBRDKAFKA_VERSION"
        for kv in ${run_envs[$i]}; do export "${kv?}"; done
        # shellcheck disable=SC2086
        exec ./test-runner ${LIBRDKAFKA_TEST_ARGS:--p1 -Q}
    )
    r=$?
    set -e
    [ "$r" = 0 ] || rc=$r
done
if ! kill -0 "$broker_pid" 2>/dev/null; then
    log "ferrymq exited during the run:"; tail -n 30 "$work/broker.log" >&2; rc=1
fi
if [ "$rc" != 0 ]; then
    log "failed (exit $rc); broker log tail:"; tail -n 15 "$work/broker.log" >&2
fi
exit "$rc"
