#!/usr/bin/env python3
"""librdkafka consume benchmark (the comparison for `rekafka perf consume`).

    PYTHONPATH=.tools/py python3 protocol-tests/interop/perf_consume.py BOOTSTRAP TOPIC COUNT

Assigns every partition of TOPIC from the beginning, reads COUNT records with consume(10000)
batches, prints: records=N secs=S rec_per_s=R mb_per_s=M
"""
import sys
import time

from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING


def main():
    bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "group.id": "perf-consume-unused",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
    })
    md = c.list_topics(topic, timeout=10)
    parts = md.topics[topic].partitions
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    n = 0
    nbytes = 0
    start = time.time()
    idle = time.time()
    while n < count:
        msgs = c.consume(10000, 0.5)
        if not msgs:
            if time.time() - idle > 10:
                sys.exit(f"only {n} of {count} records")
            continue
        idle = time.time()
        for m in msgs:
            if m.error():
                continue
            n += 1
            nbytes += len(m.value() or b"") + len(m.key() or b"")
    secs = time.time() - start
    print(f"records={n} secs={secs:.3f} rec_per_s={n / secs:.0f} mb_per_s={nbytes / secs / 1e6:.2f}")
    c.close()


if __name__ == "__main__":
    main()
