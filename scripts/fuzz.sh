#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time each, installing what it needs.
#
#   scripts/fuzz.sh [SECONDS]      # SECONDS per target, default 60
#   FUZZ_TARGETS="frames sasl_scram" scripts/fuzz.sh 10
#
# Uses the nightly toolchain (installed with rustup when missing, minimal profile); cargo-fuzz
# is installed into .tools/cargo (project-local) when missing. Targets are built once, in release mode with debug
# assertions and without a sanitizer (the code under test is safe Rust; libFuzzer still finds
# panics, overflows, hangs and runaway memory: -rss_limit_mb). FUZZ_SANITIZER=address switches
# ASan on (a much slower build). A crash stops the script with a non-zero exit; the input is in
# fuzz/artifacts/<target>/: keep it under tests/corpus/ (frames/ or record/, or the target's
# own directory with a test that replays it) once fixed.
#
# Time: about 2–4 minutes of build on 2 cores the first time, then SECONDS per target
# (6 targets: 6 minutes at the default).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: scripts/fuzz.sh [SECONDS]" >&2
    exit 2
fi
sanitizer="${FUZZ_SANITIZER:-none}"
root="$PWD/.tools/cargo"
export PATH="$root/bin:$PATH"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "==== installing the nightly toolchain (cargo-fuzz needs it)"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo-fuzz --version >/dev/null 2>&1; then
    echo "==== installing cargo-fuzz into $root"
    cargo install cargo-fuzz --locked --root "$root"
fi

cd fuzz
targets="${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"
echo "==== building the fuzz targets (sanitizer: $sanitizer)"
cargo +nightly fuzz build -O --debug-assertions --sanitizer "$sanitizer"
for t in $targets; do
    echo "==== fuzzing $t for ${seconds}s"
    mkdir -p "corpus/$t"
    # Seeds: the hostile inputs kept in the repository.
    seeds=()
    case "$t" in
        frames | fetch_response | produce_response) seeds+=(../tests/corpus/frames) ;;
        record_batch) seeds+=(../tests/corpus/record) ;;
    esac
    if [ -d "../tests/corpus/$t" ]; then
        seeds+=("../tests/corpus/$t")
    fi
    cargo +nightly fuzz run -O --debug-assertions --sanitizer "$sanitizer" "$t" \
        "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
done
echo "==== fuzzing done: no crash"
