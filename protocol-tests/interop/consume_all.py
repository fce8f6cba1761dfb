#!/usr/bin/env python3
"""Consume every record of every partition of a topic with librdkafka, from offset 0.

    PYTHONPATH=.tools/py python3 protocol-tests/interop/consume_all.py BOOTSTRAP TOPIC PARTITIONS EXPECTED \
        [--idle SECONDS] [--timeout SECONDS]

Reads until EXPECTED records arrived, then keeps reading for --idle seconds (default 1) so that
records beyond EXPECTED (duplicates) are seen too. One line per record:
    PARTITION<TAB>OFFSET<TAB>KEY<TAB>VALUE      (key/value decoded as UTF-8, "-" for null)
Exits 1 if fewer than EXPECTED arrive within --timeout (default 60), 2 on a consumer error.
"""
import argparse
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError, TopicPartition


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bootstrap")
    ap.add_argument("topic")
    ap.add_argument("partitions", type=int)
    ap.add_argument("expected", type=int)
    ap.add_argument("--idle", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()
    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "broker.address.family": "v4",
        "group.id": "rekafka-interop-" + uuid.uuid4().hex[:12],
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 100,
        "check.crcs": True,
        "enable.partition.eof": False,
    })
    c.assign([TopicPartition(a.topic, p, 0) for p in range(a.partitions)])
    n = 0
    deadline = time.time() + a.timeout
    done_at = None
    w = sys.stdout.write
    while True:
        now = time.time()
        if done_at is not None and now >= done_at:
            break
        if done_at is None and now >= deadline:
            print(f"only {n} of {a.expected} records", file=sys.stderr)
            sys.exit(1)
        msgs = c.consume(10000, 0.2)
        for m in msgs:
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                print(f"consumer error: {m.error()}", file=sys.stderr)
                sys.exit(2)
            k = m.key()
            v = m.value()
            w(f"{m.partition()}\t{m.offset()}\t{'-' if k is None else k.decode()}\t{'-' if v is None else v.decode()}\n")
            n += 1
        if n >= a.expected and done_at is None:
            done_at = time.time() + a.idle
    c.close()


if __name__ == "__main__":
    main()
