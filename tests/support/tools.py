"""The deployment tools the tests run (helm, promtool, the compose validator), installed by their scripts.

Nothing happens at import time. A tool that cannot be installed fails the test that needs it, with the
script's output: these tests are never skipped.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from functools import cache
from pathlib import Path

from tests.support.infra import REPO_ROOT, InfraError, run_script

CHART = REPO_ROOT / "deploy" / "helm" / "tagstream"
CHART_FILES = CHART / "files"
# The first run builds helm (a few minutes on 2 cores) or installs Debian's prometheus package.
INSTALL_TIMEOUT_S = 1800.0
RUN_TIMEOUT_S = 120.0


@cache
def tool(script: str) -> Path:
    """The binary `scripts/<script> path` installs (once per session) and names."""
    result = run_script(script, "path", timeout=INSTALL_TIMEOUT_S)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if result.returncode != 0 or not lines or not Path(lines[-1]).is_file():
        raise InfraError(f"scripts/{script} path failed (exit {result.returncode}): tool unavailable", result.output)
    return Path(lines[-1])


def run(
    binary: Path, *args: str | Path, cwd: Path = REPO_ROOT, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a tool; the caller checks the exit code (failing runs are what some tests expect).
    `env` is added to this process's environment."""
    return subprocess.run(
        [str(binary), *map(str, args)],
        cwd=cwd,
        env=None if env is None else {**os.environ, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def run_ok(binary: Path, *args: str | Path, cwd: Path = REPO_ROOT, env: Mapping[str, str] | None = None) -> str:
    """Run a tool that must succeed; returns its stdout."""
    done = run(binary, *args, cwd=cwd, env=env)
    assert done.returncode == 0, f"{binary.name} {' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout
