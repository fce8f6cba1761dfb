#!/usr/bin/env bash
# A quick interleaved A/B of producer commands on a running cluster (issue 21): in each of
# ROUNDS rounds, every LABEL=COMMAND runs once, in the order given, into a fresh 6-partition
# topic that is checked (held=) and deleted afterwards; prints one line per run with the
# command's own report, /usr/bin/time's wall/user/sys/peak RSS and the producer's metrics line.
#
#   source target/kafka/env
#   benches/peers/ab.sh ROUNDS N SIZE 'LABEL=COMMAND' ...
#
# In COMMAND, {B} is the bootstrap, {T} the topic, {N} and {S} the record count and size:
#   benches/peers/ab.sh 3 300000 100 \
#     'new=target/release/rekafka -b {B} perf produce -t {T} -n {N} -s {S} --acks all --compression none' \
#     'franz=target/peers/franz produce -b {B} -t {T} -n {N} -s {S} -acks all -z none'
# The full, documented comparison is benches/peers/run.sh; this is for iterating.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
B="${REKAFKA_BOOTSTRAP:?source target/kafka/env first}"
[ $# -ge 4 ] || { sed -n '2,15p' "$0"; exit 2; }
ROUNDS=$1; N=$2; S=$3; shift 3
admin() { PYTHONPATH="$ROOT/.tools/py" python3 "$ROOT/benches/peers/admin.py" "$B" "$@"; }
for r in $(seq 1 "$ROUNDS"); do
  for spec in "$@"; do
    label="${spec%%=*}"; cmd="${spec#*=}"
    t="ab-$label-$r-$RANDOM$RANDOM"
    admin create "$t" 6 >/dev/null 2>&1
    cmd="${cmd//\{T\}/$t}"; cmd="${cmd//\{N\}/$N}"; cmd="${cmd//\{S\}/$S}"; cmd="${cmd//\{B\}/$B}"
    out=$( { /usr/bin/time -f "TIME wall=%e user=%U sys=%S rss_kb=%M" bash -c "$cmd"; } 2>&1 )
    held=$(admin count "$t" 2>/dev/null)
    echo "round=$r $label held=$held $(echo "$out" | grep -E "records=|TIME|metrics" | tr '\n' ' ')"
    admin delete "$t" >/dev/null 2>&1
  done
done
