"""Network checks for the infrastructure scripts and the tests: a free loopback port, whether a port
is taken, whether a Kafka broker answers. Standard library only: scripts/kafka.sh and redis.sh run it
as a file (`python tests/support/netprobe.py free-port`) before any virtualenv exists.

    netprobe.py free-port            print a port nobody listens on (127.0.0.1)
    netprobe.py port-in-use PORT     exit 0 when something accepts connections on 127.0.0.1:PORT
    netprobe.py kafka-ready ADDRESS  exit 0 when the broker at HOST:PORT answers a metadata request
                                     with at least one broker and an active controller
"""

from __future__ import annotations

import socket
import struct
import sys

CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 3.0
MAX_RESPONSE_BYTES = 1 << 20
"""A metadata answer without topics is a few hundred bytes; anything larger is not a broker's."""
_CORRELATION_ID = 42
_CLIENT_ID = b"tagstream-probe"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(("127.0.0.1", port))
        except OSError:
            return False
        return True


def kafka_ready(address: str) -> bool:
    """Sends a Kafka MetadataRequest (v1, no topics) and reads the brokers and controller id."""
    host, _, port = address.rpartition(":")
    # header: api_key 3 (Metadata), api_version 1, correlation id, client id; body: topics [] (none)
    body = struct.pack(">hhih", 3, 1, _CORRELATION_ID, len(_CLIENT_ID)) + _CLIENT_ID + struct.pack(">i", 0)
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S) as connection:
            connection.settimeout(READ_TIMEOUT_S)
            connection.sendall(struct.pack(">i", len(body)) + body)
            (size,) = struct.unpack(">i", _read(connection, 4))
            if not 0 < size <= MAX_RESPONSE_BYTES:
                return False
            return _has_controller(_read(connection, size))
    except (OSError, ValueError, struct.error):
        return False


def _read(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data


def _has_controller(data: bytes) -> bool:
    (correlation_id, brokers) = struct.unpack_from(">ii", data, 0)
    if correlation_id != _CORRELATION_ID or brokers < 1:
        return False
    offset = 8
    for _ in range(brokers):
        offset += 4  # node id
        (host_length,) = struct.unpack_from(">h", data, offset)
        offset += 2 + host_length + 4  # host, port
        (rack_length,) = struct.unpack_from(">h", data, offset)
        offset += 2 + max(rack_length, 0)  # rack (nullable: -1)
    controller_id: int = struct.unpack_from(">i", data, offset)[0]
    return controller_id >= 0


def main(argv: list[str]) -> int:
    match argv:
        case ["free-port"]:
            print(free_port())
            return 0
        case ["port-in-use", port] if port.isdigit():
            return 0 if port_in_use(int(port)) else 1
        case ["kafka-ready", address] if ":" in address:
            return 0 if kafka_ready(address) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
