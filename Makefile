# Local infrastructure for development and the integration tests.
# See docs/infrastructure.md. Every target is idempotent.

SHELL := /bin/bash

.PHONY: infra kafka redis infra-down infra-status kafka-fetch

## infra: start Kafka and Redis (prints their addresses)
infra: kafka redis

## kafka: start the local KRaft broker (fetches the jars with Maven on first use)
kafka:
	@scripts/kafka.sh start

## kafka-fetch: only resolve the Kafka jars into the cache
kafka-fetch:
	@scripts/kafka.sh fetch

## redis: start the local redis-server (installs Debian's redis-server if missing)
redis:
	@scripts/redis.sh start

## infra-down: stop both and delete their data
infra-down:
	@scripts/kafka.sh stop
	@scripts/redis.sh stop

## infra-status: exit 0 only when both are up
infra-status:
	@scripts/kafka.sh status && scripts/redis.sh status
