"""A redis-server process of a test's own: start, SIGKILL, wipe its files, start again on the same port."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.support.netprobe import free_port

_START_TIMEOUT_S = 30.0


class RedisServer:
    def __init__(self, directory: Path, *, appendonly: bool = True, extra: tuple[str, ...] = ()) -> None:
        self.directory = directory
        self.port = free_port()
        self.appendonly = appendonly
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--appendfsync",
                "everysec",
                "--logfile",
                str(self.directory / "redis.log"),
                *self.extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not start; see {self.directory / 'redis.log'}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final write; what survives is what the append-only file holds."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def wipe(self) -> None:
        """Delete every data file: the next start is an empty Redis (a lost volume, a new pod)."""
        assert self.process is None, "kill or stop the server first"
        shutil.rmtree(self.directory, ignore_errors=True)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self.process = None

    def _answers(self) -> bool:
        result = subprocess.run(
            ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True, timeout=5, check=False
        )
        return result.stdout.strip() == "PONG"
