"""The ingest service is attacked as it runs: over the real Kafka broker and Redis of the integration tests."""

from __future__ import annotations

from tests.integration.conftest import kafka_bootstrap, redis_url

__all__ = ["kafka_bootstrap", "redis_url"]
