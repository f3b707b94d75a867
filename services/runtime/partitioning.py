"""Which partition a key lands in: the same murmur2 choice as the Kafka producers' default partitioner."""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def partition_for(key: bytes, partitions: int) -> int:
    return int((murmur2(key) & 0x7FFFFFFF) % partitions)
