#!/usr/bin/env python3
"""End-to-end latency driver of benches/peers/run.sh for librdkafka 2.16, through the
confluent-kafka wheel in .tools/py (kcat cannot send at a fixed rate or time records): the same
schedule, value layout, warm-up and output line as examples/peers_latency.rs, which documents
them.

    PYTHONPATH=.tools/py python3 benches/peers/rdkafka_latency.py -b BROKERS -t TOPIC -r RATE -d SECONDS -s BYTES

The producer is at librdkafka's defaults apart from acks=all (its default too); the consumer has
a group.id only because the Python binding requires one: it is assigned every partition from the
start and commits nothing. The consumer runs in a thread (the binding releases the GIL while it
waits in librdkafka). The Python layer adds a few microseconds per record on both sides.
"""
import argparse
import math
import struct
import sys
import threading
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition


def pct(xs, p):
    if not xs:
        return math.nan
    rank = min(len(xs), max(1, math.ceil(p * len(xs))))
    return xs[rank - 1] / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-b", required=True)
    ap.add_argument("-t", required=True)
    ap.add_argument("-r", type=int, default=10000)
    ap.add_argument("-d", type=int, default=30)
    ap.add_argument("-s", type=int, default=100)
    a = ap.parse_args()
    if a.r <= 0 or a.d < 2 or a.s < 8:
        sys.exit("latency needs -r > 0, -d >= 2, -s >= 8")
    total = a.r * a.d
    warm_until = [2**64]  # records sent before this (ns) are warm-up; set when producing starts
    consumer = Consumer(
        {"bootstrap.servers": a.b, "group.id": "peers-latency", "enable.auto.commit": False}
    )
    md = consumer.list_topics(a.t, timeout=10).topics[a.t]
    consumer.assign([TopicPartition(a.t, p, OFFSET_BEGINNING) for p in md.partitions])
    result = {}

    def read():
        lat, n, idle = [], 0, time.monotonic()
        while n < total:
            msgs = consumer.consume(num_messages=10000, timeout=0.1)
            if not msgs:
                if time.monotonic() - idle > 10:
                    result["error"] = f"only {n} of {total} records arrived"
                    return
                continue
            idle = time.monotonic()
            now = time.time_ns()
            w = warm_until[0]
            for m in msgs:
                if m.error():
                    result["error"] = str(m.error())
                    return
                n += 1
                v = m.value()
                if v is None or len(v) < 8:
                    result["error"] = "a record without a send time"
                    return
                sent = struct.unpack_from(">Q", v)[0]
                if sent >= w:
                    lat.append(max(0, now - sent))
        result["lat"] = lat

    reader = threading.Thread(target=read)
    reader.start()
    failed = [0, None]

    def on_delivery(err, _msg):
        if err is not None:
            failed[0] += 1
            failed[1] = failed[1] or err

    producer = Producer({"bootstrap.servers": a.b, "acks": "all"})
    pad = b"x" * (a.s - 8)
    pack = struct.Struct(">Q").pack
    warm_until[0] = time.time_ns() + 1_000_000_000
    start = time.monotonic()
    for i in range(total):
        wait = start + i / a.r - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        while True:
            try:
                producer.produce(a.t, pack(time.time_ns()) + pad, on_delivery=on_delivery)
                break
            except BufferError:  # the local queue is full: serve delivery reports, retry
                producer.poll(0.01)
        producer.poll(0)
    producer.flush()
    elapsed = time.monotonic() - start
    if failed[0]:
        sys.exit(f"error: {failed[0]} records failed; first: {failed[1]}")
    reader.join()
    consumer.close()
    if "error" in result:
        sys.exit(f"error: {result['error']}")
    lat = sorted(result["lat"])
    print(
        f"records={total} measured={len(lat)} secs={elapsed:.3f} rate={total / elapsed:.0f} "
        f"p50_ms={pct(lat, 0.5):.2f} p99_ms={pct(lat, 0.99):.2f} p999_ms={pct(lat, 0.999):.2f} "
        f"max_ms={pct(lat, 1.0):.2f}"
    )


if __name__ == "__main__":
    main()
