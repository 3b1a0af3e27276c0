#!/usr/bin/env bash
# Runs the cargo-fuzz (libFuzzer) targets in fuzz/ on the stable toolchain.
#
#   scripts/fuzz.sh TARGET [SECONDS]     one target (default 120 s)
#   scripts/fuzz.sh all [SECONDS]        every target in turn, SECONDS each
#   scripts/fuzz.sh list                 the targets
#   scripts/fuzz.sh regressions          replay fuzz/regressions/TARGET/* (must not crash)
#   scripts/fuzz.sh save-corpus TARGET|all   merge the scratch corpus into fuzz/corpus/
#
# libFuzzer needs `-Zsanitizer=...`, a nightly flag; RUSTC_BOOTSTRAP=1 makes the stable
# compiler accept it. AddressSanitizer works on stable that way; FUZZ_SANITIZER=none turns
# it off (faster, but catches less in the journal reader's mmap code).
#
# Environment:
#   CARGO_TARGET_DIR      build directory (default /var/tmp/logferry-fuzz-target)
#   FUZZ_SANITIZER        address (default) or none
#   FUZZ_WORK             scratch corpora and logs (default /var/tmp/logferry-fuzz)
#   FUZZ_SAVE_CORPUS=1    after the run, merge what was found into fuzz/corpus/TARGET,
#                         keeping only inputs that add coverage (at most 50 files, small;
#                         12 for journal_file, whose inputs are ~40 KB journal files)
#   FUZZ_ARGS             extra libFuzzer arguments
#
# One fuzzer at a time, one job (-jobs=1): the machine's two cores are shared. New inputs go
# to a scratch corpus, never to the repository, unless FUZZ_SAVE_CORPUS=1. Crashes are written
# to fuzz/artifacts/TARGET/ (not committed); minimise with
#   RUSTC_BOOTSTRAP=1 cargo fuzz tmin -O TARGET fuzz/artifacts/TARGET/crash-...
# and keep the result under fuzz/regressions/TARGET/. scripts/fuzz.sh regressions replays them.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FUZZ_DIR=$ROOT/fuzz
TARGETS=(syslog_codec journal_file spool_recovery config_parser cloudwatch_batcher container_lines)

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/logferry-fuzz-target}
export RUSTC_BOOTSTRAP=1
SANITIZER=${FUZZ_SANITIZER:-address}
WORK=${FUZZ_WORK:-/var/tmp/logferry-fuzz}
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
BIN_DIR=$CARGO_TARGET_DIR/$TRIPLE/release

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

max_len() {
    case $1 in
        journal_file) echo 65536 ;;  # the seeds are ~39 KB journal files
        *) echo 4096 ;;
    esac
}

ensure_cargo_fuzz() {
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "== installing cargo-fuzz (a few minutes, once)"
        cargo install cargo-fuzz --locked
    fi
}

build() {
    echo "== building fuzz targets (sanitizer: $SANITIZER; the first build takes ~10 minutes)"
    (cd "$WORK" && cargo fuzz build --fuzz-dir "$FUZZ_DIR" -O -s "$SANITIZER" "$@")
}

# Summary fields from a libFuzzer log.
stat() { sed -n "s/^stat::$1: *//p" "$2" | tail -1; }

