#!/usr/bin/env bash
# Consumer benchmark: rekafka `perf consume` beside librdkafka (kcat -C) in the same run.
#
#   scripts/with-broker.sh benches/consume_vs_librdkafka.sh [RUNS]
#
# 1M records of 100 B in 3 partitions (filled once with kcat -P), read from the beginning by
# each client in assign mode until 1M records; wall time, records/s, client CPU seconds
# (user+sys) and peak RSS from /usr/bin/time. kcat runs against the librdkafka bundled with
# confluent-kafka (Debian's librdkafka 2.0.2 cannot talk to Tansu), as in
# benches/produce_vs_librdkafka.sh.
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
T="bench-consume-$$"
PYTHONPATH="$ROOT/.tools/py" python3 protocol-tests/interop/create_topic.py "$B" "$T" 3
env LD_LIBRARY_PATH="$LIB" kcat -P -b "$B" -t "$T" -X linger.ms=5 -X batch.size=1000000 < "$LINES"
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
  measure "rekafka (perf consume)" target/release/rekafka -b "$B" perf consume -t "$T" -n 1000000
  measure "librdkafka (kcat -C)" env LD_LIBRARY_PATH="$LIB" kcat -C -b "$B" -t "$T" -o beginning -e -q -c 1000000
done
