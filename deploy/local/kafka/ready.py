"""Readiness probe for the local Kafka broker (stdlib only).

Sends a Metadata v4 request (no topics) and exits 0 if the broker answers with
at least one live (unfenced) broker, 1 otherwise. Usage: ready.py HOST PORT
"""

import socket
import struct
import sys


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    client_id = b"pixelmesh-ready"
    # request header v1: api_key=3 (Metadata), api_version=4, correlation_id, client_id
    header = struct.pack(">hhih", 3, 4, 7, len(client_id)) + client_id
    # Metadata v4 body: topics = [] (no topics), allow_auto_topic_creation = false
    body = struct.pack(">i?", 0, False)
    payload = header + body
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.settimeout(2)
            sock.sendall(struct.pack(">i", len(payload)) + payload)
            size = struct.unpack(">i", _recv(sock, 4))[0]
            data = _recv(sock, size)
    except (OSError, struct.error, EOFError):
        return 1
    correlation_id, _throttle, broker_count = struct.unpack_from(">iii", data, 0)
    return 0 if correlation_id == 7 and broker_count >= 1 else 1


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


if __name__ == "__main__":
    sys.exit(main())
