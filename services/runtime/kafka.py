"""The one Kafka client factory: connection options from settings, topic creation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from schemas.topics import TopicNames
from services.runtime.settings import KafkaSettings

log = logging.getLogger(__name__)


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments every aiokafka client takes: bootstrap servers, TLS and SASL."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None)
        if settings.ssl_certfile is not None:
            context.load_cert_chain(str(settings.ssl_certfile), str(settings.ssl_keyfile or settings.ssl_certfile))
        options["ssl_context"] = context
    if settings.sasl_mechanism is not None:
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_password.get_secret_value() if settings.sasl_password else None
    return options


def min_insync_replicas(replication_factor: int) -> int:
    """The in-sync copies an acks=all write needs on a topic with this many replicas.

    RF - 1, so one broker may be down (a rolling restart) without refusing writes, but at least 2
    from RF 3 on: with Kafka's default of 1, acks=all is satisfied by the leader alone, and an
    acknowledged write is lost with that one disk. RF 1 and 2 can only ask for 1.
    """
    if replication_factor >= 3:
        return max(2, replication_factor - 1)
    return 1


def producer_options(settings: KafkaSettings) -> dict[str, Any]:
    """Nothing accepted is lost: every write waits for all in-sync replicas, and retries are idempotent."""
    return client_options(settings) | {"acks": "all", "enable_idempotence": True}


SHORT_LIVED_MS = 3_600_000


async def ensure_topics(
    settings: KafkaSettings,
    topics: Iterable[str],
    *,
    compacted: Iterable[str] = (),
    kept_forever: Iterable[str] = (),
    short_lived: Iterable[str] = (),
    partitions: int | None = None,
) -> list[str]:
    """Create the topics that do not exist yet (idempotent; existing topics are left as they are),
    then warn about any of them that is less durable than the settings ask (`durability_problems`).

    Every topic gets `min.insync.replicas` for its replication factor (`min_insync_replicas`): all of
    them hold data that matters. `compacted` ones keep the latest value per key; `kept_forever` ones
    are never deleted by time (retention.ms=-1): the records a projection is rebuilt from, or
    rejected input kept for repair. `short_lived` ones keep an hour (questions and answers between
    services, worthless once answered).
    """
    topics = list(topics)
    compacted = set(compacted)
    kept_forever = set(kept_forever)
    short_lived = set(short_lived)
    count = partitions or settings.partitions
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=name,
                num_partitions=count,
                replication_factor=settings.replication_factor,
                topic_configs=_topic_configs(name, settings, compacted, kept_forever, short_lived),
            )
            for name in topics
            if name not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # another worker created it first
                await admin.create_topics(wanted)
            await _wait_until_led(admin, [topic.name for topic in wanted])
        problems = await _durability_problems(admin, settings, topics)
    finally:
        await admin.close()
    for problem in problems:
        log.warning("%s", problem)
    return problems


async def durability_problems(settings: KafkaSettings, topics: Iterable[str]) -> list[str]:
    """What makes these existing topics less durable than the settings ask, each with its fix.

    A topic created earlier (by hand, by an older version, with other settings) keeps its replicas
    and configs: fewer replicas than TAGSTREAM_KAFKA__REPLICATION_FACTOR, or fewer in-sync copies
    required than `min_insync_replicas` of its replication factor, means an acknowledged write can be
    lost with one broker; more required than it has replicas means no acks=all write ever succeeds.
    """
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        return await _durability_problems(admin, settings, topics)
    finally:
        await admin.close()


async def required_in_sync(admin: AIOKafkaAdminClient, topics: Sequence[str]) -> dict[str, int]:
    """Each topic's `min.insync.replicas` as the brokers apply it (the topic's own, or their default)."""
    if not topics:
        return {}
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, {"min.insync.replicas": None}) for name in topics]
    required: dict[str, int] = {}
    for response in await admin.describe_configs(resources):
        for resource in response.to_object()["resources"]:
            for entry in resource["config_entries"]:
                if entry["config_names"] == "min.insync.replicas" and entry["config_value"]:
                    required[resource["resource_name"]] = int(entry["config_value"])
    return required


async def _durability_problems(admin: AIOKafkaAdminClient, settings: KafkaSettings, topics: Iterable[str]) -> list[str]:
    names = sorted(set(topics))
    if not names:
        return []
    replicas = {
        topic["topic"]: min(len(partition["replicas"]) for partition in topic["partitions"])
        for topic in await admin.describe_topics(names)
        if topic["error_code"] == 0 and topic["partitions"]
    }
    required = await required_in_sync(admin, list(replicas))
    servers = settings.bootstrap_servers.split(",")[0]
    problems = []
    for name, count in sorted(replicas.items()):
        if count < settings.replication_factor:
            problems.append(
                f"topic {name} has {count} replica(s) but TAGSTREAM_KAFKA__REPLICATION_FACTOR is "
                f"{settings.replication_factor}: add replicas with kafka-reassign-partitions.sh (a plan listing "
                f"{settings.replication_factor} brokers per partition), or lower the setting if this cluster is smaller"
            )
        wanted = min_insync_replicas(count)
        found = required.get(name)
        if found is not None and (found < wanted or found > count):
            consequence = (
                "no acks=all write can succeed"
                if found > count
                else "an acknowledged write can be lost with one broker"
            )
            problems.append(
                f"topic {name} requires {found} in-sync replica(s) with {count} replica(s): {consequence}. Fix: "
                f"kafka-configs.sh --bootstrap-server {servers} --alter --entity-type topics --entity-name {name} "
                f"--add-config min.insync.replicas={wanted}"
            )
    return problems


async def _wait_until_led(admin: AIOKafkaAdminClient, names: list[str], attempts: int = 200) -> None:
    """New topics take a moment to get partition leaders; clients that start earlier see errors."""
    for _ in range(attempts):
        described = await admin.describe_topics(names)
        if all(
            topic["error_code"] == 0 and topic["partitions"] and all(p["leader"] >= 0 for p in topic["partitions"])
            for topic in described
        ):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"topics {names} have no partition leaders after {attempts * 0.05:.0f}s")


async def partitions_of(settings: KafkaSettings, topic: str, attempts: int = 100) -> list[int]:
    """The partition ids of a topic (waiting briefly for a topic being created)."""
    return (await partition_ids(settings, [topic], attempts))[topic]


async def partition_ids(settings: KafkaSettings, topics: Sequence[str], attempts: int = 100) -> dict[str, list[int]]:
    """The partition ids of each topic, over one admin connection (waiting briefly for topics being created)."""
    found: dict[str, list[int]] = {}
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        for _ in range(attempts):
            for described in await admin.describe_topics([topic for topic in topics if topic not in found]):
                if described["error_code"] == 0 and described["partitions"]:
                    found[described["topic"]] = sorted(partition["partition"] for partition in described["partitions"])
            if len(found) == len(set(topics)):
                return found
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    missing = sorted(set(topics) - set(found))
    raise RuntimeError(f"topics {missing} do not exist: create the tagstream topics first")


Partitioner = Callable[[bytes | None, Sequence[int], Sequence[int]], int]
"""aiokafka's partitioner signature: (key, all partitions, available partitions) -> partition."""


