#!/usr/bin/env python3
"""Recording Kafka proxy (Python 3.11 stdlib only).

Listens on a local port, forwards every connection to an upstream broker, splits both
directions into Kafka frames (4-byte big-endian length prefix), reads the request header
(api_key i16, api_version i16, correlation_id i32) and pairs each response with its request by
correlation id. Every pair is recorded as a `Pair` (frame bytes without the length prefix).

Library use (capture.py):
    proxy = RecordingProxy(("127.0.0.1", upstream_port))
    port = proxy.start_in_thread()        # background event loop
    proxy.scenario = "produce-gzip"        # tags pairs whose *request* arrives from now on
    ...
    proxy.stop(); proxy.pairs

CLI (ad-hoc debugging):
    python3 proxy.py --listen 127.0.0.1:19093 --upstream 127.0.0.1:19092 [--out DIR]
    Prints one line per pair; with --out writes NNNN-<Api>-v<ver>.{req,resp}.bin on Ctrl-C.

The broker must advertise the proxy's address, or clients reconnect to the broker directly
after bootstrap.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import struct
import sys
import threading
import time
from dataclasses import dataclass, field

API_NAMES = {
    0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 4: "LeaderAndIsr",
    5: "StopReplica", 6: "UpdateMetadata", 7: "ControlledShutdown", 8: "OffsetCommit",
    9: "OffsetFetch", 10: "FindCoordinator", 11: "JoinGroup", 12: "Heartbeat",
    13: "LeaveGroup", 14: "SyncGroup", 15: "DescribeGroups", 16: "ListGroups",
    17: "SaslHandshake", 18: "ApiVersions", 19: "CreateTopics", 20: "DeleteTopics",
    21: "DeleteRecords", 22: "InitProducerId", 23: "OffsetForLeaderEpoch",
    24: "AddPartitionsToTxn", 25: "AddOffsetsToTxn", 26: "EndTxn", 27: "WriteTxnMarkers",
    28: "TxnOffsetCommit", 29: "DescribeAcls", 30: "CreateAcls", 31: "DeleteAcls",
    32: "DescribeConfigs", 33: "AlterConfigs", 34: "AlterReplicaLogDirs",
    35: "DescribeLogDirs", 36: "SaslAuthenticate", 37: "CreatePartitions",
    38: "CreateDelegationToken", 39: "RenewDelegationToken", 40: "ExpireDelegationToken",
    41: "DescribeDelegationToken", 42: "DeleteGroups", 43: "ElectLeaders",
    44: "IncrementalAlterConfigs", 45: "AlterPartitionReassignments",
    46: "ListPartitionReassignments", 47: "OffsetDelete", 48: "DescribeClientQuotas",
    49: "AlterClientQuotas", 50: "DescribeUserScramCredentials",
    51: "AlterUserScramCredentials", 55: "DescribeQuorum", 56: "AlterPartition",
    57: "UpdateFeatures", 60: "DescribeCluster", 61: "DescribeProducers",
    64: "UnregisterBroker", 65: "DescribeTransactions", 66: "ListTransactions",
    67: "AllocateProducerIds", 68: "ConsumerGroupHeartbeat", 69: "ConsumerGroupDescribe",
    71: "GetTelemetrySubscriptions", 72: "PushTelemetry", 74: "ListClientMetricsResources",
    75: "DescribeTopicPartitions", 76: "ShareGroupHeartbeat", 77: "ShareGroupDescribe",
    78: "ShareFetch", 79: "ShareAcknowledge",
}

MAX_FRAME = 64 * 1024 * 1024  # refuse absurd lengths instead of allocating them


def api_name(key: int) -> str:
    return API_NAMES.get(key, f"Api{key}")


@dataclass
class Pair:
    seq: int                 # order in which the request was seen (global across connections)
    conn: int                # connection number
    scenario: str
    api_key: int
    api_version: int
    correlation_id: int
    request: bytes           # frame without the length prefix (starts at the request header)
    response: bytes | None   # None: the broker never answered (connection closed first)
    t_request: float = 0.0
    t_response: float | None = None

    @property
    def api_name(self) -> str:
        return api_name(self.api_key)


class RecordingProxy:
    def __init__(self, upstream: tuple[str, int], listen: tuple[str, int] = ("127.0.0.1", 0),
                 on_pair=None):
        self.upstream = upstream
        self.listen = listen
        self.scenario = "default"
        self.pairs: list[Pair] = []
        self.on_pair = on_pair
        self._seq = itertools.count()
        self._conn_ids = itertools.count(1)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task] = set()
        self.port: int | None = None
        self.errors: list[str] = []

    # -- framing -----------------------------------------------------------------
    @staticmethod
    async def _read_frame(reader: asyncio.StreamReader) -> bytes | None:
        try:
            hdr = await reader.readexactly(4)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        (n,) = struct.unpack(">i", hdr)
        if n < 0 or n > MAX_FRAME:
            raise ValueError(f"bad frame length {n}")
        try:
            return await reader.readexactly(n)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    # -- per connection ----------------------------------------------------------
    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter):
        conn = next(self._conn_ids)
        try:
            b_reader, b_writer = await asyncio.open_connection(*self.upstream)
        except OSError as e:
            self.errors.append(f"conn {conn}: upstream connect failed: {e}")
            c_writer.close()
            return
        inflight: dict[int, Pair] = {}

        async def client_to_broker():
            while True:
                frame = await self._read_frame(c_reader)
                if frame is None:
                    break
                if len(frame) >= 8:
                    key, ver, corr = struct.unpack(">hhi", frame[:8])
                    p = Pair(next(self._seq), conn, self.scenario, key, ver, corr, frame, None,
                             t_request=time.monotonic())
                    if corr in inflight:
                        self.errors.append(f"conn {conn}: duplicate in-flight correlation id {corr}")
                    inflight[corr] = p
                else:
                    self.errors.append(f"conn {conn}: short request frame ({len(frame)} bytes)")
                b_writer.write(struct.pack(">i", len(frame)) + frame)
                await b_writer.drain()

        async def broker_to_client():
            while True:
                frame = await self._read_frame(b_reader)
                if frame is None:
                    break
                if len(frame) >= 4:
                    (corr,) = struct.unpack(">i", frame[:4])
                    p = inflight.pop(corr, None)
                    if p is None:
                        self.errors.append(f"conn {conn}: response with unknown correlation id {corr}")
                    else:
                        p.response = frame
                        p.t_response = time.monotonic()
                        self._record(p)
                c_writer.write(struct.pack(">i", len(frame)) + frame)
                await c_writer.drain()

        t1 = asyncio.ensure_future(client_to_broker())
        t2 = asyncio.ensure_future(broker_to_client())
        try:
            # When either side ends, close both; then let the other direction finish.
            done, pending = await asyncio.wait({t1, t2}, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t.exception() is not None and not isinstance(t.exception(), ConnectionError):
                    self.errors.append(f"conn {conn}: {t.exception()!r}")
        finally:
            for w in (c_writer, b_writer):
                try:
                    w.close()
                except Exception:
                    pass
            for t in (t1, t2):
                t.cancel()
            await asyncio.gather(t1, t2, return_exceptions=True)
            for p in sorted(inflight.values(), key=lambda p: p.seq):  # requests never answered
                self._record(p)

    def _record(self, p: Pair):
        with self._lock:
            self.pairs.append(p)
        if self.on_pair:
            self.on_pair(p)

    # -- lifecycle ---------------------------------------------------------------
    async def serve(self):
        async def handle(r, w):
            task = asyncio.current_task()
            self._tasks.add(task)
            try:
                await self._handle(r, w)
            except asyncio.CancelledError:
                pass  # stop(): swallow, so asyncio does not log the cancelled handler
            finally:
                self._tasks.discard(task)
        self._server = await asyncio.start_server(handle, *self.listen)
        self.port = self._server.sockets[0].getsockname()[1]
        return self._server

    def start_in_thread(self) -> int:
        ready = threading.Event()

        def run():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self.serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="recording-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("proxy did not start")
        return self.port

    def stop(self):
        if self._loop is None:
            return

        async def shutdown():
            self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def sorted_pairs(self) -> list[Pair]:
        with self._lock:
            return sorted(self.pairs, key=lambda p: p.seq)


def write_pairs(pairs: list[Pair], out: str):
    os.makedirs(out, exist_ok=True)
    for i, p in enumerate(pairs):
        base = os.path.join(out, f"{i:04d}-{p.api_name}-v{p.api_version}")
        with open(base + ".req.bin", "wb") as f:
            f.write(p.request)
        if p.response is not None:
            with open(base + ".resp.bin", "wb") as f:
                f.write(p.response)


def _hostport(s: str) -> tuple[str, int]:
    h, _, p = s.rpartition(":")
    return h, int(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--out", help="write frames here on exit")
    a = ap.parse_args()

    def show(p: Pair):
        r = "-" if p.response is None else len(p.response)
        print(f"conn={p.conn} corr={p.correlation_id} {p.api_name} v{p.api_version} "
              f"req={len(p.request)}B resp={r}B", flush=True)

    proxy = RecordingProxy(_hostport(a.upstream), _hostport(a.listen), on_pair=show)

    async def run():
        await proxy.serve()
        print(f"proxy listening on 127.0.0.1:{proxy.port} -> {a.upstream}", file=sys.stderr, flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    finally:
        for e in proxy.errors:
            print("proxy error:", e, file=sys.stderr)
        if a.out:
            write_pairs(proxy.sorted_pairs(), a.out)
            print(f"wrote {len(proxy.pairs)} pairs to {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
