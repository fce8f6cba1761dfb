#!/usr/bin/env bash
# Regenerate captured frames by running real librdkafka scenarios through the recording proxy:
#
#   scripts/regen-frames.sh [--out DIR]            protocol-tests/frames/ against a fresh Tansu (~10 s)
#   scripts/regen-frames.sh --kafka [--out DIR]    protocol-tests/frames-kafka/ against a private
#                                                  1-node Apache Kafka with a SASL listener
#                                                  (scripts/kafka.sh, target/kafka-frames; ~40 s)
#
# Each writes frame pairs, manifest.json and expected-records.json. Installs the tools first if
# needed (scripts/setup.sh; the Kafka jars through scripts/kafka.sh). Review
# `git diff --stat protocol-tests/frames*` afterwards: Produce requests are byte-identical run to
# run; Fetch frames change because topic ids (UUIDs, Fetch v13+), producer ids and group member
# ids are random.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
script=protocol-tests/capture/capture.py
if [ "${1:-}" = --kafka ]; then
  shift
  script=protocol-tests/capture/capture_kafka.py
fi
SKIP_MUSL=1 scripts/setup.sh
PYTHONPATH="$ROOT/.tools/py${PYTHONPATH:+:$PYTHONPATH}" exec python3 "$script" "$@"
