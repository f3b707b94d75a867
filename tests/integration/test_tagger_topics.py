"""The tagger creates its topics, and refuses to start on topics it could not join per customer."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from schemas.topics import TopicNames
from services.runtime.kafka import ensure_topics, partitions_of
from services.runtime.settings import KafkaSettings, Settings, TaggerSettings
from services.tagger.app import TopicLayoutError, build_app
from tests.integration.processes import TaggerProcess, tagger_environment, tagger_topics


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
