# Local infrastructure for development and the integration tests.
# See docs/infrastructure.md. Every target is idempotent.

SHELL := /bin/bash

.PHONY: infra kafka redis down infra-down infra-reset infra-status kafka-fetch

## infra: start Kafka and Redis (prints their addresses)
infra: kafka redis

## kafka: start the local KRaft broker (fetches the jars with Maven on first use); a broker stopped
## or crashed before resumes with its data on the same port
kafka:
	@scripts/kafka.sh start

## kafka-fetch: only resolve the Kafka jars into the cache
kafka-fetch:
	@scripts/kafka.sh fetch

## redis: start the local redis-server (installs Debian's redis-server if missing)
redis:
	@scripts/redis.sh start

## down: stop both; Kafka keeps its data (`make infra` resumes it), Redis keeps nothing
down:
	@scripts/kafka.sh stop
	@scripts/redis.sh stop

## infra-reset: stop both and delete Kafka's data (the next `make infra` starts an empty broker)
infra-reset:
	@scripts/kafka.sh reset
	@scripts/redis.sh stop

## infra-down: the same as infra-reset
infra-down: infra-reset

## infra-status: exit 0 only when both are up
infra-status:
	@scripts/kafka.sh status && scripts/redis.sh status
