#!/usr/bin/env python3
"""Ask a Kafka broker for its Metadata and print the number of brokers it lists.

    metadata.py HOST:PORT [TIMEOUT_SECONDS]

Sends ApiVersions-free Metadata v1 (no topics) on a plain TCP connection and prints
`brokers=N controller=ID` on success, or exits 1. Used by scripts/kafka.sh to wait until every
node of the cluster is registered; no Kafka client library is needed.
"""
import socket
import struct
import sys


def request(host: str, port: int, timeout: float) -> tuple[int, int]:
    client_id = b"rekafka-kafka.sh"
    # Request header v1: api_key, api_version, correlation_id, client_id (nullable string).
    header = struct.pack(">hhih", 3, 1, 7, len(client_id)) + client_id
    body = struct.pack(">i", 0)  # topics: empty array (v1: -1 = all topics, 0 = none)
    frame = header + body
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(frame)) + frame)
        size = struct.unpack(">i", read_exact(s, 4))[0]
        if size < 8 or size > 1 << 20:
            raise ValueError(f"unexpected response size {size}")
        data = read_exact(s, size)
    pos = 4  # correlation id
    (n,) = struct.unpack_from(">i", data, pos)
    pos += 4
    for _ in range(n):
        pos += 4  # node id
        (hlen,) = struct.unpack_from(">h", data, pos)
        pos += 2 + hlen + 4  # host, port
        (rlen,) = struct.unpack_from(">h", data, pos)
        pos += 2 + max(rlen, 0)  # rack (nullable)
    (controller,) = struct.unpack_from(">i", data, pos)
    return n, controller


def read_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def main() -> int:
    host, port = sys.argv[1].rsplit(":", 1)
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
    try:
        n, controller = request(host, int(port), timeout)
    except (OSError, ValueError, struct.error) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"brokers={n} controller={controller}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
