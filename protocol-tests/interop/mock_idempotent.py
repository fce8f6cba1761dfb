#!/usr/bin/env python3
"""librdkafka against the mock cluster: an idempotent producer sends N records, a consumer reads
them all back. Prints one JSON object:

    {"produced": N, "acked": N, "consumed": N, "distinct": N, "in_order": true,
     "partitions": {"0": count, ...}}

    PYTHONPATH=.tools/py python3 protocol-tests/interop/mock_idempotent.py BOOTSTRAP TOPIC N \
        [REQUEST_TIMEOUT_MS]

REQUEST_TIMEOUT_MS (default 30000) is librdkafka's request.timeout.ms and socket.timeout.ms: lower it when the test
drops responses.

Exits 1 when a delivery fails.
"""
import json
import sys

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition


def main():
    bootstrap, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    request_timeout = int(sys.argv[4]) if len(sys.argv) > 4 else 30000
    p = Producer({
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "batch.num.messages": 2000,
        "message.timeout.ms": 60000,
        "request.timeout.ms": request_timeout,
        "socket.timeout.ms": max(request_timeout, 10),
        "retry.backoff.ms": 50,
    })
    acked, errors = [0], []

    def dr(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            acked[0] += 1

    for i in range(n):
        while True:
            try:
                p.produce(topic, value=str(i).encode(), key=str(i % 97).encode(), on_delivery=dr)
                break
            except BufferError:
                p.poll(0.05)
        if i % 1000 == 0:
            p.poll(0)
    left = p.flush(60)
    if left or errors:
        print(f"flush left {left}, errors {errors[:5]}", file=sys.stderr)
        sys.exit(1)

    c = Consumer({
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "group.id": "mock-idempotent-reader",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
    })
    md = c.list_topics(topic, timeout=10)
    parts = sorted(md.topics[topic].partitions.keys())
    c.assign([TopicPartition(topic, q, 0) for q in parts])
    eof, seen, counts, in_order, last = set(), [], {}, True, {}
    while len(eof) < len(parts):
        msgs = c.consume(1000, 1.0)
        for m in msgs:
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                    continue
                print(f"consume error {m.error()}", file=sys.stderr)
                sys.exit(1)
            v = int(m.value())
            # Records with the same key go to the same partition, in production order.
            if last.get(m.key(), -1) >= v:
                in_order = False
            last[m.key()] = v
            seen.append(v)
            counts[str(m.partition())] = counts.get(str(m.partition()), 0) + 1
    c.close()
    print(json.dumps({
        "produced": n,
        "acked": acked[0],
        "consumed": len(seen),
        "distinct": len(set(seen)),
        "in_order": in_order,
        "partitions": counts,
    }))


if __name__ == "__main__":
    main()
