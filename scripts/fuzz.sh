#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (libFuzzer through libfuzzer-sys) for a bounded time each.
#
#   scripts/fuzz.sh [SECONDS]      # SECONDS per target, default 60
#   FUZZ_TARGETS="frames sasl_scram" scripts/fuzz.sh 10
#
# Builds the targets once with the stable toolchain and the same instrumentation cargo-fuzz
# uses (SanitizerCoverage passes, `--cfg fuzzing`, debug assertions; release mode), so nothing
# has to be installed: no nightly, no cargo-fuzz. No sanitizer by default (the code under test
# is safe Rust; libFuzzer still finds panics, overflows, hangs and runaway memory:
# -rss_limit_mb). FUZZ_SANITIZER=address adds ASan, which needs the nightly toolchain
# (installed with rustup when missing, minimal profile) and builds much more slowly.
# `cargo fuzz run <target>` still works too (fuzz/Cargo.toml is a cargo-fuzz crate).
#
# A crash stops the script with a non-zero exit; the input is in fuzz/artifacts/<target>/:
# keep it under tests/corpus/ (frames/ or record/, or the target's own directory with a test
# that replays it) once fixed.
#
# Time on 2 cores: about 3 minutes of build the first time, then SECONDS per target.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: scripts/fuzz.sh [SECONDS]" >&2
    exit 2
fi
sanitizer="${FUZZ_SANITIZER:-none}"
host="$(rustc -vV | sed -n 's/^host: //p')"
flags=(
    -Cpasses=sancov-module
    -Cllvm-args=-sanitizer-coverage-level=4
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
    -Cllvm-args=-sanitizer-coverage-pc-table
    -Cllvm-args=-sanitizer-coverage-trace-compares
    --cfg fuzzing
    -Cdebug-assertions
    -Cforce-frame-pointers
)
toolchain=()
case "$sanitizer" in
    none) ;;
    address)
        if ! rustup run nightly rustc --version >/dev/null 2>&1; then
            echo "==== installing the nightly toolchain (ASan needs it)"
            rustup toolchain install nightly --profile minimal
        fi
        toolchain=(+nightly)
        flags+=(-Zsanitizer=address)
        ;;
    *)
        echo "FUZZ_SANITIZER must be none or address" >&2
        exit 2
        ;;
esac

cd fuzz
targets="${FUZZ_TARGETS:-$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^rekafka-fuzz$')}"
echo "==== building the fuzz targets (sanitizer: $sanitizer)"
# `--target` keeps the instrumentation away from build scripts and proc macros.
RUSTFLAGS="${flags[*]}" cargo "${toolchain[@]}" build --release --target "$host" --bins \
    --target-dir "target/$sanitizer"
for t in $targets; do
    echo "==== fuzzing $t for ${seconds}s"
    mkdir -p "corpus/$t" "artifacts/$t"
    # Seeds: the hostile inputs kept in the repository.
    seeds=()
    case "$t" in
        frames | fetch_response | produce_response) seeds+=(../tests/corpus/frames) ;;
        record_batch) seeds+=(../tests/corpus/record) ;;
    esac
    if [ -d "../tests/corpus/$t" ]; then
        seeds+=("../tests/corpus/$t")
    fi
    "target/$sanitizer/$host/release/$t" "corpus/$t" "${seeds[@]}" \
        -artifact_prefix="artifacts/$t/" -max_total_time="$seconds" -rss_limit_mb=2048 \
        -timeout=10 -print_final_stats=1
done
echo "==== fuzzing done: no crash"
