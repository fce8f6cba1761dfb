#!/usr/bin/env python3
"""Print the partition librdkafka's murmur2_random partitioner gives each key.

    PYTHONPATH=.tools/py python3 protocol-tests/interop/partitions.py BOOTSTRAP TOPIC < keys

TOPIC must exist with the partition count under test. Each stdin line is a key; one record per
key is produced (acks=all) and, from its delivery report, one line "KEY<TAB>PARTITION" is
printed in input order. Exits 1 on a delivery error.
"""
import sys

from confluent_kafka import Producer


def main():
    bootstrap, topic = sys.argv[1], sys.argv[2]
    keys = [l.rstrip("\n") for l in sys.stdin]
    p = Producer({
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "partitioner": "murmur2_random",
        "linger.ms": 5,
    })
    out = [None] * len(keys)
    errors = []

    def cb(i):
        def report(err, msg):
            if err is not None:
                errors.append(str(err))
            else:
                out[i] = msg.partition()
        return report

    for i, k in enumerate(keys):
        while True:
            try:
                p.produce(topic, key=k.encode(), value=b"", on_delivery=cb(i))
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    p.flush(60)
    if errors or any(x is None for x in out):
        print(f"delivery failed: {errors[:3]}", file=sys.stderr)
        sys.exit(1)
    w = sys.stdout.write
    for k, part in zip(keys, out):
        w(f"{k}\t{part}\n")


if __name__ == "__main__":
    main()
