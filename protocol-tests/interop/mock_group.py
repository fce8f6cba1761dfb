#!/usr/bin/env python3
"""librdkafka against the mock cluster: two consumers of one group share a topic's partitions,
consume N records produced after both joined, and commit. Prints one JSON object:

    {"members": {"a": {"partitions": [0, 1], "count": k}, "b": {...}},
     "consumed": N, "distinct": N, "committed": {"0": offset, ...}}

    PYTHONPATH=.tools/py python3 protocol-tests/interop/mock_group.py BOOTSTRAP TOPIC GROUP N
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer


def consumer(bootstrap, group, topic, name):
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "group.id": group,
        "client.id": f"mock-group-{name}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 200,
        "partition.assignment.strategy": "range",
    })
    c.subscribe([topic])
    return c


def main():
    bootstrap, topic, group, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    cs = {"a": consumer(bootstrap, group, topic, "a"), "b": consumer(bootstrap, group, topic, "b")}
    got = {k: [] for k in cs}
    deadline = time.time() + 60
    # Both members must hold partitions before anything is produced.
    while not all(c.assignment() for c in cs.values()) or \
            sum(len(c.assignment()) for c in cs.values()) != len(set(
                (tp.topic, tp.partition) for c in cs.values() for tp in c.assignment())):
        if time.time() > deadline:
            print("group did not stabilise with two members", file=sys.stderr)
            sys.exit(1)
        for c in cs.values():
            c.poll(0.1)

    p = Producer({"bootstrap.servers": bootstrap, "broker.address.family": "v4", "linger.ms": 5})
    for i in range(n):
        p.produce(topic, value=str(i).encode(), key=str(i).encode())
    if p.flush(30):
        print("produce flush timed out", file=sys.stderr)
        sys.exit(1)

    while sum(len(v) for v in got.values()) < n:
        if time.time() > deadline:
            print(f"consumed only {sum(len(v) for v in got.values())} of {n}", file=sys.stderr)
            sys.exit(1)
        for name, c in cs.items():
            msgs = c.consume(500, 0.2)
            for m in msgs:
                if m.error():
                    print(f"consume error {m.error()}", file=sys.stderr)
                    sys.exit(1)
                got[name].append(int(m.value()))
            if msgs:
                c.commit(asynchronous=False)
    members = {}
    committed = {}
    for name, c in cs.items():
        parts = sorted(tp.partition for tp in c.assignment())
        members[name] = {"partitions": parts, "count": len(got[name])}
        for tp in c.committed(c.assignment(), timeout=10):
            committed[str(tp.partition)] = tp.offset
    for c in cs.values():
        c.close()
    allv = [v for vs in got.values() for v in vs]
    print(json.dumps({"members": members, "consumed": len(allv), "distinct": len(set(allv)),
                      "committed": committed}))


if __name__ == "__main__":
    main()
