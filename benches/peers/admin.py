#!/usr/bin/env python3
"""Topic chores for benches/peers/run.sh, on librdkafka's admin client (confluent-kafka in .tools/py).

    PYTHONPATH=.tools/py python3 benches/peers/admin.py BOOTSTRAP create TOPIC PARTITIONS
    PYTHONPATH=.tools/py python3 benches/peers/admin.py BOOTSTRAP delete TOPIC...
    PYTHONPATH=.tools/py python3 benches/peers/admin.py BOOTSTRAP count TOPIC
    PYTHONPATH=.tools/py python3 benches/peers/admin.py BOOTSTRAP keys TOPIC K
    PYTHONPATH=.tools/py python3 benches/peers/admin.py BOOTSTRAP committed GROUP TOPIC
    PYTHONPATH=.tools/py python3 benches/peers/admin.py BOOTSTRAP dlt TOPIC

create makes TOPIC with the broker's default replication factor (and so its
min.insync.replicas) and waits until every partition has a leader; delete removes the topics
(a missing one is not an error); count prints the sum over partitions of high watermark minus
low watermark, i.e. the records the topic holds (offsets of a non-transactional topic);
keys reads up to 2 000 records from the start of every partition and fails unless each has a
key that is decimal text below K (the keyed workloads' keys), printing the distinct keys seen;
committed fails unless GROUP's committed offset of every partition of TOPIC that holds records
is its high watermark (the group has consumed every record), printing the sum of the committed offsets;
dlt reads every record of TOPIC and of TOPIC.DLT and fails unless the dead letters are exactly
TOPIC's records whose value starts with "poison", each once (by the dead letters'
kafka_dlt-original-partition / -offset headers, and their values), printing their number.
"""
import sys
import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4", "log_level": 3})


def create(bootstrap, topic, partitions):
    a = admin(bootstrap)
    futures = a.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=-1)])
    for t, f in futures.items():
        f.result(timeout=60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        md = a.list_topics(topic=topic, timeout=10).topics.get(topic)
        if (
            md is not None
            and md.error is None
            and len(md.partitions) == partitions
            and all(p.leader >= 0 and p.error is None for p in md.partitions.values())
        ):
            return
        time.sleep(0.2)
    sys.exit(f"create {topic}: partitions have no leader after 60 s")


def delete(bootstrap, topics):
    a = admin(bootstrap)  # kept alive until the futures complete
    futures = a.delete_topics(list(topics), operation_timeout=30)
    for t, f in futures.items():
        try:
            f.result(timeout=60)
        except Exception as e:  # noqa: BLE001
            if "UNKNOWN_TOPIC" not in str(e):
                sys.exit(f"delete {t}: {e}")


def count(bootstrap, topic):
    md = admin(bootstrap).list_topics(topic=topic, timeout=10).topics[topic]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "peers-count", "broker.address.family": "v4"})
    total = 0
    for p in md.partitions:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        total += hi - lo
    c.close()
    print(total)


def keys(bootstrap, topic, k):
    md = admin(bootstrap).list_topics(topic=topic, timeout=10).topics[topic]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "peers-keys", "broker.address.family": "v4",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
    seen, read, deadline = set(), 0, time.monotonic() + 30
    while read < 2000 and time.monotonic() < deadline:
        for m in c.consume(500, timeout=1):
            if m.error():
                continue
            read += 1
            key = m.key()
            if key is None or not key.isdigit() or int(key) >= k:
                c.close()
                sys.exit(f"keys {topic}: record at {m.partition()}/{m.offset()} has the key {key!r}, not decimal below {k}")
            seen.add(int(key))
    c.close()
    if read == 0:
        sys.exit(f"keys {topic}: no records read")
    print(len(seen))


def committed(bootstrap, group, topic):
    md = admin(bootstrap).list_topics(topic=topic, timeout=10).topics[topic]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "broker.address.family": "v4",
                  "enable.auto.commit": False})
    tps = c.committed([TopicPartition(topic, p) for p in md.partitions], timeout=30)
    total, short = 0, []
    for tp in tps:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
        total += max(tp.offset, 0)
        if tp.offset != hi and not (tp.offset < 0 and lo == hi):  # an empty partition: nothing to commit
            short.append(f"{tp.partition}: committed {tp.offset}, high watermark {hi}")
    c.close()
    if short:
        sys.exit(f"committed {group} {topic}: " + "; ".join(short))
    print(total)


def read_all(bootstrap, topic):
    """Every record of TOPIC, from the low to the high watermark of each partition."""
    md = admin(bootstrap).list_topics(topic=topic, timeout=10).topics[topic]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "peers-read", "broker.address.family": "v4",
                  "enable.auto.commit": False})
    want, tps = {}, []
    for p in md.partitions:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if hi > lo:
            want[p] = hi
            tps.append(TopicPartition(topic, p, lo))
    c.assign(tps)
    out, deadline = [], time.monotonic() + 120
    while want and time.monotonic() < deadline:
        for m in c.consume(1000, timeout=1):
            if m.error():
                continue
            out.append(m)
            if m.offset() + 1 >= want.get(m.partition(), 0):
                want.pop(m.partition(), None)
    c.close()
    if want:
        sys.exit(f"read {topic}: partitions {sorted(want)} not read to their end in 120 s")
    return out


def dlt(bootstrap, topic):
    poison = {(m.partition(), m.offset()) for m in read_all(bootstrap, topic)
              if (m.value() or b"").startswith(b"poison")}
    seen = []
    for m in read_all(bootstrap, topic + ".DLT"):
        h = dict(m.headers() or [])
        part, off = h.get("kafka_dlt-original-partition"), h.get("kafka_dlt-original-offset")
        if part is None or off is None or not (m.value() or b"").startswith(b"poison"):
            sys.exit(f"dlt {topic}: dead letter {m.partition()}/{m.offset()} is not a poison record "
                     f"(value {(m.value() or b'')[:10]!r}, original {part!r}/{off!r})")
        seen.append((int.from_bytes(part, "big", signed=True), int.from_bytes(off, "big", signed=True)))
    if len(seen) != len(set(seen)):
        sys.exit(f"dlt {topic}: {len(seen) - len(set(seen))} duplicate dead letters")
    if set(seen) != poison:
        sys.exit(f"dlt {topic}: {len(poison - set(seen))} poison records missing from the DLT, "
                 f"{len(set(seen) - poison)} dead letters of other records")
    print(len(seen))


def main():
    bootstrap, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if cmd == "create":
        create(bootstrap, args[0], int(args[1]))
    elif cmd == "delete":
        delete(bootstrap, args)
    elif cmd == "count":
        count(bootstrap, args[0])
    elif cmd == "keys":
        keys(bootstrap, args[0], int(args[1]))
    elif cmd == "committed":
        committed(bootstrap, args[0], args[1])
    elif cmd == "dlt":
        dlt(bootstrap, args[0])
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
