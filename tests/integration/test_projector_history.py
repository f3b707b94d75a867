"""History entries and runs against a real Redis: what a reader gets back, whatever wrote the entry,
and batches of runs leaving what applying each change alone leaves."""

from __future__ import annotations

import random

import orjson
import pytest
import redis.asyncio as aioredis

from schemas.tags import TagChanged
from services.runtime.history_codec import (
    FORMAT_HEADED,
    head_number,
    history_entries,
    history_string,
    split_change,
)
from services.runtime.readmodel import ReadModel, offset_field
from services.tagger.marker import Marker
from services.tagger.projection import decode_tag_records
from services.tagger.projector import Position, ProjectionOutcome, Projector
from tests.support.history_entries import FORMAT_1_ENTRIES, hostile_changes, shop_change
from tests.support.tag_change_streams import T0, changed, customer_stream, dump_read_model, interleave

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

FIELD = offset_field("tagstream.tag-changes", 0)


def _record(change: TagChanged) -> bytes:
    return orjson.dumps(change.model_dump(mode="json"), option=orjson.OPT_UTC_Z)


@pytest.fixture
def reads(redis_client: aioredis.Redis, redis_prefix: str) -> ReadModel:
    return ReadModel(redis_client, key_prefix=redis_prefix)


async def test_history_reads_entries_written_before_and_now_alike_field_by_field(
    redis_client: aioredis.Redis, redis_prefix: str, reads: ReadModel
) -> None:
    projector = Projector(redis_client, key_prefix=redis_prefix)
    before = shop_change()
    await redis_client.set(reads.keys.history(before.customer_id), history_string([FORMAT_1_ENTRIES[0]]))
    now = [shop_change(seq=100_000 + n, caused_by=f"e-{n}", change="added" if n % 2 else "removed") for n in range(3)]
    await projector.apply_batch(Position(FIELD, 0, 3, from_start=True), now, T0, [_record(c) for c in now])

    history = await reads.history(before.customer_id, limit=10)

    assert history == [*reversed(now), before]
    assert [c.model_dump() for c in history] == [c.model_dump() for c in [*reversed(now), before]]
    assert await reads.history(before.customer_id, offset=2, limit=2) == [now[0], before]
    assert await reads.history(before.customer_id, offset=4) == []


@pytest.mark.parametrize("max_heads", [65_536, 0])
async def test_hostile_changes_come_back_whole_whether_their_heads_are_numbered_or_carried(
    redis_client: aioredis.Redis, redis_prefix: str, reads: ReadModel, max_heads: int
) -> None:
    projector = Projector(redis_client, key_prefix=redis_prefix, max_heads=max_heads)
    changes = hostile_changes()
    for change, old in zip(changes, FORMAT_1_ENTRIES[1:], strict=True):
        await redis_client.set(reads.keys.history(change.customer_id), history_string([old]))

    outcomes = await projector.apply_many(changes, [_record(c) for c in changes])

    assert outcomes == [
        ProjectionOutcome.APPLIED_AFTER_GAP,
        ProjectionOutcome.APPLIED,
        ProjectionOutcome.APPLIED_AFTER_GAP,
    ]
    for change in changes:
        assert await reads.history(change.customer_id) == [change, change]
    assert await redis_client.hlen(reads.keys.head_numbers) == (3 if max_heads else 0)


async def test_a_full_head_table_makes_entries_carry_their_heads(
    redis_client: aioredis.Redis, redis_prefix: str, reads: ReadModel
) -> None:
    projector = Projector(redis_client, key_prefix=redis_prefix, max_heads=1)
    stream = [changed("c1", seq, "interest", "tea", "added" if seq % 2 else "removed") for seq in range(1, 5)]

    await projector.apply_many(stream)

    assert await redis_client.hlen(reads.keys.head_numbers) == 1
    assert await reads.history("c1") == list(reversed(stream))


