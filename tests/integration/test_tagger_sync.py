"""The start-up partition sync re-evaluates customers only when the definitions changed since their
states were written: not on the first start over a backlog, not on a restart over the same rulebook."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from schemas.tags import TagGroup
from services.runtime.clock import ManualClock
from services.runtime.definitions_feed import definition_record
from services.tagger.app import Tagger, build_app
from tests.integration.test_tagger import definitions, paid_event, worker_settings
from tests.support.builders import cond, group
from tests.support.kafka_io import TopicReader, produce

pytestmark = pytest.mark.integration

PARTITIONS = 3
SYNCS = 2 * PARTITIONS
"""Syncs at each start: every partition at recovery, and again when the definitions are first loaded."""
CUSTOMERS = [f"sync-{number:03d}" for number in range(40)]


class Run:
    """One start of the worker, on the topics and state the earlier runs left."""

    def __init__(self, prefix: str, bootstrap: str, redis_url: str, datadir: Path, **tagger: Any) -> None:
        self.registry = CollectorRegistry()
        settings = worker_settings(prefix, bootstrap, redis_url, datadir, partitions=PARTITIONS, **tagger)
        self.tagger: Tagger = build_app(settings, clock=ManualClock(datetime.now(UTC)), registry=self.registry)

    async def __aenter__(self) -> Run:
        await asyncio.wait_for(self.tagger.app.start(), 60)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.wait_for(self.tagger.app.stop(), 60)

    def processed(self, kind: str, outcome: str) -> float:
        sample = self.registry.get_sample_value("tagstream_events_processed_total", {"kind": kind, "outcome": outcome})
        return sample or 0.0

    def backfilled(self) -> float:
        return self.registry.get_sample_value("tagstream_backfill_customers_total") or 0.0

    async def until(self, done: str, check: object, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not (self.tagger.ready and callable(check) and check()):
            assert time.monotonic() < deadline, f"the tagger did not get {done} in {timeout:.0f} s: " + repr(
                {
                    (sample.labels.get("kind"), sample.labels.get("outcome")): sample.value
                    for metric in self.registry.collect()
                    if metric.name == "tagstream_events_processed"
                    for sample in metric.samples
                    if sample.name.endswith("_total")
                }
            )
            await asyncio.sleep(0.1)


async def publish(bootstrap: str, topic: str, *groups: TagGroup) -> None:
    await produce(bootstrap, topic, [(*definition_record(g), None) for g in groups])


async def test_a_restart_over_the_same_rulebook_re_evaluates_nobody_and_a_changed_one_everybody(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    prefix = f"it-sync-{uuid.uuid4().hex[:8]}"
    first = Run(prefix, kafka_bootstrap, redis_url, tmp_path)
    topics = first.tagger.settings.topics
    await first.tagger.create_topics()
    await publish(kafka_bootstrap, topics.tag_definitions, *definitions())
    now = datetime.now(UTC)
    backlog = [paid_event(customer, "120", at=now) for customer in CUSTOMERS for _ in range(2)]
    await produce(
        kafka_bootstrap, topics.events, [(e["customer_id"].encode(), json.dumps(e).encode(), None) for e in backlog]
    )

    # The first start, over a backlog: every state is written under these definitions.
    async with first:
        await first.until(
            "through the backlog and synced",
            lambda: (
                first.processed("order_paid", "applied") == len(backlog) and first.processed("sync", "sync") == SYNCS
            ),
        )
        assert first.backfilled() == 0

    async with Run(prefix, kafka_bootstrap, redis_url, tmp_path) as same:
        await same.until("synced", lambda: same.processed("sync", "sync") == SYNCS)
        assert len(same.tagger.index) == len(CUSTOMERS)  # the states are there, and were not swept
        assert same.backfilled() == 0

    spenders = group("spenders", [("spent_100", [cond("total_spent", "gte", 100)])], mode="multi")
    await publish(kafka_bootstrap, topics.tag_definitions, spenders)
    # Chunks of 3 customers: each partition's ~13 are evaluated a chunk ahead of the commit in flight.
    async with Run(prefix, kafka_bootstrap, redis_url, tmp_path, backfill_chunk=3) as changed:
        await changed.until("synced", lambda: changed.processed("sync", "sync") == SYNCS)
        assert changed.backfilled() == len(CUSTOMERS)
    async with Run(prefix, kafka_bootstrap, redis_url, tmp_path) as after:  # every chunk's states were stored
        await after.until("synced", lambda: after.processed("sync", "sync") == SYNCS)
        assert after.backfilled() == 0
    async with TopicReader(kafka_bootstrap, topics.tag_changes) as reader:
        records = await reader.until(
            lambda found: sum(json.loads(r.value)["group_id"] == "spenders" for r in found) >= len(CUSTOMERS)
        )
        await reader.drain()
        records = reader.records
    added = [json.loads(r.value) for r in records if json.loads(r.value)["group_id"] == "spenders"]
    assert sorted(change["customer_id"] for change in added) == CUSTOMERS  # each once: no chunk sent twice
    assert {(change["change"], change["source"]) for change in added} == {("added", "rule_change")}
    seqs = [(json.loads(r.value)["customer_id"], json.loads(r.value)["seq"]) for r in records]
    assert len(seqs) == len(set(seqs))