run_one() {
    local target=$1 seconds=$2
    local corpus=$WORK/corpus/$target
    local logs=$WORK/logs/$target
    local artifacts=$FUZZ_DIR/artifacts/$target
    mkdir -p "$corpus" "$logs" "$artifacts"
    local before
    before=$(find "$artifacts" -type f | sort)
    echo "== $target: ${seconds}s"
    local rc=0
    # -jobs=1 runs one worker whose output goes to fuzz-0.log in the current directory.
    (cd "$logs" && rm -f fuzz-0.log &&
        cargo fuzz run --fuzz-dir "$FUZZ_DIR" -O -s "$SANITIZER" "$target" \
            "$corpus" "$FUZZ_DIR/corpus/$target" -- \
            -jobs=1 -max_total_time="$seconds" -max_len="$(max_len "$target")" \
            -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 ${FUZZ_ARGS:-} \
            >"$logs/cargo-fuzz.log" 2>&1) || rc=$?
    local log=$logs/fuzz-0.log
    [ -f "$log" ] || log=$logs/cargo-fuzz.log
    local execs rate
    execs=$(stat number_of_executed_units "$log")
    rate=$(stat average_exec_per_sec "$log")
    if [ -z "$execs" ]; then
        # Stopped by a crash: the last status line has the count so far.
        execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
        rate=$(grep -o 'exec/s: [0-9]*' "$log" | tail -1 | sed 's/exec\/s: //')
    fi
    local found
    found=$(comm -13 <(echo "$before") <(find "$artifacts" -type f | sort) | sed '/^$/d')
    local n
    n=$(printf '%s' "$found" | grep -c . || true)
    printf '%-20s executions: %-10s exec/s: %-8s findings: %s\n' \
        "$target" "${execs:-?}" "${rate:-?}" "$n"
    if [ -n "$found" ]; then
        printf '    %s\n' $found
        grep -m1 -A3 -E "panicked at|ERROR: AddressSanitizer|ERROR: libFuzzer" "$log" | sed 's/^/    /' || true
    elif [ "$rc" -ne 0 ]; then
        echo "    cargo fuzz exited $rc; see $logs/cargo-fuzz.log and $log"
        tail -5 "$logs/cargo-fuzz.log" | sed 's/^/    /'
    fi
    echo "    corpus: $(find "$corpus" -type f | wc -l) new inputs in $corpus; log: $log"
    if [ "${FUZZ_SAVE_CORPUS:-0}" = 1 ]; then save_corpus "$target"; fi
    [ "$n" -eq 0 ] && [ "$rc" -eq 0 ]
}

# Merges the scratch corpus into the repository's, keeping the seeds and at most 50 files.
save_corpus() {
    local target=$1
    local repo=$FUZZ_DIR/corpus/$target merged=$WORK/merged/$target cap=50
    [ "$target" = journal_file ] && cap=12
    mkdir -p "$WORK/logs/$target"
    rm -rf "$merged" && mkdir -p "$merged"
    cp "$repo"/seed-* "$merged"/ 2>/dev/null || true
    "$BIN_DIR/$target" -merge=1 -max_len="$(max_len "$target")" -rss_limit_mb=2048 \
        "$merged" "$repo" "$WORK/corpus/$target" >"$WORK/logs/$target/merge.log" 2>&1
    # Keep the seeds, then the smallest of the rest up to 50 files.
    find "$repo" -type f ! -name 'seed-*' -delete
    find "$merged" -type f ! -name 'seed-*' -printf '%s %p\n' | sort -n |
        awk -v n=$((cap - $(find "$repo" -name 'seed-*' | wc -l))) 'NR <= n' | cut -d' ' -f2- |
        while read -r f; do cp "$f" "$repo"/; done
    echo "    saved: $(find "$repo" -type f | wc -l) files in fuzz/corpus/$target"
}

replay_regressions() {
    local status=0 t
    for t in "${TARGETS[@]}"; do
        local dir=$FUZZ_DIR/regressions/$t
        [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ] || continue
        if "$BIN_DIR/$t" -runs=0 "$dir"/* >"$WORK/logs/regressions-$t.log" 2>&1; then
            echo "$t: $(ls "$dir" | wc -l) regression inputs pass"
        else
            echo "$t: a regression input fails, see $WORK/logs/regressions-$t.log"
            status=1
        fi
    done
    return $status
}

[ $# -ge 1 ] || usage
what=$1
seconds=${2:-120}
case $seconds in *[!0-9]*) [ "$what" = save-corpus ] || usage ;; esac
mkdir -p "$WORK/logs"
case $what in
    list) printf '%s\n' "${TARGETS[@]}"; exit 0 ;;
    all) selected=("${TARGETS[@]}") ;;
    regressions) selected=() ;;
    save-corpus)
        case ${2:-} in
            all) selected=("${TARGETS[@]}") ;;
            *) selected=("${2:?save-corpus TARGET|all}") ;;
        esac
        ;;
    *)
        printf '%s\n' "${TARGETS[@]}" | grep -qx "$what" || { echo "unknown target $what"; usage; }
        selected=("$what")
        ;;
esac

ensure_cargo_fuzz
if [ "$what" = regressions ]; then
    build
    replay_regressions
    exit
fi
if [ "$what" = save-corpus ]; then
    build
    for t in "${selected[@]}"; do echo "== $t"; save_corpus "$t"; done
    exit
fi
build
status=0
for t in "${selected[@]}"; do
    run_one "$t" "$seconds" || status=1
done
exit $status
