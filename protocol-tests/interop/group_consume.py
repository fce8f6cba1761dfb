#!/usr/bin/env python3
"""A librdkafka consumer-group member for mixed-group tests.

    PYTHONPATH=.tools/py python3 protocol-tests/interop/group_consume.py BOOTSTRAP TOPIC GROUP SECONDS \
        [--strategy range|roundrobin|cooperative-sticky] [--instance ID]

Subscribes to TOPIC in GROUP (session.timeout.ms 6000, auto.offset.reset earliest, auto commit)
for SECONDS, printing one JSON line per event:
    {"assigned": [[topic, partition], ...]}   {"revoked": [...]}
    {"partition": P, "offset": O}              (one per record)
"""
import argparse
import json
import sys
import time

from confluent_kafka import Consumer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bootstrap")
    ap.add_argument("topic")
    ap.add_argument("group")
    ap.add_argument("seconds", type=float)
    ap.add_argument("--strategy", default="range")
    ap.add_argument("--instance", default=None, help="group.instance.id (static member)")
    a = ap.parse_args()
    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "broker.address.family": "v4",
        "group.id": a.group,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": a.strategy,
        "fetch.wait.max.ms": 100,
    } | ({"group.instance.id": a.instance} if a.instance else {}))

    def out(o):
        sys.stdout.write(json.dumps(o) + "\n")
        sys.stdout.flush()

    c.subscribe([a.topic],
                on_assign=lambda _, ps: out({"assigned": [[p.topic, p.partition] for p in ps]}),
                on_revoke=lambda _, ps: out({"revoked": [[p.topic, p.partition] for p in ps]}))
    end = time.time() + a.seconds
    while time.time() < end:
        for m in c.consume(1000, 0.2):
            if m.error():
                continue
            out({"partition": m.partition(), "offset": m.offset()})
    c.close()


if __name__ == "__main__":
    main()
