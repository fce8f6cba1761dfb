#!/usr/bin/env python3
"""Read every record of a topic from offset 0 with librdkafka at a given isolation level.

    PYTHONPATH=.tools/py python3 protocol-tests/interop/txn_read.py BOOTSTRAP TOPIC PARTITIONS \
        read_committed|read_uncommitted [--idle SECONDS] [--timeout SECONDS]

Reads until no record arrived for --idle seconds (default 2; at least until --min-wait) and
prints one line per record: PARTITION<TAB>OFFSET<TAB>VALUE ("-" for null). Exits 2 on a
consumer error.
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
    ap.add_argument("isolation", choices=["read_committed", "read_uncommitted"])
    ap.add_argument("--idle", type=float, default=2.0)
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()
    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "broker.address.family": "v4",
        "group.id": "rekafka-txn-read-" + uuid.uuid4().hex[:12],
        "enable.auto.commit": False,
        "isolation.level": a.isolation,
        "fetch.wait.max.ms": 100,
        "enable.partition.eof": False,
    })
    c.assign([TopicPartition(a.topic, p, 0) for p in range(a.partitions)])
    start = time.time()
    last = start
    while True:
        now = time.time()
        if now - last >= a.idle or now - start >= a.timeout:
            break
        for m in c.consume(10000, 0.2):
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                print(f"consumer error: {m.error()}", file=sys.stderr)
                sys.exit(2)
            v = m.value()
            sys.stdout.write(f"{m.partition()}\t{m.offset()}\t{'-' if v is None else v.decode()}\n")
            last = time.time()
    c.close()


if __name__ == "__main__":
    main()
