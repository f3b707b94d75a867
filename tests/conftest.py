"""Suite-wide: say which engine build the tests run against, and refuse a stale compiled one.

`TAGSTREAM_EXPECT_ENGINE=mypyc|python` makes a run fail unless that build is the one loaded (the
compiled-build test runs the unit tests against the wheel that way)."""

from __future__ import annotations

import os

import pytest

from services.runtime.engine_build import engine_build


def pytest_report_header(config: pytest.Config) -> str:
    return f"tagstream engine: {engine_build().describe()}"


def pytest_configure(config: pytest.Config) -> None:
    build = engine_build()
    if build.stale:
        raise pytest.UsageError(f"the compiled engine is stale: {build.describe()}")
    expected = os.environ.get("TAGSTREAM_EXPECT_ENGINE")
    if expected and expected != build.kind:
        raise pytest.UsageError(f"TAGSTREAM_EXPECT_ENGINE={expected}, but the engine is {build.describe()}")
