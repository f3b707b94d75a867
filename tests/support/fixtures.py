"""The shared fixtures (registered for the whole suite by tests/conftest.py's `pytest_plugins`):
the real Kafka broker and Redis every integration, end-to-end, fault and security test runs against.

``kafka_bootstrap`` / ``redis_url`` resolve, in order:

1. ``TAGSTREAM_TEST_KAFKA_BOOTSTRAP`` / ``TAGSTREAM_TEST_REDIS_URL`` when set
   (an externally managed service; never started or stopped here);
2. a service already started by ``make infra`` / the scripts (reused, left running);
3. otherwise the fixture starts it with ``scripts/*.sh start`` and stops it at
   the end of the session.

A service that cannot be started fails the tests that need it: integration
tests are never skipped silently, locally or in CI. Session fixtures start nothing until a test
asks for them, so a run of the unit tests alone needs neither.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis.asyncio as aioredis

from tests.support import infra


def _fail_unavailable(service: str, script: str, error: infra.InfraError) -> None:
    if os.environ.get("CI"):
        hint = f"CI must provide {service}: scripts/{script} start has to work on the CI machine."
    else:
        hint = (
            f"Could not start {service} locally. Run `scripts/{script} start` (or `make infra`) to see why, "
            f"or point the tests at a running {service} with the TAGSTREAM_TEST_* environment variables."
        )
    pytest.fail(f"{service} unavailable for integration tests. {hint}\n{error}", pytrace=False)


def _service(
    env_var: str,
    service: str,
    script: str,
    running: Callable[[], bool],
    current: Callable[[], str],
    start: Callable[[], str],
    stop: Callable[[], None],
) -> Iterator[str]:
    external = os.environ.get(env_var, "").strip()
    if external:
        yield external
        return
    started_here = False
    error: infra.InfraError | None = None
    value = ""
    try:
        if running():
            value = current()
        else:
            value = start()
            started_here = True
    except infra.InfraError as exc:
        error = exc
    if error is not None:
        _fail_unavailable(service, script, error)
    try:
        yield value
    finally:
        if started_here:
            stop()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of a real Kafka broker."""
    yield from _service(
        "TAGSTREAM_TEST_KAFKA_BOOTSTRAP",
        "Kafka",
        "kafka.sh",
        infra.kafka_running,
        infra.kafka_bootstrap,
        infra.start_kafka,
        infra.reset_kafka,
    )


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """``redis://host:port/db`` of a real Redis server."""
    yield from _service(
        "TAGSTREAM_TEST_REDIS_URL",
        "Redis",
        "redis.sh",
        infra.redis_running,
        infra.redis_url,
        infra.start_redis,
        infra.stop_redis,
    )


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the test Redis, closed after the test."""
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def redis_prefix(redis_client: aioredis.Redis) -> AsyncIterator[str]:
    """A key prefix of the test's own; its keys are deleted after the test."""
    prefix = f"ts-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    keys = [key async for key in redis_client.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await redis_client.delete(*keys)
