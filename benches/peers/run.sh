#!/usr/bin/env bash
# Peer benchmark (issue 21): rekafka beside librdkafka, the Java client and franz-go, on the same
# Kafka cluster in the same run, the clients interleaved within every round, medians reported.
#
#   benches/peers/run.sh                      5 rounds on a fresh 3-node cluster of its own
#   ROUNDS=1 RECORDS=100000 BIG_RECORDS=10000 benches/peers/run.sh     a quick check
#   source target/kafka/env && benches/peers/run.sh                     on a running cluster
#
# Clients, each at its own defaults apart from what the workload fixes:
#   rekafka     target/release/rekafka perf produce | perf consume   (cargo build --release -p rekafka-cli)
#   librdkafka  kcat (Debian's) run against librdkafka 2.16 from the confluent-kafka wheel in
#               .tools/py (LD_LIBRARY_PATH), as benches/produce_vs_librdkafka.sh does;
#               kcat -P reads the records from a file of lines, kcat -C writes one byte ('\n')
#               per record to a pipe that counts them
#   java        org.apache.kafka.tools.ProducerPerformance / ConsumerPerformance from
#               .tools/kafka/lib (kafka-tools 4.4.0, scripts/kafka.sh install); the payload is a
#               file holding the same value as the other clients send. ProducerPerformance has no
#               key option: the keyed workloads run benches/peers/java/PeersProduce.java
#               (kafka-clients, same defaults, same output line as rekafka's and franz-go's)
#   franz       benches/peers/franz (github.com/twmb/franz-go/pkg/kgo), built here with go build
#   (container, poison) rekafka: the release build of benches/listener.rs; java: benches/peers/spring
#               (Spring for Apache Kafka 4.1.2 on its kafka-clients, no Spring Boot; Maven builds
#               it into target/peers/spring), logging at WARN (slf4j-simple)
#
# Workloads (WORKLOADS, space separated, default all):
#   produce     RECORDS (default 1000000) x 100 B, 6 partitions, acks=all, no compression
#   consume     RECORDS from the start of a 6-partition topic filled once per run by rekafka
#               (100 B values); rekafka, kcat and franz-go read the partitions without a group,
#               ConsumerPerformance joins a fresh group (its only mode)
#   produce10k  BIG_RECORDS (default 100000) x 10240 B, otherwise as produce
#   lz4, zstd   as produce with compression.type lz4 / zstd and keyed records: record i has the
#               key i % KEYS (default 1000) as decimal text (rekafka `perf produce --keys`, kcat
#               -K ':' on "key:value" lines, franz-go -keys, Java PeersProduce -keys), so each
#               client's default partitioner hashes the keys; the topic's keys are checked
#   produce600  as produce into 600 partitions (peak RSS at 6 vs 600 partitions)
#   latency     end to end, produce -> consume in one process, at LAT_RATE (10000) records/s for
#               LAT_SECS (30) s of 100 B records into a fresh 6-partition topic: p50/p99/p99.9
#               over the records sent after the first second. The drivers share one design
#               (schedule, value layout, output): rekafka examples/peers_latency.rs, librdkafka
#               benches/peers/rdkafka_latency.py (the confluent-kafka binding: kcat cannot pace
#               or time records), Java benches/peers/java/PeersLatency.java (kafka-clients),
#               franz-go `franz latency`
#   latency-half  the latency drivers, each at half of its own client's median produce rate in
#               this run's produce workload (which must run first; the rate each client reported
#               itself, kcat's from its wall time), for LAT_SECS s
#   container   the listener container against a bare consumer loop doing the same per-record
#               work (two shared counters), on the consume workload's topic (RECORDS x 100 B, 6
#               partitions; filled for either workload): each mode its own process, a fresh
#               group, from the beginning until it has seen every record, then the group's
#               committed offsets must cover every record. rekafka: benches/listener.rs
#               `consume` (poll, commit after each poll) vs `listen` (ListenerContainer,
#               sync_record_handler, default error handler, AckMode::Batch) and `listen-async`
#               (the same with record_handler, an async handler); Java: benches/peers/spring
#               PeersSpring `loop` (KafkaConsumer, commitSync after each poll) vs `container`
#               (Spring for Apache Kafka's ConcurrentMessageListenerContainer, concurrency 1,
#               defaults, AckMode.BATCH). Only the rekafka and java clients run it.
#   poison      a poison flood: RECORDS/10 x 100 B into a fresh 6-partition topic T (and T.DLT),
#               1 % of the values starting with "poison" (benches/listener.rs fill-poison);
#               the same container (DefaultErrorHandler, no retries, dead-letter publisher to
#               T.DLT on the record's partition, AckMode batch) consumes T twice in fresh
#               groups: `plain` (the handler accepts every record) and `poison` (the handler
#               fails the poison records). After each, the group's committed offsets must cover
#               every record, and after `poison` T.DLT must hold exactly the poison records,
#               once each (admin.py committed / dlt); otherwise the measurement fails.
#               rekafka: benches/listener.rs plain / poison (DeadLetterPublisher, DltNaming::
#               Legacy, FixedBackOff::no_retries()); Java: PeersSpring plain / poison
#               (DeadLetterPublishingRecoverer on a KafkaTemplate, FixedBackOff(0, 0)). Only the
#               rekafka and java clients run it.
# The produce workloads fix acks=all and the codec (franz-go would otherwise compress with snappy);
# everything else (linger, batch size, idempotence, buffers) is each client's default.
#
# Every measurement: wall time, client CPU seconds (user+sys) and peak RSS from /usr/bin/time,
# and the brokers' CPU seconds over the same interval (utime+stime of the Kafka JVMs from
# /proc/PID/stat; the pids from the cluster dir: REKAFKA_KAFKA_DIR, KAFKA_CLUSTER_DIR or this
# run's own cluster). Every produced topic is checked to hold exactly the records sent (a
# non-idempotent librdkafka could duplicate on retry: more is reported, fewer fails the run) and
# deleted afterwards; every consumer must report the full count.
#
# Env: REKAFKA_BOOTSTRAP (else a cluster of NODES nodes, default 3, is started in
#      target/kafka-peers and stopped at the end), ROUNDS (5), RECORDS, BIG_RECORDS, WORKLOADS,
#      CLIENTS (default "rekafka librdkafka java franz"), PARTITIONS (6), KEYS (1000), OUT (default
#      target/peers/run-DATE). Results: OUT/results.tsv, OUT/logs/, OUT/summary.md (printed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
ROUNDS="${ROUNDS:-5}"
RECORDS="${RECORDS:-1000000}"
BIG_RECORDS="${BIG_RECORDS:-100000}"
PARTITIONS="${PARTITIONS:-6}"
WORKLOADS="${WORKLOADS:-produce consume container poison produce10k lz4 zstd produce600 latency latency-half}"
KEYS="${KEYS:-1000}"
LAT_RATE="${LAT_RATE:-10000}"
LAT_SECS="${LAT_SECS:-30}"
CLIENTS="${CLIENTS:-rekafka librdkafka java franz}"
OUT="${OUT:-$ROOT/target/peers/run-$(date -u +%Y%m%d-%H%M%S)}"
NODES="${NODES:-3}"
mkdir -p "$OUT/logs"
say() { printf '[peers] %s\n' "$*" >&2; }
die() { printf '[peers] ERROR: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------------------ tools
[ -x /usr/bin/time ] || apt-get install -y -q time >/dev/null
command -v kcat >/dev/null || apt-get install -y -q kcat >/dev/null || die "kcat: apt-get install -y kcat"
ls "$ROOT"/.tools/py/confluent_kafka.libs/librdkafka-*.so.1 >/dev/null 2>&1 \
  || SKIP_MUSL=1 SKIP_KAFKA=1 bash scripts/setup.sh >&2 || die "no confluent-kafka in .tools/py (scripts/setup.sh)"
[ -n "$(ls "$ROOT"/.tools/kafka/lib/kafka-tools-*.jar 2>/dev/null)" ] \
  || bash scripts/kafka.sh install >&2 || die "no kafka-tools in .tools/kafka/lib (scripts/kafka.sh install)"
say "building rekafka (release) and the franz-go peer"
cargo build --release -q -p rekafka-cli
REKAFKA="$ROOT/target/release/rekafka"
FRANZ="$ROOT/target/peers/franz"
(cd benches/peers/franz && go build -o "$FRANZ" .)
LATENCY_RK="$ROOT/target/release/examples/peers_latency"
JAVA_CLASSES="$ROOT/target/peers/java"
if [[ " $WORKLOADS " == *" latency"* ]]; then
  cargo build --release -q -p rekafka --example peers_latency
fi
LISTENER=""
SPRING_CP="$ROOT/target/peers/spring/peers-spring-0.1.0.jar:$ROOT/target/peers/spring/lib/*"
if [[ " $WORKLOADS " == *" container "* || " $WORKLOADS " == *" poison "* ]]; then
  say "building benches/listener.rs (release) and the Spring peer (Maven)"
  LISTENER="$(cargo build --release -q -p rekafka --bench listener --message-format=json \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "listener" and m.get("executable"):
        print(m["executable"])')"
  [ -x "$LISTENER" ] || die "no benches/listener.rs binary"
  mvn -q -B -f benches/peers/spring/pom.xml package >&2 || die "benches/peers/spring: mvn package failed"
fi
mkdir -p "$JAVA_CLASSES"
javac -cp "$ROOT/.tools/kafka/lib/*" -d "$JAVA_CLASSES" benches/peers/java/PeersLatency.java benches/peers/java/PeersProduce.java
RDLIB="$ROOT/target/peers/rdkafka-lib"
mkdir -p "$RDLIB"
ln -sf "$(readlink -f "$(ls "$ROOT"/.tools/py/confluent_kafka.libs/librdkafka-*.so.1 | head -1)")" "$RDLIB/librdkafka.so.1"
LD_LIBRARY_PATH="$RDLIB" kcat -V 2>&1 | grep -q 'librdkafka 2\.16' \
  || die "kcat does not run on librdkafka 2.16: $(LD_LIBRARY_PATH="$RDLIB" kcat -V 2>&1 | head -1)"
JAVA_CP="$ROOT/.tools/kafka/lib/*"
admin() { PYTHONPATH="$ROOT/.tools/py" python3 benches/peers/admin.py "$B" "$@"; }

# ------------------------------------------------------------------------------ cluster
OWN=""
if [ -z "${REKAFKA_BOOTSTRAP:-}" ]; then
  export KAFKA_CLUSTER_DIR="$ROOT/target/kafka-peers"
  say "starting a $NODES-node cluster in $KAFKA_CLUSTER_DIR"
  B="$(bash scripts/kafka.sh start --nodes "$NODES" | tail -1)"
  OWN=1
  CLUSTER_DIR="$KAFKA_CLUSTER_DIR"
  trap 'KAFKA_CLUSTER_DIR="$CLUSTER_DIR" bash scripts/kafka.sh stop >&2 || true' EXIT
else
  B="$REKAFKA_BOOTSTRAP"
  CLUSTER_DIR="${REKAFKA_KAFKA_DIR:-${KAFKA_CLUSTER_DIR:-}}"
fi
BROKER_PIDS=()
if [ -n "$CLUSTER_DIR" ]; then
  for f in "$CLUSTER_DIR"/node*/pid; do
    [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && BROKER_PIDS+=("$(cat "$f")")
  done
fi
[ ${#BROKER_PIDS[@]} -gt 0 ] || say "no broker pids (set REKAFKA_KAFKA_DIR): broker CPU is not measured"
TICK="$(getconf CLK_TCK)"
broker_ticks() { # utime+stime summed over the broker JVMs, in clock ticks
  local t=0 p s
  for p in "${BROKER_PIDS[@]}"; do
    s="$(cat "/proc/$p/stat" 2>/dev/null)" || continue
    s="${s##*) }"   # the fields after "(comm) "; utime and stime are fields 14 and 15
    set -- $s
    t=$((t + ${12} + ${13}))
  done
  echo "$t"
}

# ------------------------------------------------------------------------------ inputs
lines_file() { # COUNT SIZE: a file of COUNT lines of SIZE 'x' (kcat -P input)
  local f="$ROOT/target/peers/lines-$1-$2.txt"
  [ -f "$f" ] || python3 -c "
import sys
line = b'x' * $2 + b'\n'
with open('$f.tmp', 'wb') as out:
    for _ in range($1 // 1000):
        out.write(line * 1000)
    out.write(line * ($1 % 1000))
" && mv -f "$f.tmp" "$f" 2>/dev/null || true
  echo "$f"
}
keyed_lines_file() { # COUNT SIZE KEYS: line i is "i % KEYS:" then SIZE 'x' (kcat -P -K ':' input)
  local f="$ROOT/target/peers/lines-$1-$2-k$3.txt"
  [ -f "$f" ] || python3 -c "
value = b':' + b'x' * $2 + b'\\n'
keys = [str(k).encode() + value for k in range($3)]
with open('$f.tmp', 'wb') as out:
    for i in range(0, $1, $3):
        out.write(b''.join(keys[:min($3, $1 - i)]))
" && mv -f "$f.tmp" "$f" 2>/dev/null || true
  echo "$f"
}
payload_file() { # SIZE: one value of SIZE 'x' (ProducerPerformance --payload-file)
  local f="$ROOT/target/peers/payload-$1.txt"
  [ -f "$f" ] || python3 -c "import sys; sys.stdout.write('x' * $1)" > "$f"
  echo "$f"
}

# ------------------------------------------------------------------------------ commands
# produce_cmd CLIENT TOPIC COUNT SIZE CODEC KEYS: the command line, into the array CMD (KEYS 0:
# records without a key)
produce_cmd() {
  local c="$1" t="$2" n="$3" s="$4" z="$5" k="$6"
  case "$c" in
    rekafka) CMD=("$REKAFKA" -b "$B" perf produce -t "$t" -n "$n" -s "$s" --acks all --compression "$z" --keys "$k") ;;
    librdkafka)
      if [ "$k" -gt 0 ]; then
        CMD=(env LD_LIBRARY_PATH="$RDLIB" kcat -P -b "$B" -t "$t" -X acks=all
             -X compression.codec="$z" -K ':' -l "$(keyed_lines_file "$n" "$s" "$k")")
      else
        CMD=(env LD_LIBRARY_PATH="$RDLIB" kcat -P -b "$B" -t "$t" -X acks=all
             -X compression.codec="$z" -l "$(lines_file "$n" "$s")")
      fi ;;
    java)
      if [ "$k" -gt 0 ]; then
        CMD=(java -cp "$JAVA_CLASSES:$JAVA_CP" PeersProduce -b "$B" -t "$t" -n "$n" -s "$s" -acks all
             -z "$z" -keys "$k")
      else
        CMD=(java -cp "$JAVA_CP" org.apache.kafka.tools.ProducerPerformance --bootstrap-server "$B"
             --topic "$t" --num-records "$n" --throughput -1 --payload-file "$(payload_file "$s")"
             --command-property acks=all compression.type="$z")
      fi ;;
    franz) CMD=("$FRANZ" produce -b "$B" -t "$t" -n "$n" -s "$s" -acks all -z "$z" -keys "$k") ;;
    *) die "unknown client $c" ;;
  esac
}
# consume_cmd CLIENT TOPIC COUNT
consume_cmd() {
  local c="$1" t="$2" n="$3"
  case "$c" in
    rekafka) CMD=("$REKAFKA" -b "$B" perf consume -t "$t" -n "$n") ;;
    librdkafka) CMD=(env LD_LIBRARY_PATH="$RDLIB" kcat -C -b "$B" -t "$t" -o beginning -e -q -c "$n" -f '\n') ;;
    java) CMD=(java -cp "$JAVA_CP" org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$B"
               --topic "$t" --num-records "$n" --group "peers-$$-$RANDOM-$RANDOM") ;;
    franz) CMD=("$FRANZ" consume -b "$B" -t "$t" -n "$n") ;;
    *) die "unknown client $c" ;;
  esac
}

