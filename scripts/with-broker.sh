#!/usr/bin/env bash
# Run a command against a fresh Tansu broker, then stop it (always, via trap).
#
#   scripts/with-broker.sh cargo test -p rekafka --test broker
#
# The command sees REKAFKA_BOOTSTRAP=127.0.0.1:PORT and REKAFKA_TEST_BROKER=tansu (so the tests
# tolerate Tansu's documented quirks). Exit code = the command's exit code. The default test
# broker is Apache Kafka: scripts/test.sh starts it with scripts/kafka.sh.
# Each invocation uses its own pid file, so several can run at once.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -ge 1 ] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }

mkdir -p "$ROOT/target"
export TANSU_PIDFILE="$ROOT/target/tansu-with-$$.pid"
cleanup() { "$ROOT/scripts/broker.sh" stop || true; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

line="$("$ROOT/scripts/broker.sh" start)"
eval "$line"
export REKAFKA_BOOTSTRAP
export REKAFKA_TEST_BROKER="${REKAFKA_TEST_BROKER:-tansu}"
echo "[with-broker] REKAFKA_BOOTSTRAP=$REKAFKA_BOOTSTRAP" >&2

set +e
"$@"
rc=$?
set -e
exit "$rc"
