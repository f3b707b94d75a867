"""Which partition a key lands in: the same murmur2 choice as the Kafka producers' default partitioner
(Java's and aiokafka's, so ingest's): `toPositive(murmur2(key)) % partitions`."""

from __future__ import annotations

import functools

from aiokafka.partitioner import murmur2


def partition_for(key: bytes, partitions: int) -> int:
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)


@functools.lru_cache(maxsize=1 << 16)
def cached_partition_for(key: bytes, partitions: int) -> int:
    """`partition_for` for a hot path that sees the same keys again (a shop's active customers): murmur2
    in Python costs ~4 µs a key, a cache hit well under one."""
    return partition_for(key, partitions)
