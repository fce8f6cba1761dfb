#!/usr/bin/env bash
# Regenerate protocol-tests/frames/ (frame pairs, manifest.json, expected-records.json) by running
# real librdkafka scenarios against a fresh Tansu through the recording proxy. Takes ~10 s.
#
#   scripts/regen-frames.sh [--out DIR]
#
# Installs the tools first if needed (scripts/setup.sh). Review `git diff --stat protocol-tests/frames`
# afterwards: Produce frames are byte-identical run to run; Fetch frames change because topic ids
# (UUIDs, Fetch v13+) and group member ids are random.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SKIP_MUSL=1 scripts/setup.sh
PYTHONPATH="$ROOT/.tools/py${PYTHONPATH:+:$PYTHONPATH}" exec python3 protocol-tests/capture/capture.py "$@"
