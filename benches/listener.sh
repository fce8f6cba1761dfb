#!/usr/bin/env bash
# Container vs bare consumer loop, 1M x 100 B, each as its own process under /usr/bin/time.
# Run against a broker: scripts/with-broker.sh benches/listener.sh (after cargo build --release --bench listener).
set -e
BIN=$(ls -t target/release/deps/listener-* | grep -v '\.d$' | head -1)
T=lbench-$$
$BIN fill $T 1000000
for i in 1 2 3; do
for m in consume listen; do
/usr/bin/time -f "$m wall=%e user=%U sys=%S maxrss_kb=%M" $BIN $m $T 1000000
done
done
