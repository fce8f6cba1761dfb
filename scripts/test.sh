#!/usr/bin/env bash
# The whole test suite, on a fresh machine. Installs what it needs (the pinned Tansu broker,
# librdkafka via Python's confluent-kafka, the musl target), starts a broker, runs every test —
# broker-backed and interop tests included, which fail rather than skip without a broker — and
# checks the static musl build.
#
#   scripts/test.sh
#
# Against another broker (e.g. Apache Kafka from docker-compose.yml): set REKAFKA_BOOTSTRAP and
# the suite uses it instead of starting Tansu.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
step() { printf '\n==== %s\n' "$*"; }

step "setup"
scripts/setup.sh

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets --features rekafka/mock -- -D warnings
# The opt-in C zstd codec must keep compiling too.
cargo clippy -p rekafka --lib --features zstd-c -- -D warnings

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p rekafka --quiet

step "tests"
mkdir -p target
log=target/test-output.log
if [ -n "${REKAFKA_BOOTSTRAP:-}" ]; then
  echo "using the broker at REKAFKA_BOOTSTRAP=$REKAFKA_BOOTSTRAP"
  cargo test --workspace 2>&1 | tee "$log"
else
  scripts/with-broker.sh cargo test --workspace 2>&1 | tee "$log"
fi

step "the same broker-backed suites against the embedded mock cluster"
# One suite, two brokers: every tests/*_broker.rs also runs against rekafka's mock cluster
# (Kafka's behaviour where Tansu differs), started inside each test process.
suites=()
for f in tests/*_broker.rs; do suites+=(--test "$(basename "$f" .rs)"); done
REKAFKA_TEST_BROKER=mock cargo test -p rekafka "${suites[@]}" 2>&1 | tee -a "$log"

step "README demo"
# Exactly the README's first command: no broker configured, so it starts the embedded mock.
env -u REKAFKA_BOOTSTRAP cargo run --quiet --example demo --features mock | tee target/demo-output.txt
grep -q "committed" target/demo-output.txt

step "static musl build"
cargo build --release --target x86_64-unknown-linux-musl -p rekafka -p rekafka-cli
bin=target/x86_64-unknown-linux-musl/release/rekafka
if readelf -lW "$bin" | grep -q INTERP || readelf -dW "$bin" | grep -q NEEDED; then
  echo "error: $bin is not statically linked:" >&2
  readelf -dW "$bin" >&2
  exit 1
fi
"$bin" --help >/dev/null
echo "$bin is statically linked (no interpreter, no shared libraries) and runs"

step "all checks passed"
# One closing line for the whole suite (cargo prints one summary per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1); if ($i ~ /^ignored/) s += $(i-1) } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
