"""The network checks the infrastructure scripts run (tests/support/netprobe.py), against the real
broker and Redis: a Kafka broker is told apart from another server on a port, and from no server."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.support import netprobe

NETPROBE = Path(netprobe.__file__)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    # as the scripts run it: a file, by a Python that may have no project on its path
    return subprocess.run(
        [sys.executable, "-I", str(NETPROBE), *args], capture_output=True, text=True, timeout=30, check=False
    )


def test_a_free_port_is_free_until_someone_listens_on_it() -> None:
    port = int(_run("free-port").stdout)
    assert _run("port-in-use", str(port)).returncode == 1
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        assert _run("port-in-use", str(port)).returncode == 0


def test_the_running_broker_is_ready(kafka_bootstrap: str) -> None:
    assert _run("kafka-ready", kafka_bootstrap).returncode == 0


def test_redis_on_a_port_is_not_taken_for_a_broker(redis_url: str) -> None:
    port = urlparse(redis_url).port
    assert port is not None
    assert netprobe.port_in_use(port)
    assert not netprobe.kafka_ready(f"127.0.0.1:{port}")


def test_a_port_nobody_serves_is_not_a_broker() -> None:
    assert _run("kafka-ready", f"127.0.0.1:{netprobe.free_port()}").returncode == 1


@pytest.mark.parametrize("arguments", [[], ["port-in-use", "http"], ["kafka-ready", "no-port"], ["reboot"]])
def test_a_wrong_command_line_prints_the_usage_and_exits_2(arguments: list[str]) -> None:
    done = _run(*arguments)
    assert done.returncode == 2
    assert "netprobe.py kafka-ready ADDRESS" in done.stderr