async def test_numbers_of_a_table_lost_with_redis_are_never_written_again(
    redis_client: aioredis.Redis, redis_prefix: str, reads: ReadModel
) -> None:
    projector = Projector(redis_client, key_prefix=redis_prefix)
    await projector.apply_many([changed("c1", 1, "tier", "gold"), changed("c1", 2, "interest", "tea")])
    async for key in redis_client.scan_iter(match=f"{redis_prefix}*"):
        await redis_client.delete(key)  # Redis lost its data; the projector still holds numbers 1 and 2

    again = [changed("c2", 1, "interest", "tea"), changed("c2", 2, "tier", "gold")]
    await projector.apply_batch(Position(FIELD, 0, 2, from_start=True), again, T0)

    assert await reads.history("c2") == list(reversed(again))
    assert await redis_client.hget(reads.keys.head_numbers, split_change(again[0]).head) == b"1"


async def test_a_reset_keeps_the_head_table_so_numbers_held_stay_right(
    redis_client: aioredis.Redis, redis_prefix: str, reads: ReadModel
) -> None:
    projector = Projector(redis_client, key_prefix=redis_prefix)
    await projector.apply_batch(Position(FIELD, 0, 1, from_start=True), [changed("c1", 1, "tier", "gold")], T0)
    await Marker(redis_client, key_prefix=redis_prefix).reset(T0)

    later = [changed("c1", 1, "tier", "gold"), changed("c1", 2, "interest", "tea")]
    await projector.apply_batch(Position(FIELD, 0, 2, from_start=True), later, T0)

    assert await reads.history("c1") == list(reversed(later))


