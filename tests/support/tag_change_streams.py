"""Consistent per-customer tag-change streams and the read model they must end in (projector tests)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis

from schemas.tags import TagChanged
from services.runtime.bitmaps import set_bits
from services.runtime.readmodel import ReadModel

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
TIERS = ("bronze", "silver", "gold")
INTERESTS = ("tea", "coffee", "snacks")


def changed(
    customer: str,
    seq: int,
    group: str,
    tag: str,
    change: str = "added",
    *,
    source: str = "rule",
    minutes: int = 0,
    summary: str | None = None,
    event: int = 0,
) -> TagChanged:
    """`event`: changes given the same number share their instant and cause (one event's changes);
    by default each change is an event of its own, numbered by its seq."""
    event = event or seq
    return TagChanged.model_validate(
        {
            "customer_id": customer,
            "group_id": group,
            "tag_id": tag,
            "change": change,
            "source": source,
            "reason": {
                "summary": summary or f"{change} {group}/{tag}",
                "conditions": [
                    {"metric": "total_spent", "op": "gte", "value": "1000", "observed": "1200.50", "matched": True}
                ],
            },
            "group_version": 3,
            "caused_by": f"e-{customer}-{event}",
            "occurred_at": T0 + timedelta(minutes=minutes or event),
            "seq": seq,
        }
    )


def customer_stream(customer: str, length: int, rng: random.Random) -> list[TagChanged]:
    """A consistent stream: exclusive swaps in `tier` (remove then add), toggles in `interest`."""
    held: set[tuple[str, str]] = set()
    stream: list[TagChanged] = []

    def emit(group: str, tag: str, change: str, event: int = 0) -> None:
        stream.append(changed(customer, len(stream) + 1, group, tag, change, event=event))
        (held.add if change == "added" else held.discard)((group, tag))

    while len(stream) < length:
        if rng.random() < 0.5 and len(stream) < length - 1:
            tier = rng.choice(TIERS)
            current = [tag for group, tag in held if group == "tier"]
            if current == [tier]:
                continue
            event = len(stream) + 1  # a swap is one event's changes
            for tag in current:
                emit("tier", tag, "removed", event)
            emit("tier", tier, "added", event)
        else:
            interest = rng.choice(INTERESTS)
            emit("interest", interest, "removed" if ("interest", interest) in held else "added")
    return stream[:length]


def interleave(streams: dict[str, list[TagChanged]], rng: random.Random) -> Iterator[TagChanged]:
    """Every change once, customers shuffled together, each customer's own order kept."""
    cursors = dict.fromkeys(streams, 0)
    while cursors:
        customer = rng.choice(sorted(cursors))
        yield streams[customer][cursors[customer]]
        cursors[customer] += 1
        if cursors[customer] == len(streams[customer]):
            del cursors[customer]


def expected_tags(stream: list[TagChanged]) -> dict[str, list[str]]:
    held: set[tuple[str, str]] = set()
    for change in stream:
        (held.add if change.change == "added" else held.discard)((change.group_id, change.tag_id))
    grouped: dict[str, list[str]] = {}
    for group, tag in sorted(held):
        grouped.setdefault(group, []).append(tag)
    return grouped


async def assert_matches_streams(reads: ReadModel, streams: dict[str, list[TagChanged]], *, history_limit: int) -> None:
    expected_members: dict[tuple[str, str], set[str]] = {}
    for customer, stream in streams.items():
        tags = expected_tags(stream)
        assert await reads.current_tags(customer) == tags
        assert await reads.history(customer, limit=100) == stream[::-1][:history_limit]
        assert await reads.last_seq(customer) == len(stream)
        for group, tag_ids in tags.items():
            for tag in tag_ids:
                expected_members.setdefault((group, tag), set()).add(customer)
    for group, tag in [("tier", t) for t in TIERS] + [("interest", t) for t in INTERESTS]:
        assert {m async for m in reads.members(group, tag)} == expected_members.get((group, tag), set())
    for group in ("tier", "interest"):
        holders = {c for (g, _), customers in expected_members.items() if g == group for c in customers}
        assert await reads.group_member_count(group) == len(holders)
    assert await reads.gaps() == 0


async def dump_read_model(redis_client: aioredis.Redis, redis_prefix: str) -> dict[str, Any]:
    """Every key under the redis_prefix (named without it) with its type and full content, dense ids
    replaced by the customers they stand for (ids are given in the order customers are first tagged,
    which differs between two orders of applying the same streams), history entries by the changes
    they keep and the head table by its heads (numbered in the order first seen, like dense ids)."""
    reads = ReadModel(redis_client, key_prefix=redis_prefix)
    dump: dict[str, Any] = {}
    async for raw in redis_client.scan_iter(match=f"{redis_prefix}*", count=1000):
        key = _text(raw)
        name = key.removeprefix(redis_prefix)
        kind = _text(await redis_client.type(key))
        if name.startswith("ids:"):
            kind, name = "dense ids", "ids"
            value = sorted(await reads.name(list(range(int(await redis_client.get(reads.keys.next_id))))))
        elif name == "heads":
            value = sorted(v for k, v in (await redis_client.hgetall(key)).items() if k != b"gen")
        elif name == "heads:numbers":
            value = sorted(await redis_client.hkeys(key))
        elif name.startswith("h:{"):
            value = await reads.history(name[3:-1], limit=10_000)
        elif name.startswith("b:"):
            value = sorted([c async for ids in set_bits(redis_client, key) for c in await reads.name(ids)])
        elif kind == "hash":
            value = {k: v for k, v in (await redis_client.hgetall(key)).items() if k != b"id"}
        elif kind == "list":
            value = await redis_client.lrange(key, 0, -1)
        elif kind == "set":
            value = sorted(await redis_client.smembers(key))
        elif kind == "string":
            value = await redis_client.get(key)
        else:
            raise AssertionError(f"unexpected {kind} key {key}")
        dump[name] = (kind, value)
    return dump


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
