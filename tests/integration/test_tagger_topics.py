"""The tagger creates its topics, and refuses to start on topics it could not join per customer."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from benchmarks.workload import events as generated_events
from schemas.topics import TopicNames
from services.runtime.kafka import durability_problems, ensure_topics, partitions_of
from services.runtime.partitioning import partition_for
from services.runtime.settings import KafkaSettings, Settings, TaggerSettings
from services.tagger.app import TopicLayoutError, build_app
from tests.support.kafka_io import TopicReader, produce, topic_config
from tests.support.processes import TaggerProcess, tagger_environment, tagger_topics, wait_caught_up
from tests.support.tag_streams import definitions


def _settings(bootstrap: str, partitions: int, datadir: Path) -> Settings:
    prefix = f"layout-{uuid.uuid4().hex[:8]}"
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, partitions=partitions, replication_factor=1),
        topics=TopicNames(**{name: f"{prefix}.{name}" for name in TopicNames.model_fields}),
        tagger=TaggerSettings(app_id=prefix, store="memory", datadir=datadir, projector=False),
    )


async def test_the_tagger_creates_every_topic_it_uses_with_the_configured_partitions(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = _settings(kafka_bootstrap, 3, tmp_path)
    await build_app(settings).create_topics()
    topics = settings.topics
    for topic in (topics.events, topics.tag_commands, topics.tagger_ticks, topics.tag_changes, topics.events_dlq):
        assert len(await partitions_of(settings.kafka, topic)) == 3


async def test_an_events_topic_with_another_partition_count_stops_the_tagger_with_the_fix(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = _settings(kafka_bootstrap, 3, tmp_path)
    await ensure_topics(settings.kafka, [settings.topics.events], partitions=5)  # made by someone else first
    with pytest.raises(TopicLayoutError, match="has 5 partitions but TAGSTREAM_KAFKA__PARTITIONS is 3"):
        await build_app(settings).create_topics()


async def test_a_tagger_whose_datadir_parent_does_not_exist_creates_it_private_and_starts(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    prefix = f"datadir-{uuid.uuid4().hex[:8]}"
    topics = await tagger_topics(kafka_bootstrap, prefix, 2, [])
    datadir = tmp_path / "volume" / "tagstream" / "state"
    env = tagger_environment(kafka_bootstrap, prefix, topics, 2, datadir)
    tagger = TaggerProcess(env, tmp_path / "tagger.log")
    tagger.start()
    try:
        await tagger.wait_ready()
    finally:
        assert tagger.stop() == 0
    assert (tmp_path / "volume").stat().st_mode & 0o777 == 0o700
    assert datadir.stat().st_mode & 0o777 == 0o700
    assert any(datadir.iterdir())  # faust's own files went there


async def test_every_topic_is_created_with_its_own_min_insync_replicas(kafka_bootstrap: str, tmp_path: Path) -> None:
    settings = _settings(kafka_bootstrap, 3, tmp_path)
    await build_app(settings).create_topics()
    topics = settings.topics
    for topic in (
        topics.events,
        topics.tag_commands,
        topics.tagger_ticks,
        topics.tag_changes,
        topics.events_dlq,
        topics.tag_definitions,
    ):
        # set on the topic, not left to the broker's default: RF 1 on this broker asks for 1
        assert await topic_config(kafka_bootstrap, topic, "min.insync.replicas") == ("1", True), topic
    assert await topic_config(kafka_bootstrap, topics.tag_changes, "retention.ms") == ("-1", True)
    assert await durability_problems(settings.kafka, [topics.events, topics.tag_changes]) == []


async def test_the_changelog_and_definitions_roll_hourly_so_compaction_really_runs(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    settings = _settings(kafka_bootstrap, 3, tmp_path)
    tagger = build_app(settings)
    await tagger.create_topics()
    changelog = tagger.table.changelog_topic.get_topic_name()
    for topic in (changelog, settings.topics.tag_definitions):
        assert await topic_config(kafka_bootstrap, topic, "cleanup.policy") == ("compact", True), topic
        # the broker's defaults (7 days, ratio 0.5) would keep a changelog in its one active segment
        assert await topic_config(kafka_bootstrap, topic, "segment.ms") == ("3600000", True), topic
        assert await topic_config(kafka_bootstrap, topic, "min.cleanable.dirty.ratio") == ("0.25", True), topic
    assert await topic_config(kafka_bootstrap, settings.topics.events, "segment.ms") == ("604800000", False)


async def test_an_existing_topic_less_durable_than_the_settings_is_reported_with_the_fix(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(kafka_bootstrap, 3, tmp_path)
    events, changes = settings.topics.events, settings.topics.tag_changes
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:  # made by hand: one asks for more in-sync copies than it has, the other for the default
        await admin.create_topics(
            [
                NewTopic(events, 3, 1, topic_configs={"min.insync.replicas": "2"}),
                NewTopic(changes, 3, 1),
            ]
        )
    finally:
        await admin.close()
    wanting_three = settings.kafka.model_copy(update={"replication_factor": 3})
    with caplog.at_level(logging.WARNING, logger="services.runtime.kafka"):
        problems = await ensure_topics(wanting_three, [events, changes])
    assert [problem for problem in problems if "min.insync" in problem] == [
        f"topic {events} requires 2 in-sync replica(s) with 1 replica(s): no acks=all write can succeed. Fix: "
        f"kafka-configs.sh --bootstrap-server {kafka_bootstrap} --alter --entity-type topics --entity-name {events} "
        "--add-config min.insync.replicas=1"
    ]
    replicas = [problem for problem in problems if "replica(s) but" in problem]
    assert [problem.split(" has ")[0] for problem in replicas] == [f"topic {events}", f"topic {changes}"]
    assert "TAGSTREAM_KAFKA__REPLICATION_FACTOR is 3" in replicas[0]
    assert "kafka-reassign-partitions.sh" in replicas[0]
    assert [record.getMessage() for record in caplog.records] == problems


@pytest.mark.parametrize("changes_partitions", [2, 3], ids=["the-tables-count", "another-count"])
async def test_each_tag_change_lands_where_the_default_partitioner_puts_its_customer(
    kafka_bootstrap: str, tmp_path: Path, changes_partitions: int
) -> None:
    """Changes go out on their customer's table partition when the changes topic has the table's
    count, and key by key otherwise (an operator grew the topic): either way where a consumer of the
    topic, or ingest's own producer, expects each customer."""
    prefix = f"placement-{uuid.uuid4().hex[:8]}"
    changes_topic = f"{prefix}.tag_changes"
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, partitions=changes_partitions, replication_factor=1)
    await ensure_topics(kafka, [changes_topic])  # made first, with its own count
    topics = await tagger_topics(kafka_bootstrap, prefix, 2, definitions())
    assert len(await partitions_of(kafka, changes_topic)) == changes_partitions
    events = list(generated_events(600, 120, seed=5))
    await produce(
        kafka_bootstrap, topics["events"], [(e["customer_id"].encode(), orjson.dumps(e), None) for e in events]
    )
    env = tagger_environment(kafka_bootstrap, prefix, topics, 2, tmp_path / "data")
    tagger = TaggerProcess(env, tmp_path / "tagger.log")
    tagger.start()
    try:
        await tagger.wait_ready()
        await wait_caught_up(kafka_bootstrap, prefix, topics["events"], 2)
    finally:
        assert tagger.stop() == 0
    async with TopicReader(kafka_bootstrap, changes_topic) as reader:
        records = await reader.drain()
    assert len({record.key for record in records}) > 50  # most customers got a tag
    misplaced = [r for r in records if r.partition != partition_for(r.key, changes_partitions)]
    assert not misplaced, f"{len(misplaced)} of {len(records)} changes on another partition, e.g. {misplaced[0]}"
