#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder with cargo-afl (AFL++), stable toolchain.
#   fuzz/run.sh [MINUTES [TARGET...]]     (default 10 minutes, every target, in parallel)
# Needs `cargo install cargo-afl` and `cargo afl config --build` once. Each target fuzzes
# from fuzz/corpus/<target>/ (nice -n 19), then fuzz/cmin.py minimises its queue (with the old corpus) back into
# fuzz/corpus/<target>/; crashes are copied to fuzz/artifacts/<target>/. A summary line per
# target (execs, corpus, edges, crashes) goes to stdout and fuzz/out/summary.txt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
minutes="${1:-10}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(amqp_frame amqp_method amqp_content_header kafka_request kafka_record_batch kafka_sasl)
fi
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1 \
    AFL_NO_UI=1 AFL_QUIET=1
nice -n 19 cargo afl build --release ${targets[@]/#/--bin }
mkdir -p out
for t in "${targets[@]}"; do
    rm -rf "out/$t"
    nice -n 19 cargo afl fuzz -i "corpus/$t" -o "out/$t" -V $((minutes * 60)) \
        "target/release/$t" > "out/$t.log" 2>&1 &
done
wait
: > out/summary.txt
for t in "${targets[@]}"; do
    st="out/$t/default/fuzzer_stats"
    field() { awk -F' *: *' -v k="$1" '$1==k {print $2}' "$st"; }
    crashes=$(field saved_crashes)
    if [ "${crashes:-0}" != 0 ]; then
        mkdir -p "artifacts/$t"
        cp out/$t/default/crashes/id* "artifacts/$t/"
    fi
    # afl-cmin's own probe finds no instrumentation in afl.rs's persistent targets; the
    # same minimisation over afl-showmap's batch mode (fuzz/cmin.py) keeps the seeds too.
    nice -n 19 ./cmin.py "target/release/$t" "corpus/$t" "out/$t/default/queue" \
        -o "corpus/$t" > "out/$t.cmin.log" 2>&1
    line="$t: $(( $(field run_time) / 60 )) min, execs $(field execs_done), corpus $(field corpus_count) -> $(ls corpus/$t | wc -l) after cmin, edges $(field edges_found)/$(field total_edges) ($(field bitmap_cvg)), crashes $crashes, hangs $(field saved_hangs)"
    echo "$line" | tee -a out/summary.txt
done
