"""End-to-end tests use the same real Kafka broker and Redis as the integration tests."""

from tests.integration.conftest import kafka_bootstrap, redis_url

__all__ = ["kafka_bootstrap", "redis_url"]
