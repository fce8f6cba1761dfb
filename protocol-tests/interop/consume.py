#!/usr/bin/env python3
"""Consume COUNT records from offset 0 of one partition with librdkafka, print them as JSON lines.

    PYTHONPATH=.tools/py python3 protocol-tests/interop/consume.py BOOTSTRAP TOPIC PARTITION COUNT \
        [--isolation read_committed|read_uncommitted] [--timeout SECONDS] [--offset N] [--eof]

One line per record, in offset order:
    {"offset": 0, "timestamp": 1700000000000, "timestamp_type": "create",
     "key": "<base64>"|null, "value": "<base64>"|null, "headers": [["k", "<base64>"|null], ...]}

Uses assign() (no group membership, nothing is committed; confluent-kafka insists on a
group.id, so a throw-away one is set). fetch.wait.max.ms is 100: Tansu returns empty
Fetch responses for max_wait_ms=0. With --eof it goes on after COUNT records until the end of
the partition (librdkafka's partition EOF: the last stable offset with read_committed), printing
any records beyond COUNT, so a caller can check that nothing more is visible. Exits 1 (message on stderr) if fewer than COUNT records
arrive within the timeout; exits 2 on a consumer error.
"""
import argparse
import base64
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, TopicPartition, TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME


def b64(b):
    return None if b is None else base64.b64encode(b).decode()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bootstrap")
    ap.add_argument("topic")
    ap.add_argument("partition", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("--isolation", choices=["read_committed", "read_uncommitted"], default="read_uncommitted")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--offset", type=int, default=0, help="start offset (default 0)")
    ap.add_argument("--eof", action="store_true", help="after COUNT records, read on to the end")
    a = ap.parse_args()

    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "broker.address.family": "v4",
        "client.id": "rekafka-interop-consume",
        "group.id": "rekafka-interop-" + uuid.uuid4().hex[:12],
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": a.isolation,
        "fetch.wait.max.ms": 100,
        "check.crcs": True,
        "enable.partition.eof": a.eof,
    })
    c.assign([TopicPartition(a.topic, a.partition, a.offset)])
    got = 0
    deadline = time.monotonic() + a.timeout
    ts_types = {TIMESTAMP_CREATE_TIME: "create", TIMESTAMP_LOG_APPEND_TIME: "log_append"}
    try:
        at_end = False
        while got < a.count or (a.eof and not at_end):
            left = deadline - time.monotonic()
            if left <= 0:
                print(f"consume.py: got {got}/{a.count} records from {a.topic}[{a.partition}] "
                      f"within {a.timeout}s", file=sys.stderr)
                return 1
            m = c.poll(min(left, 0.5))
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    at_end = got >= a.count
                    continue
                print(f"consume.py: consumer error: {m.error()}", file=sys.stderr)
                if m.error().fatal() or not m.error().retriable():
                    return 2
                continue
            ts_type, ts = m.timestamp()
            print(json.dumps({
                "offset": m.offset(), "timestamp": ts, "timestamp_type": ts_types.get(ts_type, "none"),
                "key": b64(m.key()), "value": b64(m.value()),
                "headers": [[k, b64(v)] for k, v in (m.headers() or [])],
            }), flush=True)
            got += 1
            at_end = False
        return 0
    finally:
        c.close()


if __name__ == "__main__":
    sys.exit(main())