# latency_cmd CLIENT TOPIC RATE
latency_cmd() {
  local c="$1" t="$2" a=(-b "$B" -t "$2" -r "$3" -d "$LAT_SECS" -s 100)
  case "$c" in
    rekafka) CMD=("$LATENCY_RK" "${a[@]}") ;;
    librdkafka) CMD=(env PYTHONPATH="$ROOT/.tools/py" python3 benches/peers/rdkafka_latency.py "${a[@]}") ;;
    java) CMD=(java -cp "$JAVA_CLASSES:$JAVA_CP" PeersLatency "${a[@]}") ;;
    franz) CMD=("$FRANZ" latency "${a[@]}") ;;
    *) die "unknown client $c" ;;
  esac
}

# measure WORKLOAD CLIENT ROUND COUNT [TOPIC [KEYS]]: runs CMD and appends a row to results.tsv;
# then runs CHECKS;
# with TOPIC (a produce), the topic must then hold COUNT records (more are noted as duplicates),
# and with KEYS > 0 its records must carry keys below KEYS (admin.py keys).
# CHECKS: admin.py commands (unquoted words) run after the measurement, each of which must
# succeed (emptied by measure).
CHECKS=()
RESULTS="$OUT/results.tsv"
printf 'workload\tclient\tround\trecords\trc\twall_s\tuser_s\tsys_s\trss_kb\tbroker_cpu_s\tlog\n' > "$RESULTS"
measure() {
  local w="$1" c="$2" r="$3" n="$4" topic="${5:-}" keys="${6:-0}"
  local log="$OUT/logs/$w-$c-$r" rc=0 b0 b1 held
  printf '%s\n' "${CMD[*]}" > "$log.cmd"
  b0="$(broker_ticks)"
  if [ "$w" = consume ] && [ "$c" = librdkafka ]; then
    # kcat writes a '\n' per record: count them (the pipe's reader is not timed)
    /usr/bin/time -f 'TIME %e %U %S %M' -o "$log.time" "${CMD[@]}" 2> "$log.err" | wc -l > "$log.out" || rc=$?
    [ "$(cat "$log.out")" = "$n" ] || { echo "kcat -C delivered $(cat "$log.out") of $n records" >> "$log.err"; rc=1; }
  else
    /usr/bin/time -f 'TIME %e %U %S %M' -o "$log.time" "${CMD[@]}" > "$log.out" 2> "$log.err" || rc=$?
  fi
  b1="$(broker_ticks)"
  local check
  for check in "${CHECKS[@]}"; do
    # a check prints its result into the log, or fails the measurement
    [ "$rc" = 0 ] || break
    echo "check: $check" >> "$log.err"
    eval "admin $check" >> "$log.out" 2>> "$log.err" || { echo "check failed: $check" >> "$log.err"; rc=1; }
  done
  CHECKS=()
  if [ "$w" = consume ] && [ "$c" = java ] && [ "$rc" = 0 ]; then
    # ConsumerPerformance gives up after 10 s without records and prints what it got:
    # start.time, end.time, MB, MB.sec, nMsg, nMsg.sec, ...
    held="$(tail -1 "$log.out" | awk -F', *' '{print $5}')"
    [ "$held" = "$n" ] || { echo "ConsumerPerformance read ${held:-?} of $n records" >> "$log.err"; rc=1; }
  fi
  if [ -n "$topic" ]; then
    held="$(admin count "$topic")" || held=0
    if [ "$held" -lt "$n" ]; then
      echo "topic $topic holds $held of $n records" >> "$log.err"; rc=1
    elif [ "$held" -gt "$n" ]; then
      echo "topic $topic holds $held records for $n sent (duplicates)" >> "$log.err"
      echo "held=$held" >> "$log.out"
    fi
    if [ "$keys" -gt 0 ] && [ "$rc" = 0 ]; then
      held="$(admin keys "$topic" "$keys" 2>> "$log.err")" || { echo "topic $topic: keys missing or wrong" >> "$log.err"; rc=1; }
      echo "distinct_keys_in_sample=${held:-?}" >> "$log.err"
    fi
  fi
  local _ wall user sys rss bcpu=NA
  read -r _ wall user sys rss < <(grep '^TIME' "$log.time" || echo "TIME 0 0 0 0")
  [ ${#BROKER_PIDS[@]} -gt 0 ] && bcpu="$(python3 -c "print(f'{($b1 - $b0) / $TICK:.2f}')")"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$c" "$r" "$n" "$rc" "$wall" "$user" "$sys" "$rss" "$bcpu" "$log" >> "$RESULTS"
  say "round $r $w $c: rc=$rc wall=${wall}s cpu=$(python3 -c "print(f'{$user + $sys:.2f}')")s rss=$((rss / 1024))MiB broker_cpu=${bcpu}s"
  [ "$rc" = 0 ] || say "  failed: $(tail -3 "$log.err" | tr '\n' ' ')"
}

produce_round() { # WORKLOAD ROUND COUNT SIZE CODEC CLIENT PARTITIONS KEYS
  local w="$1" r="$2" n="$3" s="$4" z="$5" c="$6" p="$7" k="$8" t
  t="peers-$w-$c-$r-$$"
  admin create "$t" "$p"
  produce_cmd "$c" "$t" "$n" "$s" "$z" "$k"
  measure "$w" "$c" "$r" "$n" "$t" "$k"
  admin delete "$t"
}

latency_round() { # WORKLOAD ROUND CLIENT RATE
  local w="$1" r="$2" c="$3" rate="$4" t
  t="peers-$w-$c-$r-$$"
  admin create "$t" "$PARTITIONS"
  latency_cmd "$c" "$t" "$rate"
  measure "$w" "$c" "$r" "$((rate * LAT_SECS))" "$t"
  admin delete "$t"
}

# container_cmd CLIENT MODE TOPIC COUNT GROUP (MODE: benches/listener.rs consume | listen | plain |
# poison; the Spring peer's loop | container | plain | poison)
container_cmd() {
  local c="$1" m="$2" t="$3" n="$4" g="$5"
  case "$c" in
    rekafka) CMD=(env REKAFKA_BOOTSTRAP="$B" "$LISTENER" "$m" "$t" "$n" "$g") ;;
    java)
      case "$m" in consume) m=loop ;; listen) m=container ;; esac
      CMD=(java -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$SPRING_CP" rekafka.peers.PeersSpring
           "$m" -b "$B" -t "$t" -n "$n" -g "$g") ;;
    *) die "unknown client $c" ;;
  esac
}

