"""Faults under shop traffic over HTTP (tagger with projector, ingest, notifier, a local push provider),
each run ending with the same audit (tests/support/audit.py): every acknowledged event on the topic,
the tag-change stream gapless and one change per seq, stream and read model equal to `tagstream
replay`, every push owed sent once under its idempotency key.

- the push provider answers 500 for a while, then 200 again;
- the tagger is SIGKILLed while it backfills a new group over existing customers;
- records without a key, or with another customer's, reach the events topic among good ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from services.runtime.definitions_feed import definition_record
from tests.support.audit import read_topic
from tests.support.builders import cond, group
from tests.support.kafka_io import TopicReader, produce
from tests.support.shop import Shop, close_shop, open_shop
from tests.support.traffic import live_events

pytestmark = pytest.mark.asyncio(loop_scope="session")

OUTAGE_S = 15.0
SETTLE_S = 120.0
"""From the last event to a settled system: deferred pushes wait out the circuit's 30 s reset."""


@pytest.fixture
async def shop(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Shop]:
    # static membership: a restarted tagger takes its partitions back at once (docs/tagger.md)
    opened = await open_shop(
        name="ft-shop",
        bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        workdir=tmp_path,
        group_instance_id="t0",
        # a backfill of ~1,100 customers takes well under a second on a quiet machine: paced so that
        # the SIGKILL lands in its middle however fast the machine (chunks of 200, a second apart)
        backfill_chunk="200",
        backfill_pause_s="1.0",
    )
    try:
        yield opened
    finally:
        await close_shop(opened)


async def test_a_push_provider_answering_500_for_a_while_then_200_gets_every_push_once(shop: Shop) -> None:
    lines = list(live_events(3_000, 200, seed=23, now=datetime.now(UTC)))
    loading = asyncio.create_task(shop.load.run(lines, batches_per_second=15.0))  # 20 s of traffic
    await asyncio.sleep(4.0)
    shop.provider.failing["push"] = 500
    await asyncio.sleep(OUTAGE_S)
    shop.provider.failing.clear()
    await loading
    await shop.caught_up()
    findings = await shop.audit(settle_s=SETTLE_S)

    print(f"\nprovider 500s for {OUTAGE_S:.0f}s: {shop.load.describe()}; {findings.summary()}")
    assert findings.problems() == []
    assert findings.redelivered == 0
    refused = [request for request in shop.provider.requests if request.status == 500]
    assert refused, "no push met the outage: the test proved nothing"
    outcomes = await read_topic(shop.system.bootstrap, shop.system.topics["notifications"])
    assert {o["reason"] for o in outcomes if o["outcome"] == "deferred"} == {"circuit_open"}
    assert shop.load.accepted == {orjson.loads(line)["event_id"] for line in lines}


async def test_a_tagger_sigkilled_during_a_backfill_ends_as_replay_with_no_seq_reused(shop: Shop) -> None:
    lines = list(live_events(6_000, 2_000, seed=29, now=datetime.now(UTC)))
    history, live = lines[:4_000], lines[4_000:]
    await shop.load.run(history, batches_per_second=40.0)
    await shop.caught_up()
    # every existing customer gets one of its tags: a backfill long enough to be killed in the middle of
    newcomer = group(
        "spend",
        [
            ("s500", [cond("total_spent", "gte", 500)]),
            ("s50", [cond("total_spent", "gte", 50)]),
            ("none", [cond("order_count", "eq", 0)]),
        ],
    )
    shop.system.groups.append(newcomer)
    loading = asyncio.create_task(shop.load.run(live, batches_per_second=10.0))
    await produce(shop.system.bootstrap, shop.system.topics["tag_definitions"], [(*definition_record(newcomer), None)])
    backfilled_at_kill = await _first_backfill_changes(shop)
    shop.stack.tagger.kill()
    shop.stack.tagger.start()
    await shop.stack.tagger.wait_ready()
    await loading
    await shop.caught_up()
    findings = await shop.audit(settle_s=SETTLE_S)

    backfilled = {
        change["customer_id"]
        for change in await read_topic(shop.system.bootstrap, shop.system.topics["tag_changes"])
        if change["group_id"] == "spend" and change["source"] == "rule_change"
    }
    print(
        f"\nSIGKILL during a backfill: {backfilled_at_kill} customers backfilled at the kill, {len(backfilled)} "
        f"in the end; {findings.summary()}"
    )
    assert findings.problems() == []
    assert backfilled_at_kill < len(backfilled), "the backfill had finished before the kill"


async def test_key_less_and_mis_keyed_events_are_dead_lettered_and_stall_no_partition(shop: Shop) -> None:
    lines = list(live_events(2_000, 200, seed=31, now=datetime.now(UTC)))
    loading = asyncio.create_task(shop.load.run(lines, batches_per_second=10.0))  # 20 s of traffic
    await asyncio.sleep(5.0)
    victim = orjson.loads(lines[0])
    stray = [orjson.dumps(victim | {"event_id": f"stray-{number}"}) for number in range(6)]
    # a key-less record lands on any partition, a mis-keyed one on another customer's: both would
    # split a customer's state across partitions
    await produce(
        shop.system.bootstrap,
        shop.system.topics["events"],
        [(None, line, None) for line in stray[:3]]
        + [(f"not-{n}".encode(), line, None) for n, line in enumerate(stray[3:])],
    )
    await loading
    await shop.caught_up()
    findings = await shop.audit(settle_s=SETTLE_S)

    async with TopicReader(shop.system.bootstrap, shop.system.topics["events_dlq"]) as reader:
        await reader.drain()
        letters = {letter["original"]: letter for letter in reader.json()}
    print(f"\nmisfiled records among traffic: {findings.summary()}")
    assert findings.problems() == []
    assert findings.misfiled == len(stray)
    assert {letter["error"] for letter in letters.values()} == {"mismatched_key"}
    for line in stray[:3]:
        assert (
            letters[line.decode()]["reason"]
            == f"the message has no key; key messages by customer_id ('{victim['customer_id']}')"
        )
    for line in stray[3:]:
        assert f"does not match customer_id '{victim['customer_id']}'" in letters[line.decode()]["reason"]


async def _first_backfill_changes(shop: Shop, timeout: float = 60.0) -> int:
    """Customers with a `rule_change` for the new group once the first show up on tag-changes."""
    deadline = time.monotonic() + timeout
    async with TopicReader(shop.system.bootstrap, shop.system.topics["tag_changes"]) as reader:
        while time.monotonic() < deadline:
            seen = len(reader.records)
            with contextlib.suppress(AssertionError):  # nothing new within the poll
                await reader.until(lambda records, seen=seen: len(records) > seen, timeout=0.5)
            found = [orjson.loads(record.value) for record in reader.records]
            backfilled = {c["customer_id"] for c in found if c["group_id"] == "spend" and c["source"] == "rule_change"}
            if backfilled:
                return len(backfilled)
    raise AssertionError(f"no backfill change for the new group within {timeout:.0f}s")
