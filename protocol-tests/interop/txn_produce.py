#!/usr/bin/env python3
"""Produce JSON-line records (stdin) in ONE librdkafka transaction, then commit or abort it.

usage: txn_produce.py BOOTSTRAP TOPIC TRANSACTIONAL_ID CODEC commit|abort < records.jsonl

Record format (one JSON object per line): {"key": b64|null, "value": b64|null,
"headers": [[key, b64|null], ...]}. Prints one JSON line per delivered record:
{"partition": P, "offset": O}. Exits non-zero on any error.
"""
import base64
import json
import sys

from confluent_kafka import Producer


def unb64(v):
    return None if v is None else base64.b64decode(v)


def main():
    if len(sys.argv) != 6 or sys.argv[5] not in ("commit", "abort"):
        sys.exit(__doc__)
    bootstrap, topic, txn_id, codec, outcome = sys.argv[1:]
    p = Producer({
        "bootstrap.servers": bootstrap,
        "transactional.id": txn_id,
        "compression.type": codec,
        "linger.ms": 50,
        "transaction.timeout.ms": 60000,
    })
    p.init_transactions(30)
    p.begin_transaction()
    delivered, errors = [], []

    def cb(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            delivered.append({"partition": msg.partition(), "offset": msg.offset()})

    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        headers = [(k, unb64(v)) for k, v in r.get("headers", [])]
        p.produce(topic, key=unb64(r.get("key")), value=unb64(r.get("value")),
                  headers=headers or None, partition=0, on_delivery=cb)
    p.flush(30)
    if errors:
        sys.exit(f"delivery failed: {errors}")
    if outcome == "commit":
        p.commit_transaction(30)
    else:
        p.abort_transaction(30)
    for d in delivered:
        print(json.dumps(d))


if __name__ == "__main__":
    main()