async def send_keyed(
    kafka: AIOKafkaProducer, partitioner: Partitioner, topic: str, messages: Sequence[tuple[bytes, bytes]]
) -> list[Awaitable[Any]]:
    """Send keyed messages as one record batch per partition (a few, when one fills up).

    Each key goes to the partition `partitioner` picks from all of the topic's partitions, which is
    where `kafka.send(topic, value, key=key)` puts it when `partitioner` is the producer's own; per
    partition the messages keep the order given. One future per batch instead of one per message:
    at ~3 tag changes per event, aiokafka's per-message `send` (a partition lookup, a future and an
    `await` each, a callback each on the ack) cost the tagger more than evaluating the event.
    Returns the batches' futures; each resolves once Kafka has acknowledged its whole batch (the
    producer retries a batch as a unit).
    """
    partitions = sorted(await kafka.partitions_for(topic))
    by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
    partition_of: dict[bytes, int] = {}  # murmur2 in Python, once per key: a customer's changes come together
    for key, value in messages:
        partition = partition_of.get(key)
        if partition is None:
            partition = partition_of[key] = partitioner(key, partitions, partitions)
        by_partition.setdefault(partition, []).append((key, value))
    return [future for _, future, _ in await send_partitioned(kafka, topic, by_partition)]


async def send_partitioned(
    kafka: AIOKafkaProducer, topic: str, messages: dict[int, list[tuple[bytes, bytes]]]
) -> list[tuple[int, Awaitable[Any], int]]:
    """Send each partition's messages, in order, as record batches: (partition, future, messages)
    per batch. A batch's future resolves to its RecordMetadata (the offset is its first message's)."""
    sent: list[tuple[int, Awaitable[Any], int]] = []
    for partition, items in messages.items():
        batch = kafka.create_batch()
        for key, value in items:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start another
                count = batch.record_count()
                sent.append((partition, await kafka.send_batch(batch, topic, partition=partition), count))
                batch = kafka.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a {len(value)}-byte message does not fit in an empty record batch")
        count = batch.record_count()
        sent.append((partition, await kafka.send_batch(batch, topic, partition=partition), count))
    return sent


COMPACTION: dict[str, str] = {"segment.ms": str(3_600_000), "min.cleanable.dirty.ratio": "0.25"}
"""A compacted topic's segments roll hourly, and are cleaned once a quarter of the log is superseded.

Kafka never compacts a partition's active segment, and its defaults roll one at 1 GiB or 7 days: a
million customers' changelog (~90 MB per partition of 12) stayed in one segment, never compacted, so
a worker that lost its disk read every state ever written (2.2-3 records per customer). Rolled
hourly, all but the last hour is compactable; at a 0.25 dirty ratio a restore reads at most ~1.3
records per customer plus that hour's."""


def _topic_configs(
    name: str, settings: KafkaSettings, compacted: set[str], kept_forever: set[str], short_lived: set[str]
) -> dict[str, str]:
    configs = {"min.insync.replicas": str(min_insync_replicas(settings.replication_factor))}
    if name in short_lived:
        configs["retention.ms"] = str(SHORT_LIVED_MS)
    if name in compacted:
        configs["cleanup.policy"] = "compact"
        configs.update(COMPACTION)
    if name in kept_forever:
        configs["retention.ms"] = "-1"
    return configs


async def ensure_query_topics(settings: KafkaSettings, topics: TopicNames) -> None:
    """The question and answer topics: one partition each (every reader reads all), kept an hour."""
    names = [topics.tagger_queries, topics.tagger_answers]
    await ensure_topics(settings, names, short_lived=names, partitions=1)
