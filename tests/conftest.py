"""Suite-wide: the shared fixtures, the markers each folder's tests carry, and which engine build the
tests run against (a stale compiled one is refused).

`TAGSTREAM_EXPECT_ENGINE=mypyc|python` makes a run fail unless that build is the one loaded (the
compiled-build test runs the unit tests against the wheel that way)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.runtime.engine_build import engine_build

pytest_plugins = ["tests.support.fixtures"]

FOLDER_MARKERS = {"integration": ("integration",), "faults": ("integration", "faults")}
"""Markers (declared in pyproject.toml) every test of a folder carries, for `-m` selection."""


def pytest_report_header(config: pytest.Config) -> str:
    return f"tagstream engine: {engine_build().describe()}"


def pytest_configure(config: pytest.Config) -> None:
    build = engine_build()
    if build.stale:
        raise pytest.UsageError(f"the compiled engine is stale: {build.describe()}")
    expected = os.environ.get("TAGSTREAM_EXPECT_ENGINE")
    if expected and expected != build.kind:
        raise pytest.UsageError(f"TAGSTREAM_EXPECT_ENGINE={expected}, but the engine is {build.describe()}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests = Path(__file__).resolve().parent
    for item in items:
        path = Path(str(item.fspath)).resolve()
        folder = path.relative_to(tests).parts[0] if path.is_relative_to(tests) else ""
        for marker in FOLDER_MARKERS.get(folder, ()):
            item.add_marker(marker)
