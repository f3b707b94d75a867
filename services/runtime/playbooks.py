"""Playbooks replaced over the API (PUT /v1/playbooks): they take over from the notifier's playbooks
file in both modes. The ingest API writes them; every notifier replica reads them.
`MemoryPlaybooks` (services/notifier/memory.py) is the same store in one process.

Key layout (prefix `ts:` by default):

    ts:pb                        hash    version, doc (PlaybookSet JSON), at (ms), actor
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from redis.asyncio import Redis

from schemas.playbooks import PlaybookSet
from services.engine.timeutil import from_us
from services.runtime.readmodel import DEFAULT_PREFIX
from services.runtime.redis import as_text, to_ms


@dataclass(frozen=True, slots=True)
class StoredPlaybooks:
    """Playbooks replaced over the API: they take over from the playbooks file, in both modes."""

    version: int
    playbooks: PlaybookSet
    updated_at: datetime
    actor: str


class PlaybookStore(Protocol):
    async def current(self) -> StoredPlaybooks | None:
        """The last set replaced over the API; None while the playbooks file is in force."""
        ...

    async def replace(
        self, playbooks: PlaybookSet, expected_version: int, at: datetime, actor: str
    ) -> StoredPlaybooks | None:
        """Store the set as version `expected_version + 1`; None (nothing stored) when the current version
        is not `expected_version` (another replace came first: read it and try again)."""
        ...


class RedisPlaybooks:
    """`ts:pb` hash: version, doc (PlaybookSet JSON), at (ms), actor; replaced by compare-and-set on version."""

    def __init__(self, redis: Redis, *, key_prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = redis
        self._key = f"{key_prefix}pb"
        self._replace = redis.register_script(_PLAYBOOKS_REPLACE)

    async def current(self) -> StoredPlaybooks | None:
        fields = {as_text(k): as_text(v) for k, v in (await self._redis.hgetall(self._key)).items()}
        if "doc" not in fields:
            return None
        return StoredPlaybooks(
            version=int(fields["version"]),
            playbooks=PlaybookSet.model_validate_json(fields["doc"]),
            updated_at=from_us(int(fields["at"]) * 1000),
            actor=fields["actor"],
        )

    async def version(self) -> int:
        return int(await self._redis.hget(self._key, "version") or 0)

    async def replace(
        self, playbooks: PlaybookSet, expected_version: int, at: datetime, actor: str
    ) -> StoredPlaybooks | None:
        args: list[str | int] = [expected_version, playbooks.model_dump_json(), to_ms(at), actor]
        if not await self._replace([self._key], args):
            return None
        return StoredPlaybooks(expected_version + 1, playbooks, at, actor)


# KEYS: playbooks hash. ARGV: expected version, doc, at ms, actor.
_PLAYBOOKS_REPLACE = """
if tonumber(redis.call('HGET', KEYS[1], 'version') or '0') ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'version', tonumber(ARGV[1]) + 1, 'doc', ARGV[2], 'at', ARGV[3], 'actor', ARGV[4])
return 1
"""
