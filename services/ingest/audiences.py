"""Audiences over the Redis read model: set algebra on the tag member sets `ts:t:<group>/<tag>`.

A query is snapshotted into a sorted set whose members all score the same, so pages are read in
ascending id order by range (ZRANGEBYLEX after the last id seen): stable while the snapshot lives
(`audience_ttl_s`), however members join or leave meanwhile, and one customer appears once however
many of the selected tags they hold (set semantics).
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import orjson
from redis.asyncio import Redis

from services.ingest.ports import AudiencePage, AudienceQuery, CursorExpired
from services.runtime.clock import Clock
from services.runtime.readmodel import Keys

_SNAPSHOT_ID = re.compile(r"^[0-9a-f]{32}$")
_EXPORT_PAGE = 1000


class InvalidCursor(ValueError):
    """A cursor this service did not issue."""


class RedisAudiences:
    def __init__(self, redis: Redis, keys: Keys, ttl_s: int, clock: Clock) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s
        self._clock = clock

    async def query(self, query: AudienceQuery, limit: int) -> AudiencePage:
        snapshot = uuid.uuid4().hex
        await self._snapshot(query, snapshot)
        return await self._page(snapshot, None, limit)

    async def page(self, cursor: str, limit: int) -> AudiencePage:
        snapshot, after = decode_cursor(cursor)
        if not await self._redis.exists(self._snapshot_key(snapshot)):
            raise CursorExpired(f"the audience behind this cursor expired after {self._ttl_s}s; run the query again")
        return await self._page(snapshot, after, limit)

    async def export(self, query: AudienceQuery) -> AsyncIterator[str]:
        snapshot = uuid.uuid4().hex
        await self._snapshot(query, snapshot)
        key = self._snapshot_key(snapshot)
        after: str | None = None
        try:
            while True:
                ids = [
                    _text(member) for member in await self._redis.zrangebylex(key, _after(after), "+", 0, _EXPORT_PAGE)
                ]
                for customer_id in ids:
                    yield customer_id
                if len(ids) < _EXPORT_PAGE:
                    return
                after = ids[-1]
        finally:
            await self._redis.delete(key)

    async def _snapshot(self, query: AudienceQuery, snapshot: str) -> None:
        key = self._snapshot_key(snapshot)
        work = [f"{key}:all", f"{key}:any", f"{key}:base"]
        members = self._member_keys
        async with self._redis.pipeline(transaction=True) as pipe:
            sources = []
            if query.all_of:
                pipe.sinterstore(work[0], members(query.all_of))
                sources.append(work[0])
            if query.any_of:
                pipe.sunionstore(work[1], members(query.any_of))
                sources.append(work[1])
            pipe.sinterstore(work[2], sources)
            if query.none_of:
                pipe.sdiffstore(work[2], [work[2], *members(query.none_of)])
            pipe.zunionstore(key, {work[2]: 0})  # every score 0: ranges by id (ZRANGEBYLEX)
            pipe.expire(key, self._ttl_s)
            pipe.delete(*work)
            await pipe.execute()

    async def _page(self, snapshot: str, after: str | None, limit: int) -> AudiencePage:
        key = self._snapshot_key(snapshot)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zcard(key)
            pipe.zrangebylex(key, _after(after), "+", 0, limit + 1)
            count, members = await pipe.execute()
        ids = [_text(member) for member in members]
        more = len(ids) > limit
        ids = ids[:limit]
        cursor = encode_cursor(snapshot, ids[-1]) if more else None
        return AudiencePage(
            count=int(count),
            customer_ids=ids,
            cursor=cursor,
            expires_at=self._clock.now() + timedelta(seconds=self._ttl_s),
        )

    def _member_keys(self, refs: tuple[str, ...]) -> list[str]:
        return [self._keys.members(*ref.split("/", 1)) for ref in refs]

    def _snapshot_key(self, snapshot: str) -> str:
        return f"{self._keys.prefix}audience:{snapshot}"


def _after(customer_id: str | None) -> str:
    return "-" if customer_id is None else "(" + customer_id


def encode_cursor(snapshot: str, after: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"s": snapshot, "a": after})).decode()


def decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        document: Any = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
        snapshot, after = document["s"], document["a"]
    except (ValueError, TypeError, KeyError):
        raise InvalidCursor(f"cursor: not a cursor this service issued: {cursor[:40]!r}") from None
    if not isinstance(snapshot, str) or not _SNAPSHOT_ID.match(snapshot) or not isinstance(after, str):
        raise InvalidCursor(f"cursor: not a cursor this service issued: {cursor[:40]!r}")
    return snapshot, after


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
