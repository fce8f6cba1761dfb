#!/usr/bin/env bash
# The whole test suite, on a fresh machine. Installs what it needs (Apache Kafka from Maven Central
# with OpenJDK 17 and Maven through apt when missing, librdkafka via Python's confluent-kafka, the
# musl target), starts a three-node Kafka cluster on loopback (scripts/kafka.sh, with SASL and TLS
# listeners), runs every test against it — broker-backed, interop and security tests included,
# which fail rather than skip without a cluster — then the broker suites again against the
# embedded mock cluster, the README demo and the static musl build.
#
#   scripts/test.sh
#
# Against another cluster (e.g. docker-compose.yml's): set REKAFKA_BOOTSTRAP (and, for the
# security tests, the other variables `scripts/kafka.sh env` prints) and the suite uses it
# instead of starting one. Tansu instead: REKAFKA_TEST_BROKER=tansu scripts/with-broker.sh ...
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
step() { printf '\n==== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
started=$SECONDS

step "setup"
scripts/setup.sh

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets --features rekafka/mock -- -D warnings
# The opt-in C zstd codec must keep compiling too.
cargo clippy -p rekafka --lib --features zstd-c -- -D warnings

step "feature sets and packaging"
cargo check -p rekafka --no-default-features
cargo check -p rekafka --no-default-features --features json
# The unstable protocol surface on its own (the workspace builds have it through `mock`), and
# the stable API without it, warnings denied (its items are crate-private there).
cargo clippy -p rekafka --no-default-features --features unstable-protocol -- -D warnings
cargo clippy -p rekafka --lib -- -D warnings
cargo clippy -p rekafka --features tls-ring -- -D warnings
# The other opt-in provider, aws-lc-rs (builds AWS-LC's C code with the system C compiler).
cargo clippy -p rekafka --features tls-aws-lc-rs -- -D warnings
# Manifests, include lists and metadata of both crates (the builds themselves are the rest of
# this script).
cargo publish --dry-run --no-verify --allow-dirty -p rekafka -p rekafka-cli

step "minimum supported Rust version"
# `rust-version` is the true MSRV: the library and the CLI build with that toolchain, where
# rustup can install it (elsewhere the README says how the MSRV was determined). `--locked`:
# the dependency versions this repository pins, which declare that MSRV or lower.
msrv="$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
if command -v rustup >/dev/null && rustup toolchain install "$msrv" --profile minimal; then
  cargo +"$msrv" check --locked -p rekafka -p rekafka-cli --all-targets --features rekafka/mock,rekafka/json
else
  echo "rustup cannot install Rust $msrv here; skipping the MSRV build (see the README)"
fi

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -p rekafka --quiet

step "build the tests and the interop harnesses"
cargo test --workspace --no-run --quiet
# The Java-client interop harness (kafka-clients of the broker's release) and the Spring for
# Apache Kafka conformance runner, built with Maven.
protocol-tests/java-interop/build.sh
protocol-tests/spring/build.sh
# The benchmark peers (benches/peers/): franz-go's driver, the kafka-clients latency and keyed produce drivers and
# the Python/bash glue, so the harness cannot rot between benchmark runs.
(cd benches/peers/franz && go vet ./... && go build -o /dev/null .)
mkdir -p target/peers/java
javac -cp '.tools/kafka/lib/*' -d target/peers/java benches/peers/java/PeersLatency.java benches/peers/java/PeersProduce.java
# Spring for Apache Kafka's container and dead-letter peer (the container and poison workloads).
(cd benches/peers/spring && mvn -q -B -DskipTests package)
python3 -m py_compile benches/peers/*.py
bash -n benches/peers/run.sh

mkdir -p target
log=target/test-output.log
: > "$log"

cluster_started=0
stop_cluster() {
  if [ "$cluster_started" = 1 ]; then
    step "stopping the Kafka cluster"
    scripts/kafka.sh stop || true
  fi
}
trap stop_cluster EXIT

step "the Kafka cluster"
if [ -n "${REKAFKA_BOOTSTRAP:-}" ]; then
  echo "using the cluster at REKAFKA_BOOTSTRAP=$REKAFKA_BOOTSTRAP"
else
  scripts/kafka.sh stop >/dev/null 2>&1 || true
  cluster_started=1
  scripts/kafka.sh start --nodes 3 --sasl --ssl
  eval "$(scripts/kafka.sh env)"
  scripts/kafka.sh status
fi
unset REKAFKA_TEST_BROKER

step "tests against Kafka"
# The failover suite (tests/failover_kafka.rs) runs on a three-node cluster of its own
# (target/kafka-failover), so it runs in the background beside the other suites: most of its
# time is spent waiting for brokers to restart and for timeouts. Its binary is run directly
# (a second `cargo test` would wait for the first one's lock), from the package root as cargo
# would. The soak (s9) runs 60 s of random faults here; FAILOVER_SOAK_SECS=600 for a longer one.
failover_bin="$(cargo test --workspace --no-run 2>&1 |
  sed -n 's|.*Executable tests/failover_kafka.rs (\(.*\))|\1|p')"
[ -x "$failover_bin" ] || { echo "no failover_kafka test binary" >&2; exit 1; }
FAILOVER_SOAK_SECS="${FAILOVER_SOAK_SECS:-60}" "$failover_bin" > target/failover-output.log 2>&1 &
failover_pid=$!
status=0
REKAFKA_FAILOVER=skip cargo test --workspace --no-fail-fast 2>&1 | tee -a "$log" || status=$?
echo "==== waiting for the failover suite"
failover_status=0
wait "$failover_pid" || failover_status=$?
tee -a "$log" < target/failover-output.log
if [ "$status" != 0 ] || [ "$failover_status" != 0 ]; then
  echo "tests against Kafka failed (suites: exit $status, failover: exit $failover_status)" >&2
  exit 1
fi

step "the same broker-backed suites against the embedded mock cluster"
# One suite, two brokers: every tests/*_broker.rs also runs against rekafka's mock cluster,
# started inside each test process.
suites=()
for f in tests/*_broker.rs; do suites+=(--test "$(basename "$f" .rs)"); done
REKAFKA_TEST_BROKER=mock cargo test -p rekafka --no-fail-fast "${suites[@]}" 2>&1 | tee -a "$log"

step "README demo"
# Exactly the README's first command: no broker configured, so it starts the embedded mock.
env -u REKAFKA_BOOTSTRAP cargo run --quiet --example demo --features mock | tee target/demo-output.txt
grep -q "committed" target/demo-output.txt

step "static musl build"
# With every C compiler made unreachable (CC and musl-gcc fail; the system linker driver stays):
# the default features (TLS on the pure-Rust graviola provider) need none. The dev profile:
# linking is what is checked here; an optimised build of every dependency for a second target
# would cost minutes.
nocc="$PWD/target/nocc"; mkdir -p "$nocc"
printf '#!/bin/sh\necho "C compiler called: $0 $*" >&2\nexit 1\n' > "$nocc/fail-cc"; chmod +x "$nocc/fail-cc"
for c in musl-gcc x86_64-linux-musl-gcc; do ln -sf fail-cc "$nocc/$c"; done
PATH="$nocc:$PATH" CC="$nocc/fail-cc" CC_x86_64_unknown_linux_musl="$nocc/fail-cc" TARGET_CC="$nocc/fail-cc" \
  cargo build --target x86_64-unknown-linux-musl -p rekafka -p rekafka-cli
bin=target/x86_64-unknown-linux-musl/debug/rekafka
if readelf -lW "$bin" | grep -q INTERP || readelf -dW "$bin" | grep -q NEEDED; then
  echo "error: $bin is not statically linked:" >&2
  readelf -dW "$bin" >&2
  exit 1
fi
"$bin" --help >/dev/null
echo "$bin is statically linked (no interpreter, no shared libraries) and runs"

step "fuzzing"
# Every fuzz target for a bounded time (scripts/fuzz.sh builds them with the stable toolchain,
# installing nothing); a crash fails the run. FUZZ_SECONDS=60 for a longer run.
scripts/fuzz.sh "${FUZZ_SECONDS:-10}"

step "all checks passed in $(( (SECONDS - started) / 60 )) min $(( (SECONDS - started) % 60 )) s"
# One closing line for the whole suite (cargo prints one summary per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1); if ($i ~ /^ignored/) s += $(i-1) } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
