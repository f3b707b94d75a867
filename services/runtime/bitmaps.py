"""Tag bitmaps over dense customer ids: reading them in bounded slices and naming the customers.

The projector gives every customer it tags a dense id (0, 1, 2, ... in the order customers first
gain a tag) and keeps each tag's holders as a Redis bitmap with that bit set (readmodel.py). Sets of
customers are then bitmaps: audiences are `BITOP` over them, about 125 KB per tag at a million
customers, which Redis combines in well under a millisecond. Nothing here reads a whole bitmap in
one command: `set_bits` walks it in `SLICE_BYTES` slices with `GETRANGE`, and `customer_ids` names
the ids it found from the id buckets (`HMGET`, one bucket of `ID_BUCKET` ids per command).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.client import NEVER_DECODE

SLICE_BYTES = 16 * 1024
"""Bytes of a bitmap read per GETRANGE: 131,072 customers."""

ID_BUCKET = 128
"""Ids per bucket hash of the id -> customer map: Redis keeps a hash of up to 128 short fields
(`hash-max-listpack-entries`' default) as one compact listpack, ~15 bytes per customer."""

_BITS_OF_BYTE = [tuple(bit for bit in range(8) if byte & (0x80 >> bit)) for byte in range(256)]
"""Redis numbers bits from the most significant bit of byte 0 (SETBIT/GETBIT)."""


def bits_in(data: bytes, first_bit: int, *, after: int = -1, limit: int | None = None) -> list[int]:
    """The positions of the set bits of `data` (whose first bit is `first_bit`, a multiple of 8) beyond
    `after`, ascending; only the first `limit` when given (the bytes after them are not looked at)."""
    found: list[int] = []
    start = max(0, (after + 1 - first_bit) // 8)
    for index in range(start, len(data)):
        byte = data[index]
        if byte:
            base = first_bit + index * 8
            found.extend(base + bit for bit in _BITS_OF_BYTE[byte] if base + bit > after)
            if limit is not None and len(found) >= limit:
                return found[:limit]
    return found


async def set_bits(redis: Redis, key: str, *, after: int = -1, limit: int | None = None) -> AsyncIterator[list[int]]:
    """The set bits of the bitmap at `key` beyond position `after`, ascending, slice by slice; at most
    `limit` of them in all (None: every one)."""
    start_byte = (after + 1) // 8
    remaining = limit
    while remaining is None or remaining > 0:
        data = await _getrange(redis, key, start_byte, start_byte + SLICE_BYTES - 1)
        if not data:
            return
        found = bits_in(data, start_byte * 8, after=after, limit=remaining)
        if remaining is not None:
            remaining -= len(found)
        if found:
            yield found
        if len(data) < SLICE_BYTES:
            return
        start_byte += SLICE_BYTES


async def customer_ids(redis: Redis, bucket_key: Any, ids: Sequence[int]) -> list[str]:
    """The customers behind dense ids, in the same order, over one round trip (one HMGET per bucket).

    `bucket_key(n)` names bucket n. An id no bucket names (cannot happen while the projector's writes
    are atomic) raises: a wrong audience is worse than none."""
    buckets: dict[int, list[int]] = {}
    for dense in ids:
        buckets.setdefault(dense // ID_BUCKET, []).append(dense)
    async with redis.pipeline(transaction=False) as pipe:
        for bucket, members in buckets.items():
            pipe.hmget(bucket_key(bucket), [str(dense % ID_BUCKET) for dense in members])
        replies = await pipe.execute()
    named: dict[int, str] = {}
    for (bucket, members), values in zip(buckets.items(), replies, strict=True):
        for dense, value in zip(members, values, strict=True):
            if value is None:
                raise LookupError(f"dense id {dense} (bucket {bucket}) names no customer: the read model is damaged")
            named[dense] = value.decode() if isinstance(value, bytes) else str(value)
    return [named[dense] for dense in ids]


def snapshot_commands(
    all_of: Sequence[str], any_of: Sequence[str], none_of: Sequence[str], *, target: str, work: str
) -> list[tuple[str, ...]]:
    """The commands that leave in `target` the bitmap of customers holding every bitmap of `all_of`,
    one of `any_of` (at least one of the two given) and none of `none_of`; `work` is scratch, deleted.

    `none_of` is taken away as target XOR (target AND none): Redis 7 has no AND NOT, and `BITOP NOT`
    would clear every id beyond the end of the none_of bitmaps (zeros pad the shorter operand).
    """
    if not all_of and not any_of:
        raise ValueError("an audience needs all_of or any_of tags")
    commands: list[tuple[str, ...]] = []
    if all_of and any_of:
        commands.append(("BITOP", "OR", work, *any_of))
        commands.append(("BITOP", "AND", target, work, *all_of))
    elif all_of:
        commands.append(("BITOP", "AND", target, *all_of))
    else:
        commands.append(("BITOP", "OR", target, *any_of))
    if none_of:
        commands.append(("BITOP", "OR", work, *none_of))
        commands.append(("BITOP", "AND", work, work, target))
        commands.append(("BITOP", "XOR", target, target, work))
    commands.append(("DEL", work))
    return commands


async def _getrange(redis: Redis, key: str, start: int, end: int) -> bytes:
    # Bitmaps are binary: read raw even on a client built with decode_responses.
    data = await redis.execute_command("GETRANGE", key, start, end, **{NEVER_DECODE: True})  # type: ignore[no-untyped-call]
    return bytes(data)
