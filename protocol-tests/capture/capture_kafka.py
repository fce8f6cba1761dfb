#!/usr/bin/env python3
"""Capture real librdkafka <-> Apache Kafka protocol frames into protocol-tests/frames-kafka/.

Run through scripts/regen-frames.sh --kafka (which installs the tools first), or directly:

    PYTHONPATH=.tools/py python3 protocol-tests/capture/capture_kafka.py [--out protocol-tests/frames-kafka]

What it does:
  1. starts a private 1-node Kafka with a SASL listener (scripts/kafka.sh start --nodes 1 --sasl,
     KAFKA_CLUSTER_DIR=target/kafka-frames, so it never touches another cluster),
  2. starts two recording proxies (proxy.py), one in front of the PLAINTEXT listener and one in
     front of the SASL_PLAINTEXT listener, stops the node, rewrites its advertised.listeners to the
     proxies' addresses and restarts it (scripts/kafka.sh restart 1): every connection after
     bootstrap goes through a proxy too (including the broker's own WriteTxnMarkers to itself,
     which travel over the PLAINTEXT listener),
  3. runs the scenarios below with confluent-kafka (librdkafka) and a few hand-built requests,
     tagging each frame pair,
  4. writes the pairs as capture.py does (NNNN-<Api>-v<ver>.req.bin / .resp.bin WITHOUT the
     4-byte length prefix, duplicates dropped), manifest.json and expected-records.json, then
     stops and deletes the cluster.

Scenarios: setup (CreateTopics), produce-idempotent, produce-txn (commit 3, abort 2, commit 2:
InitProducerId, AddPartitionsToTxn, EndTxn, and the broker's WriteTxnMarkers),
consume-<topic>-<isolation> (Fetch from offset 0; after the aborted transaction the
read_committed responses for kafka-txn carry the aborted-transactions list), group (subscribe
with the classic protocol: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, OffsetCommit,
OffsetFetch, LeaveGroup), raw (hand-built OffsetForLeaderEpoch v4 and ApiVersions v0), and
sasl-plain / sasl-scram-sha-256 / sasl-scram-sha-512 (librdkafka logins: SaslHandshake v1 +
SaslAuthenticate) and sasl-wrong-password (hand-built PLAIN login with a wrong password:
SASL_AUTHENTICATION_FAILED).
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, ".tools", "py"))

from proxy import RecordingProxy  # noqa: E402
import capture  # noqa: E402  (the Tansu capture: shared output and record helpers)
from capture import TS0, TIMEOUT, b64, rec_json  # noqa: E402

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

CLIENT_ID = "rekafka-capture"
TXN_ID = "rekafka-capture-txn"
GROUP_ID = "rekafka-capture-group"
SASL_USER, SASL_PASSWORD = "alice", "alice-secret"
KAFKA_SH = os.path.join(ROOT, "scripts", "kafka.sh")
T_PLAIN, T_TXN, T_GROUP = "kafka-plain", "kafka-txn", "kafka-group"


def log(*a):
    print("[capture-kafka]", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- cluster
class Cluster:
    """A private 1-node Kafka whose listeners are advertised at the proxies' addresses."""

    def __init__(self, directory: str):
        self.dir = directory
        self.env = dict(os.environ, KAFKA_CLUSTER_DIR=directory)
        if os.path.exists(os.path.join(directory, "node1", "pid")):
            self.kafka("stop", check=False)
        self.kafka("start", "--nodes", "1", "--sasl")
        self.node = os.path.join(directory, "node1")
        self.plain = int(open(os.path.join(self.node, "port.PLAINTEXT")).read())
        self.sasl = int(open(os.path.join(self.node, "port.SASL")).read())

    def kafka(self, *args, check=True):
        out = subprocess.run([KAFKA_SH, *args], env=self.env, stdout=subprocess.PIPE, text=True)
        if check and out.returncode != 0:
            raise SystemExit(f"scripts/kafka.sh {' '.join(args)} failed")
        return out.stdout

    def advertise(self, plain_port: int, sasl_port: int):
        """Restarts the node with PLAINTEXT and SASL advertised at these ports."""
        self.kafka("stop")
        props = os.path.join(self.node, "server.properties")
        text = open(props).read()
        adv = f"advertised.listeners=PLAINTEXT://127.0.0.1:{plain_port},SASL://127.0.0.1:{sasl_port}"
        text, n = re.subn(r"(?m)^advertised\.listeners=.*$", adv, text)
        if n != 1:
            raise SystemExit("advertised.listeners not found in server.properties")
        with open(props, "w") as f:
            f.write(text)
        self.kafka("restart", "1")

    def stop(self):
        self.kafka("stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- raw requests
def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return buf


def uvarint(n: int) -> bytes:
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def compact_str(s: bytes) -> bytes:
    return uvarint(len(s) + 1) + s


class Raw:
    """One hand-driven connection: request header v1 (non-flexible) or v2 (flexible)."""

    def __init__(self, addr: str):
        host, port = addr.split(":")
        self.s = socket.create_connection((host, int(port)), timeout=10)
        self.corr = 0

    def call(self, api_key, ver, body, flexible):
        self.corr += 1
        cid = CLIENT_ID.encode()
        hdr = struct.pack(">hhih", api_key, ver, self.corr, len(cid)) + cid + (b"\x00" if flexible else b"")
        frame = hdr + body
        self.s.sendall(struct.pack(">i", len(frame)) + frame)
        n = struct.unpack(">i", _recv_exact(self.s, 4))[0]
        return _recv_exact(self.s, n)

    def close(self):
        self.s.close()


def client_id(request: bytes) -> str:
    """The client id of a request frame (header v1+: a nullable i16-length string at byte 8)."""
    if len(request) < 10:
        return ""
    (n,) = struct.unpack_from(">h", request, 8)
    return request[10:10 + n].decode(errors="replace") if n >= 0 else ""


# ---------------------------------------------------------------- scenarios
class Capture:
    def __init__(self, proxies, bootstrap: str, sasl_bootstrap: str):
        self.proxies = proxies
        self.bs = bootstrap
        self.sasl_bs = sasl_bootstrap
        self.expected: dict = {}
        self.observations: list[str] = []

    def scenario(self, name):
        import gc
        gc.collect()
        time.sleep(0.05)
        log(f"scenario {name}")
        for p in self.proxies:
            p.scenario = name

    def base(self, **kw):
        c = {"bootstrap.servers": self.bs, "client.id": CLIENT_ID,
             "broker.address.family": "v4", "topic.metadata.refresh.interval.ms": 600000}
        c.update(kw)
        return c

    def setup(self):
        self.scenario("setup")
        a = AdminClient(self.base())
        topics = [T_PLAIN, T_TXN, T_GROUP]
        for f in a.create_topics([NewTopic(t, 1, 1) for t in topics], request_timeout=TIMEOUT).values():
            f.result()
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            md = a.list_topics(timeout=5)
            if all(t in md.topics and not md.topics[t].error for t in topics):
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

    def produce_plain(self, topic=T_PLAIN, tag="produce-idempotent"):
        self.scenario(tag)
        p = Producer(self.base(**{"acks": "all", "enable.idempotence": True, "linger.ms": 500,
                                  "compression.type": "none", "message.timeout.ms": 20000}))
        recs = [{"key": b"key-%d" % i if i != 2 else None, "value": b"value-%d" % i if i != 3 else None,
                 "headers": [("h", b"x"), ("h", None)] if i == 1 else [], "timestamp": TS0 + i}
                for i in range(8)]
        offsets: list = []
        errs = self._produce(p, topic, recs, offsets)
        if p.flush(TIMEOUT) or errs:
            raise RuntimeError(f"{topic}: delivery failed: {errs}")
        self.expected[topic] = {"partition": 0, "compression": "none", "idempotent": True,
                                "transactional": False,
                                "records": [rec_json(r, o) for r, o in zip(recs, offsets)]}

    def produce_txn(self, topic=T_TXN):
        self.scenario("produce-txn")
        p = Producer(self.base(**{"transactional.id": TXN_ID, "acks": "all", "linger.ms": 500,
                                  "compression.type": "none", "transaction.timeout.ms": 60000}))
        p.init_transactions(TIMEOUT)
        plan = [("committed", 3), ("aborted", 2), ("committed", 2)]
        out_recs, txns = [], []
        for n, (outcome, count) in enumerate(plan):
            recs = [{"key": b"t%d-k%d" % (n, j), "value": b"t%d-v%d" % (n, j),
                     "headers": [("txn", b"%d" % n)] if j == 0 else [],
                     "timestamp": TS0 + 100_000 * (n + 1) + j} for j in range(count)]
            p.begin_transaction()
            offsets: list = []
            errs = self._produce(p, topic, recs, offsets)
            if p.flush(TIMEOUT) or errs:  # flush first so aborted records really reach the log
                raise RuntimeError(f"txn {n}: {errs}")
            if outcome == "committed":
                p.commit_transaction(TIMEOUT)
            else:
                p.abort_transaction(TIMEOUT)
            txns.append({"txn": n, "outcome": outcome, "first_offset": offsets[0], "record_count": count})
            for r, o in zip(recs, offsets):
                out_recs.append({**rec_json(r, o), "txn": n, "outcome": outcome})
        self.expected[topic] = {
            "partition": 0, "compression": "none", "idempotent": True, "transactional": True,
            "transactional_id": TXN_ID, "transactions": txns, "records": out_recs,
            "note": "each transaction is one batch followed by one control batch (COMMIT or ABORT) "
                    "written by the broker, so offsets skip one per transaction",
        }

    def consume(self, topic, isolation):
        self.scenario(f"consume-{topic}-{isolation}")
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
            got.append(m.offset())
        else:
            raise RuntimeError(f"{topic}: no partition EOF within {TIMEOUT}s")
        c.close()
        exp = self.expected[topic]["records"]
        want = [r["offset"] for r in exp if isolation == "read_uncommitted" or r.get("outcome") != "aborted"]
        if got != want:
            raise RuntimeError(f"{topic} ({isolation}): consumed offsets {got}, want {want}")
        self.expected[topic][f"{isolation}_offsets"] = got

    def group(self, topic=T_GROUP):
        self.produce_plain(topic, tag="group-produce")
        self.scenario("group")
        c = Consumer(self.base(**{
            "group.id": GROUP_ID, "group.protocol": "classic", "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100,
            "partition.assignment.strategy": "range",
        }))
        c.subscribe([topic])
        want = len(self.expected[topic]["records"])
        n, deadline, last = 0, time.time() + 30, None
        while n < want and time.time() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            n, last = n + 1, m
        if n < want:
            raise RuntimeError(f"group: consumed {n}/{want}")
        c.commit(message=last, asynchronous=False)                       # OffsetCommit
        committed = c.committed([TopicPartition(topic, 0)], timeout=10)  # OffsetFetch
        if committed[0].offset != want:
            raise RuntimeError(f"group: committed offset {committed[0].offset}, want {want}")
        time.sleep(1.2)  # a couple of Heartbeats
        c.close()        # LeaveGroup
        self.expected[topic]["group_id"] = GROUP_ID
        self.expected[topic]["committed_offset"] = want

    def raw(self):
        """Requests librdkafka does not send here, built by hand and sent through the proxy."""
        self.scenario("raw")
        r = Raw(self.bs)
        # OffsetForLeaderEpoch v4 (flexible): replica_id -1; kafka-txn partition 0 with leader
        # epoch 0 (current epoch unknown: -1), and partition 7, which does not exist.
        parts = b"".join(struct.pack(">iii", p, -1, 0) + b"\x00" for p in (0, 7))
        topic = compact_str(T_TXN.encode()) + uvarint(3) + parts + b"\x00"
        r.call(23, 4, struct.pack(">i", -1) + uvarint(2) + topic + b"\x00", True)
        # ApiVersions v0: the whole table in the non-flexible layout.
        r.call(18, 0, b"", False)
        r.close()
        exp = self.expected[T_TXN]
        # The end offset of epoch 0 is the log end: the last record plus its control batch.
        exp["log_end_offset"] = exp["records"][-1]["offset"] + 2

    def sasl(self, mechanism):
        self.scenario(f"sasl-{mechanism.lower()}")
        a = AdminClient({"bootstrap.servers": self.sasl_bs, "client.id": CLIENT_ID,
                         "broker.address.family": "v4", "security.protocol": "SASL_PLAINTEXT",
                         "sasl.mechanism": mechanism, "sasl.username": SASL_USER,
                         "sasl.password": SASL_PASSWORD})
        md = a.list_topics(T_PLAIN, timeout=TIMEOUT)
        if md.topics[T_PLAIN].error is not None:
            raise RuntimeError(f"sasl {mechanism}: {md.topics[T_PLAIN].error}")
        del a

    def sasl_wrong_password(self):
        self.scenario("sasl-wrong-password")
        r = Raw(self.sasl_bs)
        mech = b"PLAIN"
        r.call(17, 1, struct.pack(">h", len(mech)) + mech, False)  # SaslHandshake v1
        auth = b"\x00" + SASL_USER.encode() + b"\x00wrong-password"
        r.call(36, 2, uvarint(len(auth) + 1) + auth + b"\x00", True)  # SaslAuthenticate v2
        r.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "protocol-tests", "frames-kafka"))
    ap.add_argument("--cluster-dir", default=os.path.join(ROOT, "target", "kafka-frames"))
    a = ap.parse_args()
    t0 = time.time()

    cluster = Cluster(a.cluster_dir)
    plain = RecordingProxy(("127.0.0.1", cluster.plain))
    sasl = RecordingProxy(("127.0.0.1", cluster.sasl))
    try:
        pport, sport = plain.start_in_thread(), sasl.start_in_thread()
        cluster.advertise(pport, sport)
        log(f"proxies 127.0.0.1:{pport} -> {cluster.plain} (PLAINTEXT), "
            f"127.0.0.1:{sport} -> {cluster.sasl} (SASL_PLAINTEXT)")
        cap = Capture([plain, sasl], f"127.0.0.1:{pport}", f"127.0.0.1:{sport}")
        cap.setup()
        cap.produce_plain()
        cap.produce_txn()
        cap.consume(T_TXN, "read_committed")
        cap.consume(T_TXN, "read_uncommitted")
        cap.consume(T_PLAIN, "read_uncommitted")
        cap.group()
        cap.raw()
        for m in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            cap.sasl(m)
        cap.sasl_wrong_password()
        cap.scenario("end")
        time.sleep(0.3)
    finally:
        plain.stop()
        sasl.stop()
        cluster.stop()
    errors = plain.errors + sasl.errors
    for e in errors:
        log("proxy error:", e)
    # One sequence over both proxies, in the order the requests were seen; the SASL proxy's
    # connections are numbered from 1001.
    for p in sasl.pairs:
        p.conn += 1000
    pairs = sorted(plain.pairs + sasl.pairs, key=lambda p: p.t_request)
    # The broker's requests to itself (transaction markers, KIP-890 verification) came through
    # the PLAINTEXT proxy too; they are inter-broker versions newer than kafka-protocol 0.18
    # knows (ApiVersions v5, WriteTxnMarkers v2), so only the clients' pairs are kept.
    ours = [p for p in pairs if client_id(p.request) == CLIENT_ID]
    inter_broker = sorted({f"{client_id(p.request)}: {p.api_name} v{p.api_version}"
                           for p in pairs if client_id(p.request) != CLIENT_ID})
    pairs = ours
    entries = capture.write_output(
        pairs, a.out, cap.expected, cap.observations, errors,
        broker="Apache Kafka 4.4.0 (scripts/kafka.sh, 1 KRaft node, --sasl)",
        generated_by="protocol-tests/capture/capture_kafka.py (scripts/regen-frames.sh --kafka)",
        extra={"inter_broker_pairs_dropped": inter_broker})
    size = sum(os.path.getsize(f) for f in glob.glob(os.path.join(a.out, "*")))
    apis = sorted({(e["api_key"], e["api_name"], e["api_version"]) for e in entries})
    log(f"{len(pairs)} pairs captured, {len(entries)} kept, {size} bytes in {a.out}, {time.time() - t0:.1f}s")
    log("APIs: " + ", ".join(f"{n} v{v}" for _, n, v in apis))
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