container_round() { # ROUND CLIENT: the bare loop and the container on CONSUME_TOPIC, in fresh groups
  local r="$1" c="$2" m g modes=(consume listen)
  # rekafka: also the container with an async handler (record_handler; `listen` is
  # sync_record_handler, for a handler that never waits, like this one)
  if [ "$c" = rekafka ]; then modes=(consume listen listen-async); fi
  if [ $((r % 2)) = 0 ]; then
    local rev=() i
    for ((i = ${#modes[@]} - 1; i >= 0; i--)); do rev+=("${modes[i]}"); done
    modes=("${rev[@]}")
  fi
  for m in "${modes[@]}"; do
    g="peers-container-$m-$c-$r-$$"
    container_cmd "$c" "$m" "$CONSUME_TOPIC" "$RECORDS" "$g"
    CHECKS=("committed $g $CONSUME_TOPIC")
    measure "container:$m" "$c" "$r" "$RECORDS"
  done
}

poison_round() { # ROUND CLIENT: RECORDS/10 with 1 % poison, the container without and with failures
  local r="$1" c="$2" n=$((RECORDS / 10)) t m g modes=(plain poison)
  t="peers-poison-$c-$r-$$"
  admin create "$t" "$PARTITIONS"
  admin create "$t.DLT" "$PARTITIONS"
  REKAFKA_BOOTSTRAP="$B" "$LISTENER" fill-poison "$t" "$n" > "$OUT/logs/poison-$c-$r-fill.out" 2>&1 \
    || die "fill-poison $t: $(tail -3 "$OUT/logs/poison-$c-$r-fill.out")"
  [ "$(admin count "$t")" = "$n" ] || die "the poison topic $t holds $(admin count "$t") of $n"
  if [ $((r % 2)) = 0 ]; then modes=(poison plain); fi
  for m in "${modes[@]}"; do
    g="peers-poison-$m-$c-$r-$$"
    container_cmd "$c" "$m" "$t" "$n" "$g"
    CHECKS=("committed $g $t")
    if [ "$m" = poison ]; then CHECKS+=("dlt $t"); fi
    measure "poison:$m" "$c" "$r" "$n"
  done
  admin delete "$t" "$t.DLT"
}

half_rate() { # CLIENT: half of CLIENT's median produce rate so far in this run (records/s)
  python3 benches/peers/summarise.py --half-rate "$OUT" "$1"
}

# ------------------------------------------------------------------------------ run
read -r -a CL <<<"$CLIENTS"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "bootstrap: $B (own cluster: ${OWN:-no}, nodes: $(echo "$B" | tr ',' '\n' | wc -l))"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //') x $(nproc); memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
  echo "kernel: $(uname -r)"
  echo "rekafka: $("$REKAFKA" --version) (git $(git rev-parse --short HEAD))"
  echo "librdkafka: $(LD_LIBRARY_PATH="$RDLIB" kcat -V 2>&1 | grep -o 'librdkafka [0-9.]*') via kcat $(kcat -V 2>&1 | grep -o 'Version [0-9.]*' | cut -d' ' -f2)"
  echo "java: kafka-tools $(basename "$(ls .tools/kafka/lib/kafka-tools-[0-9]*.jar)" .jar | sed 's/kafka-tools-//'), $(java -version 2>&1 | head -1)"
  if [ -n "$LISTENER" ]; then
    echo "spring: spring-kafka $(basename "$(ls target/peers/spring/lib/spring-kafka-[0-9]*.jar)" .jar | sed 's/spring-kafka-//') on kafka-clients $(basename "$(ls target/peers/spring/lib/kafka-clients-[0-9]*.jar)" .jar | sed 's/kafka-clients-//')"
  fi
  echo "franz-go: $(grep 'twmb/franz-go ' benches/peers/franz/go.mod | awk '{print $NF}'), $(go version | awk '{print $3}')"
  echo "rounds: $ROUNDS; records: $RECORDS (100 B; poison: $((RECORDS / 10))), $BIG_RECORDS (10240 B); partitions: $PARTITIONS; keys: $KEYS; latency: $LAT_RATE rec/s for $LAT_SECS s"
  echo "workloads: $WORKLOADS"
  echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$OUT/machine.txt"
cat "$OUT/machine.txt" >&2

CONSUME_TOPIC=""
if [[ " $WORKLOADS " == *" consume "* || " $WORKLOADS " == *" container "* ]]; then
  CONSUME_TOPIC="peers-consume-$$"
  admin create "$CONSUME_TOPIC" "$PARTITIONS"
  say "filling $CONSUME_TOPIC with $RECORDS x 100 B (rekafka perf produce, defaults)"
  "$REKAFKA" -b "$B" perf produce -t "$CONSUME_TOPIC" -n "$RECORDS" -s 100 > "$OUT/logs/consume-fill.out" 2>&1
  [ "$(admin count "$CONSUME_TOPIC")" = "$RECORDS" ] || die "the consume topic holds $(admin count "$CONSUME_TOPIC") of $RECORDS"
fi

for r in $(seq 1 "$ROUNDS"); do
  # Interleave: each round starts with the next client.
  order=()
  for i in "${!CL[@]}"; do order+=("${CL[$(( (i + r - 1) % ${#CL[@]} ))]}"); done
  say "round $r of $ROUNDS: ${order[*]}"
  for w in $WORKLOADS; do
    for c in "${order[@]}"; do
      case "$w" in
        produce) produce_round "$w" "$r" "$RECORDS" 100 none "$c" "$PARTITIONS" 0 ;;
        produce10k) produce_round "$w" "$r" "$BIG_RECORDS" 10240 none "$c" "$PARTITIONS" 0 ;;
        lz4|zstd) produce_round "$w" "$r" "$RECORDS" 100 "$w" "$c" "$PARTITIONS" "$KEYS" ;;
        produce600) produce_round "$w" "$r" "$RECORDS" 100 none "$c" 600 0 ;;
        latency) latency_round "$w" "$r" "$c" "$LAT_RATE" ;;
        latency-half)
          if rate="$(half_rate "$c")"; then
            latency_round "$w" "$r" "$c" "$rate"
          else
            say "latency-half $c: skipped, no successful produce result for $c in this run (WORKLOADS must run produce first)"
          fi ;;
        consume) consume_cmd "$c" "$CONSUME_TOPIC" "$RECORDS"; measure consume "$c" "$r" "$RECORDS" ;;
        container|poison)
          # a container beside a container: Spring's for the Java client, none for the others
          case "$c" in
            rekafka|java) "${w}_round" "$r" "$c" ;;
            *) if [ "$r" = 1 ]; then say "$w $c: skipped (only rekafka and java (Spring) run it)"; fi ;;
          esac ;;
        *) die "unknown workload $w" ;;
      esac
    done
  done
done
[ -n "$CONSUME_TOPIC" ] && admin delete "$CONSUME_TOPIC"
echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine.txt"
python3 benches/peers/summarise.py "$OUT" > "$OUT/summary.md"
cat "$OUT/summary.md"
say "results in $OUT"
