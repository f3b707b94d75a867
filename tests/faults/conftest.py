"""Fault-injection fixtures: Redis servers of a test's own (on their own ports and data
directories), so killing one disturbs no other test, and the replicated 3-node cluster
(`scripts/kafka.sh --nodes 3`) whose brokers the tests kill.

The cluster is started for the session when it is not already running, and reset (stopped, its
data deleted) at the end: three JVMs are too much to leave behind on a small machine. One the
developer started (`scripts/kafka.sh --nodes 3 start`) is reused and left running."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import cluster, infra
from tests.support.redis_server import RedisServer


@pytest.fixture
def private_redis(redis_url: str, tmp_path: Path) -> Iterator[RedisServer]:
    """A durable redis-server (AOF, fsync every second) of this test's own, not started yet.

    Depends on `redis_url` only so that scripts/redis.sh has installed redis-server."""
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cluster_bootstrap() -> Iterator[str]:
    """The bootstrap list of the 3-node cluster (RF 3, min.insync 2)."""
    started_here = not cluster.cluster_running()
    try:
        bootstrap = cluster.start_cluster()
    except infra.InfraError as error:
        pytest.fail(f"the 3-node Kafka cluster did not start (scripts/kafka.sh --nodes 3 start):\n{error}")
    try:
        yield bootstrap
    finally:
        if started_here:
            cluster.reset_cluster()