async def test_batches_of_runs_leave_what_each_change_applied_alone_leaves_with_redeliveries_and_gaps(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    rng = random.Random(5)
    streams = {f"cust-{n}": customer_stream(f"cust-{n}", 12, rng) for n in range(8)}
    for lost in (3, 7):  # two changes lost upstream: gaps
        streams["cust-1"].pop(lost)
    stream = list(interleave(streams, rng))
    stream = [change for change in stream for _ in range(2 if rng.random() < 0.1 else 1)]  # resent records
    batches = [(0, 40), (40, 70), (55, 90), (90, len(stream)), (10, 30)]  # a batch redelivered, an old one re-read
    alone = Projector(redis_client, key_prefix=f"{redis_prefix}alone:", history_limit=7)
    batched = Projector(redis_client, key_prefix=f"{redis_prefix}runs:", history_limit=7)

    one_by_one = []
    for first, end in batches:
        one_by_one += [await alone.apply(change) for change in stream[first:end]]
    in_runs = []
    for first, end in batches:
        result = await batched.apply_batch(Position(FIELD, first, end, from_start=first == 0), stream[first:end], T0)
        assert result.kind == "ok"
        in_runs += result.outcomes

    assert in_runs == one_by_one
    assert {ProjectionOutcome.APPLIED_AFTER_GAP, ProjectionOutcome.DUPLICATE, ProjectionOutcome.STALE} <= set(in_runs)
    alone_dump = await dump_read_model(redis_client, f"{redis_prefix}alone:")
    runs_dump = await dump_read_model(redis_client, f"{redis_prefix}runs:")
    del runs_dump["meta:offsets"]
    assert runs_dump == alone_dump


async def test_an_invalid_record_is_skipped_with_its_reason_and_the_rest_of_the_batch_applied(
    redis_client: aioredis.Redis, redis_prefix: str, reads: ReadModel, caplog: pytest.LogCaptureFixture
) -> None:
    good = [changed("c1", 1, "tier", "gold"), changed("c1", 2, "interest", "tea")]
    invalid = _record(good[0]).replace(b'"seq":1', b'"seq":0')
    values = [_record(good[0]), invalid, b'{"customer_id": "c1", "seq": ', _record(good[1])]

    changes = decode_tag_records(values)
    result = await Projector(redis_client, key_prefix=redis_prefix).apply_batch(
        Position(FIELD, 0, 4, from_start=True), changes, T0
    )

    assert [(change.customer_id, change.seq) for change in changes] == [("c1", 1), ("c1", 2)]
    skipped = [r.getMessage() for r in caplog.records if r.name == "services.tagger.projection"]
    assert [message.split(":")[0] for message in skipped] == ["skipping an invalid tag change"] * 2
    assert "seq" in skipped[0]
    assert (result.kind, (await reads.status()).offsets) == ("ok", {FIELD: 4})
    assert await reads.history("c1") == list(reversed(good))


async def test_changes_caused_by_an_event_id_holding_the_records_markers_are_projected(
    redis_client: aioredis.Redis, redis_prefix: str, reads: ReadModel
) -> None:
    # An event id is any printable text; one holding `":` stopped the projector on its changes.
    changes = [
        shop_change(customer_id="c-q", caused_by='ord-1":2', seq=1, change="added", source="rule"),
        shop_change(customer_id="c-q", caused_by='ord-1":2', seq=2, change="added", source="rule", tag_id="vip"),
        shop_change(customer_id="c-q", caused_by='x","seq":9', seq=3, change="removed", source="rule"),
    ]

    decoded = decode_tag_records([_record(change) for change in changes])
    result = await Projector(redis_client, key_prefix=redis_prefix).apply_batch(
        Position(FIELD, 0, 3, from_start=True), decoded, T0
    )

    assert result.outcomes == [ProjectionOutcome.APPLIED] * 3
    assert await reads.history("c-q") == list(reversed(changes))


@pytest.mark.parametrize("max_heads", [65_536, 0])
async def test_the_history_string_keeps_the_newest_changes_up_to_the_limit_across_runs_and_batches(
    redis_client: aioredis.Redis, redis_prefix: str, reads: ReadModel, max_heads: int
) -> None:
    """Batches of runs longer and shorter than the limit: the oldest entries are cut from the front,
    within one run too; with no head table (max_heads 0) every entry carries its head inline."""
    projector = Projector(redis_client, key_prefix=redis_prefix, history_limit=5, max_heads=max_heads)
    stream = [  # three changes an event (instant and cause), cuts inside those threes
        changed(
            "c1",
            seq,
            "interest",
            "tea" if seq % 3 else "coffee",
            "added" if seq % 2 else "removed",
            event=(seq + 1) // 3 + 100,
        )
        for seq in range(1, 23)
    ]
    offset = 0
    for size in (2, 1, 3, 9, 1, 6):  # runs of 9 and 6 changes are each longer than the limit
        batch = stream[offset : offset + size]
        result = await projector.apply_batch(Position(FIELD, offset, offset + size, offset == 0), batch, T0)
        assert result.kind == "ok"
        offset += size
        kept = stream[max(0, offset - 5) : offset]
        assert await reads.history("c1", limit=50) == list(reversed(kept))

    raw = await redis_client.get(reads.keys.history("c1"))
    entries = history_entries("c1", raw)
    assert (raw[0], len(entries)) == (5, 5)  # the count leads the string
    assert all(entry[0] == FORMAT_HEADED for entry in entries)
    assert all((head_number(entry) is None) == (max_heads == 0) for entry in entries)
    assert _formats_kept(raw) == [2, 3, 2, 3, 3]  # the first, cut out of its three, given its instant and cause back
    assert await reads.history("c1", offset=3, limit=5) == [stream[18], stream[17]]


def _formats_kept(history: bytes) -> list[int]:
    """Each entry's format as the string keeps it (history_codec.py: a count, then entries behind their length)."""
    formats, at = [], 1
    for _ in range(history[0]):
        size = shift = 0
        while True:
            size, at, shift = size | (history[at] & 0x7F) << shift, at + 1, shift + 7
            if history[at - 1] < 0x80:
                break
        formats.append(history[at])
        at += size
    return formats
