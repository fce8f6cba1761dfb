#!/usr/bin/env python3
"""Produce JSON-line records read from stdin with librdkafka; print each record's offset.

    PYTHONPATH=.tools/py python3 protocol-tests/interop/produce.py BOOTSTRAP TOPIC CODEC \
        [--partition N] [--idempotent] [--linger-ms MS] [--timeout SECONDS] < records.jsonl

CODEC: none | gzip | snappy | lz4 | zstd.
Input, one object per line (the format consume.py prints; missing fields are null/empty):
    {"key": "<base64>"|null, "value": "<base64>"|null, "headers": [["k", "<base64>"|null], ...],
     "timestamp": 1700000000000 (optional, CreateTime ms), "partition": 0 (optional)}
Output, one line per input record, in input order:
    {"partition": 0, "offset": 17}
The partition is the record's "partition", else --partition (default 0; -1 = librdkafka's
partitioner). All records are produced before one flush, so linger.ms batches them together.
Exits 1 with a message if any delivery fails or the flush times out.
"""
import argparse
import base64
import json
import sys

from confluent_kafka import Producer


def unb64(s):
    return None if s is None else base64.b64decode(s)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bootstrap")
    ap.add_argument("topic")
    ap.add_argument("codec", choices=["none", "gzip", "snappy", "lz4", "zstd"])
    ap.add_argument("--partition", type=int, default=0)
    ap.add_argument("--idempotent", action="store_true")
    ap.add_argument("--linger-ms", type=int, default=50)
    ap.add_argument("--timeout", type=float, default=30.0)
    a = ap.parse_args()

    p = Producer({
        "bootstrap.servers": a.bootstrap,
        "broker.address.family": "v4",
        "client.id": "rekafka-interop-produce",
        "compression.type": a.codec,
        "acks": "all",
        "enable.idempotence": a.idempotent,
        "linger.ms": a.linger_ms,
        "message.timeout.ms": int(a.timeout * 1000),
    })
    results, errors = [], []

    def dr(err, msg, i):
        if err is not None:
            errors.append(f"record {i}: {err}")
        else:
            results[i] = {"partition": msg.partition(), "offset": msg.offset()}

    for i, line in enumerate(l for l in sys.stdin if l.strip()):
        r = json.loads(line)
        results.append(None)
        kw = {}
        if r.get("timestamp") is not None:
            kw["timestamp"] = int(r["timestamp"])
        part = r.get("partition", a.partition)
        if part is not None and part >= 0:
            kw["partition"] = part
        headers = [(h[0], unb64(h[1])) for h in (r.get("headers") or [])]
        while True:
            try:
                p.produce(a.topic, key=unb64(r.get("key")), value=unb64(r.get("value")),
                          headers=headers or None, on_delivery=lambda e, m, i=i: dr(e, m, i), **kw)
                break
            except BufferError:
                p.poll(0.1)
    left = p.flush(a.timeout)
    if left:
        errors.append(f"{left} records still undelivered after {a.timeout}s")
    if errors:
        for e in errors:
            print("produce.py:", e, file=sys.stderr)
        return 1
    for r in results:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
