#!/usr/bin/env python3
"""librdkafka against the mock cluster: one committed, one aborted and one more committed
transaction, then read back with read_committed and read_uncommitted. Prints one JSON object:

    {"read_committed": ["c-0", ...], "read_uncommitted": [...]}

    PYTHONPATH=.tools/py python3 protocol-tests/interop/mock_txn.py BOOTSTRAP TOPIC TXN_ID
"""
import json
import sys

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition


def read_all(bootstrap, topic, isolation):
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "group.id": f"mock-txn-reader-{isolation}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": isolation,
    })
    md = c.list_topics(topic, timeout=10)
    parts = sorted(md.topics[topic].partitions.keys())
    c.assign([TopicPartition(topic, q, 0) for q in parts])
    eof, out = set(), []
    while len(eof) < len(parts):
        for m in c.consume(100, 1.0):
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                    continue
                raise SystemExit(f"consume error {m.error()}")
            out.append(m.value().decode())
    c.close()
    return out


def main():
    bootstrap, topic, txn_id = sys.argv[1], sys.argv[2], sys.argv[3]
    p = Producer({
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "transactional.id": txn_id,
        "transaction.timeout.ms": 60000,
    })
    p.init_transactions(30)
    for prefix, commit, n in (("c", True, 10), ("a", False, 7), ("d", True, 5)):
        p.begin_transaction()
        for i in range(n):
            p.produce(topic, value=f"{prefix}-{i}".encode(), partition=i % 2)
        p.flush(30)
        if commit:
            p.commit_transaction(30)
        else:
            p.abort_transaction(30)
    print(json.dumps({
        "read_committed": read_all(bootstrap, topic, "read_committed"),
        "read_uncommitted": read_all(bootstrap, topic, "read_uncommitted"),
    }))


if __name__ == "__main__":
    main()
