"""Thin Python wrappers around ``scripts/kafka.sh`` and ``scripts/redis.sh``.

Used by the integration-test fixtures (and usable from a REPL or a benchmark):
nothing happens at import time; every function shells out to the scripts, which
own all the details (cache, ports, run directory, readiness checks).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS_DIR = REPO_ROOT / "scripts"

# A cold start may have to resolve the Kafka jars with Maven (or apt-get install
# redis-server) first, so allow generously more than the scripts' own
# readiness timeouts.
START_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 120.0
QUERY_TIMEOUT_S = 30.0


class InfraError(RuntimeError):
    """A script failed; ``output`` holds its combined stdout/stderr."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base}\n--- script output ---\n{self.output.rstrip()}" if self.output else base


@dataclass(frozen=True)
class ScriptResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return (self.stdout + self.stderr).strip()


def run_script(name: str, *args: str, timeout: float = QUERY_TIMEOUT_S) -> ScriptResult:
    """Run ``scripts/<name>`` with ``args``; never raises for a non-zero exit."""
    script = SCRIPTS_DIR / name
    try:
        proc = subprocess.run(
            ["bash", str(script), *args],
            cwd=REPO_ROOT,
            env=os.environ.copy(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        err = exc.stderr or ""
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        if isinstance(err, bytes):
            err = err.decode(errors="replace")
        return ScriptResult(124, out, err + f"\n{name} {' '.join(args)} timed out after {timeout:.0f}s")
    return ScriptResult(proc.returncode, proc.stdout, proc.stderr)


def _last_line(result: ScriptResult) -> str:
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _start(script: str, what: str) -> str:
    result = run_script(script, "start", timeout=START_TIMEOUT_S)
    value = _last_line(result)
    if result.returncode != 0 or not value:
        raise InfraError(f"scripts/{script} start failed (exit {result.returncode}): {what} unavailable", result.output)
    return value


def _stop(script: str) -> None:
    result = run_script(script, "stop", timeout=STOP_TIMEOUT_S)
    if result.returncode != 0:
        raise InfraError(f"scripts/{script} stop failed (exit {result.returncode})", result.output)


# --- Kafka --------------------------------------------------------------------------------------


def kafka_running() -> bool:
    return run_script("kafka.sh", "status").returncode == 0


def kafka_bootstrap() -> str:
    """Bootstrap address (``127.0.0.1:<port>``) of the running broker; raises if none."""
    result = run_script("kafka.sh", "bootstrap")
    value = _last_line(result)
    if result.returncode != 0 or not value:
        raise InfraError("Kafka is not running", result.output)
    return value


def start_kafka() -> str:
    """Start (or reuse) the local broker and return its bootstrap address."""
    return _start("kafka.sh", "Kafka")


def stop_kafka() -> None:
    """Stop the broker, keeping its data: `start_kafka` resumes it on the same address."""
    _stop("kafka.sh")


def kill_kafka() -> None:
    """SIGKILL the broker (a crash): its data stays, and `start_kafka` resumes it on the same address."""
    result = run_script("kafka.sh", "kill", timeout=STOP_TIMEOUT_S)
    if result.returncode != 0:
        raise InfraError(f"scripts/kafka.sh kill failed (exit {result.returncode})", result.output)


def reset_kafka() -> None:
    """Stop the broker and delete its data (what a test session leaves behind when it started it)."""
    result = run_script("kafka.sh", "reset", timeout=STOP_TIMEOUT_S)
    if result.returncode != 0:
        raise InfraError(f"scripts/kafka.sh reset failed (exit {result.returncode})", result.output)


# --- Redis --------------------------------------------------------------------------------------


def redis_running() -> bool:
    return run_script("redis.sh", "status").returncode == 0


def redis_url() -> str:
    """URL (``redis://127.0.0.1:<port>/0``) of the running server; raises if none."""
    result = run_script("redis.sh", "url")
    value = _last_line(result)
    if result.returncode != 0 or not value:
        raise InfraError("Redis is not running", result.output)
    return value


def start_redis() -> str:
    """Start (or reuse) the local Redis and return its URL."""
    return _start("redis.sh", "Redis")


def stop_redis() -> None:
    _stop("redis.sh")
