#!/usr/bin/env bash
# Producer benchmark: rekafka `perf produce` beside librdkafka (kcat -P) in the same run.
#
#   scripts/with-broker.sh benches/produce_vs_librdkafka.sh [RUNS]
#
# 1M records of 100 B, acks=all, idempotent, linger 5 ms, 3 partitions, one fresh topic per run.
# Reports wall time, records/s, client CPU seconds (user+sys) and peak RSS from /usr/bin/time.
# kcat is Debian's (apt-get install -y kcat); Debian's librdkafka 2.0.2 cannot talk to Tansu
# (its ApiVersions exchange fails with "Read underflow"), so kcat is run against the newer
# librdkafka bundled with confluent-kafka in .tools/py (LD_LIBRARY_PATH).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNS="${1:-3}"
B="${REKAFKA_BOOTSTRAP:?run through scripts/with-broker.sh}"
cd "$ROOT"
cargo build --release -q -p rekafka-cli
LINES="$ROOT/target/lines-1m-100b.txt"
[ -f "$LINES" ] || python3 -c "import sys; sys.stdout.write(('x'*100+'\n')*1000000)" > "$LINES"
LIB="$ROOT/target/rdkafka-lib"
mkdir -p "$LIB"
ln -sf "$(ls "$ROOT"/.tools/py/confluent_kafka.libs/librdkafka-*.so.1 | head -1)" "$LIB/librdkafka.so.1"
create() { PYTHONPATH="$ROOT/.tools/py" python3 protocol-tests/interop/create_topic.py "$B" "$1" 3; }
measure() { # name, command...
  local name="$1"; shift
  local t0 t1 out
  t0=$(date +%s.%N)
  out=$( { /usr/bin/time -f "TIME %U %S %M" "$@" >/dev/null; } 2>&1 | grep '^TIME' )
  t1=$(date +%s.%N)
  read -r _ user sys rss <<<"$out"
  python3 - "$name" "$t0" "$t1" "$user" "$sys" "$rss" <<'PY'
import sys
name, t0, t1, user, sys_, rss = sys.argv[1:]
secs = float(t1) - float(t0)
print(f"{name:34s} secs={secs:6.2f} rec_per_s={1e6/secs:9.0f} cpu_s={float(user)+float(sys_):5.2f} rss_mb={int(rss)/1024:6.1f}")
PY
}
for run in $(seq 1 "$RUNS"); do
  t="bench-kcat-$run-$$"; create "$t"
  measure "librdkafka (kcat -P)" env LD_LIBRARY_PATH="$LIB" kcat -P -b "$B" -t "$t" \
    -X enable.idempotence=true -X acks=all -X linger.ms=5 -l "$LINES"
  t="bench-rk-default-$run-$$"; create "$t"
  measure "rekafka defaults (batch 16 KiB)" target/release/rekafka perf produce -b "$B" -t "$t" -n 1000000 -s 100
  t="bench-rk-1m-$run-$$"; create "$t"
  measure "rekafka batch.size=1 MB" target/release/rekafka perf produce -b "$B" -t "$t" -n 1000000 -s 100 \
    --batch-size 1000000
  t="bench-rk-1m-4m-$run-$$"; create "$t"
  measure "rekafka batch 1 MB, buffer 4 MiB" target/release/rekafka perf produce -b "$B" -t "$t" -n 1000000 -s 100 \
    --batch-size 1000000 -X buffer.memory=4194304
done
