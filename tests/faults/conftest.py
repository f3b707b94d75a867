"""Fault-injection fixtures: the real Kafka broker of the integration tests, and Redis servers of a
test's own (on their own ports and data directories), so killing one disturbs no other test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.redis_server import RedisServer
from tests.integration.conftest import kafka_bootstrap, redis_url

__all__ = ["kafka_bootstrap", "private_redis", "redis_url"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def private_redis(redis_url: str, tmp_path: Path) -> Iterator[RedisServer]:
    """A durable redis-server (AOF, fsync every second) of this test's own, not started yet.

    Depends on `redis_url` only so that scripts/redis.sh has installed redis-server."""
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()
