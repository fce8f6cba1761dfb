#!/usr/bin/env python3
"""Create TOPIC with PARTITIONS partitions and fill it with COUNT records using librdkafka.

    PYTHONPATH=.tools/py python3 protocol-tests/interop/fill.py BOOTSTRAP TOPIC PARTITIONS COUNT \
        [--size BYTES] [--codec none|gzip|snappy|lz4|zstd] [--headers] [--txn-every N]

Record i goes to partition i % PARTITIONS with key "k<i>" and a value that starts with "v<i>:"
padded with 'x' to --size bytes (default 100). --headers adds headers [("i", "<i>"), ("n", null)].
--txn-every N: records are produced in transactions of N records (all committed).
Prints one line: {"produced": COUNT}. Exits 1 on any delivery error.
"""
import argparse
import json
import sys

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bootstrap")
    ap.add_argument("topic")
    ap.add_argument("partitions", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--codec", default="none")
    ap.add_argument("--headers", action="store_true")
    ap.add_argument("--txn-every", type=int, default=0)
    a = ap.parse_args()

    admin = AdminClient({"bootstrap.servers": a.bootstrap, "broker.address.family": "v4"})
    fs = admin.create_topics([NewTopic(a.topic, a.partitions, 1)])
    for f in fs.values():
        try:
            f.result(30)
        except Exception as e:  # already exists is fine
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise
    conf = {
        "bootstrap.servers": a.bootstrap,
        "broker.address.family": "v4",
        "compression.type": a.codec,
        "linger.ms": 20,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 1000000,
        "queue.buffering.max.kbytes": 1048576,
    }
    if a.txn_every:
        conf["transactional.id"] = f"fill-{a.topic}"
    p = Producer(conf)
    errors = []

    def dr(err, msg):
        if err is not None:
            errors.append(str(err))

    if a.txn_every:
        p.init_transactions(30)
    in_txn = 0
    for i in range(a.count):
        if a.txn_every and in_txn == 0:
            p.begin_transaction()
        prefix = f"v{i}:".encode()
        value = prefix + b"x" * max(0, a.size - len(prefix))
        headers = [("i", str(i).encode()), ("n", None)] if a.headers else None
        while True:
            try:
                p.produce(a.topic, value=value, key=f"k{i}".encode(), partition=i % a.partitions,
                          headers=headers, on_delivery=dr)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
        if a.txn_every:
            in_txn += 1
            if in_txn == a.txn_every:
                p.commit_transaction(60)
                in_txn = 0
    if a.txn_every and in_txn:
        p.commit_transaction(60)
    left = p.flush(120)
    if left or errors:
        sys.exit(f"fill failed: {left} undelivered, errors: {errors[:5]}")
    print(json.dumps({"produced": a.count}))


if __name__ == "__main__":
    main()
