"""A rebalance that revokes partitions while a batch is in flight: the batch is waited for, then
cancelled after TAGSTREAM_TAGGER__REVOKE_WAIT_S, and nothing it did is lost or contradicted.

The batch in flight is a definitions change's backfill (paced by `backfill_pause_s`, so it lasts tens
of seconds): a second worker joins in its middle. What the cancelled batch sent but did not store is
sent again by the partition's next owner under the same seq, with the same content.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import orjson
import pytest

from benchmarks.workload import events as generated_events
from services.runtime.definitions_feed import definition_record
from tests.support.builders import cond, group
from tests.support.kafka_io import TopicReader, produce
from tests.support.processes import (
    TaggerProcess,
    produce_at_rate,
    tagger_environment,
    tagger_topics,
    wait_caught_up,
)
from tests.support.tag_streams import check_tag_changes, definitions

pytestmark = [pytest.mark.integration, pytest.mark.crash]

EVENTS = 8_000
CUSTOMERS = 3_000
PARTITIONS = 4
REVOKE_WAIT_S = 3


async def test_a_batch_in_flight_when_its_partitions_are_revoked_loses_no_change_and_reuses_no_seq(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    prefix = f"it-revoke-{uuid.uuid4().hex[:8]}"
    groups = definitions()
    topics = await tagger_topics(kafka_bootstrap, prefix, PARTITIONS, groups)
    lines = [orjson.dumps(event) for event in generated_events(EVENTS, CUSTOMERS, seed=5)]
    await produce_at_rate(kafka_bootstrap, topics["events"], lines, per_second=8_000)
    settings = {"revoke_wait_s": str(REVOKE_WAIT_S), "backfill_chunk": "200", "backfill_pause_s": "2"}
    first = TaggerProcess(
        tagger_environment(kafka_bootstrap, prefix, topics, PARTITIONS, tmp_path / "first", **settings),
        tmp_path / "first.log",
    )
    second = TaggerProcess(
        tagger_environment(kafka_bootstrap, prefix, topics, PARTITIONS, tmp_path / "second", **settings),
        tmp_path / "second.log",
    )
    changed = [*groups, group("spenders", [("big", [cond("total_spent", "gte", 100)])])]
    first.start()
    try:
        await first.wait_ready()
        await wait_caught_up(kafka_bootstrap, prefix, topics["events"], PARTITIONS)
        # a new group: every partition backfills its ~750 customers, 200 at a time, 2 s apart
        await produce(kafka_bootstrap, topics["tag_definitions"], [(*definition_record(changed[-1]), None)])
        await asyncio.sleep(3)
        second.start()  # joins in the middle of the first worker's backfills
        await second.wait_ready()
        for _ in range(3):  # the rebalance's own sync requests land on the ticks topic after it
            await wait_caught_up(kafka_bootstrap, prefix, topics["tagger_ticks"], PARTITIONS, timeout=240)
            await asyncio.sleep(3)
        await wait_caught_up(kafka_bootstrap, prefix, topics["events"], PARTITIONS)
    finally:
        first.stop()
        second.stop()

    first_log = (tmp_path / "first.log").read_text()
    assert "the batch in flight is not done after" in first_log, "the revocation did not land during a batch"
    async with TopicReader(kafka_bootstrap, topics["tag_changes"], isolation_level="read_committed") as reader:
        await reader.drain()
        stream = reader.json()
    assert any(change["group_id"] == "spenders" for change in stream)
    check_tag_changes(stream, lines, changed)
