"""The tag definitions topic: compacted, keyed by group id, read whole by every worker.

Every worker reads the topic itself from the beginning (faust's GlobalTable is inconsistent across
replicas upstream, faust-streaming#283): first to the end offsets it finds at start, which is when it
reports `ready`, then forever. A tombstone (null value) deletes a group.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from schemas.excerpt import describe_validation_error
from schemas.tags import TagGroup
from services.runtime.kafka import client_options, partitions_of
from services.runtime.settings import KafkaSettings

log = logging.getLogger(__name__)

OnDefinitions = Callable[[dict[str, TagGroup]], None]
OnRejected = Callable[[Any, Literal["invalid", "mismatched_key"], str], None]
"""(the consumer record, why in one word, why in a sentence) of a record that was not applied."""


def definition_record(group: TagGroup) -> tuple[bytes, bytes]:
    """The (key, value) a group is published as."""
    return group.id.encode(), group.model_dump_json(by_alias=True).encode()


def deletion_record(group_id: str) -> tuple[bytes, None]:
    return group_id.encode(), None


class DefinitionsFeed:
    def __init__(
        self, kafka: KafkaSettings, topic: str, on_definitions: OnDefinitions, on_rejected: OnRejected | None = None
    ) -> None:
        self._kafka = kafka
        self._topic = topic
        self._on_definitions = on_definitions
        self._on_rejected = on_rejected
        self.groups: dict[str, TagGroup] = {}
        self.ready = asyncio.Event()
        self.invalid = 0

    async def run(self) -> None:
        """Read until cancelled; calls on_definitions once caught up, then after every change."""
        consumer = AIOKafkaConsumer(
            **client_options(self._kafka), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            partitions = await self._partitions(consumer)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            while not await self._caught_up(consumer, ends):
                batch = await consumer.getmany(timeout_ms=200)
                self._apply(record for records in batch.values() for record in records)
            self._on_definitions(dict(self.groups))
            self.ready.set()
            while True:
                batch = await consumer.getmany(timeout_ms=1000)
                if batch:
                    self._apply(record for records in batch.values() for record in records)
                    self._on_definitions(dict(self.groups))
        finally:
            await consumer.stop()

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        return [TopicPartition(self._topic, partition) for partition in await partitions_of(self._kafka, self._topic)]

    @staticmethod
    async def _caught_up(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            if await consumer.position(tp) < end:
                return False
        return True

    def _apply(self, records: Iterable[object]) -> None:
        for record in records:
            key = getattr(record, "key", None)
            value = getattr(record, "value", None)
            if key is None:  # a compacted topic refuses these; a topic made by hand may not
                self._reject(record, "mismatched_key", "the definition has no key; key definitions by group id")
                continue
            group_id = key.decode("utf-8", "replace")
            if value is None:
                self.groups.pop(group_id, None)
                continue
            try:
                group = TagGroup.model_validate_json(value)
            except ValidationError as error:
                reason = f"invalid definition of group {group_id[:64]!r}: {describe_validation_error(error)}"
                self._reject(record, "invalid", reason)
                continue
            if group.id != group_id:
                # Applied under its key, a later tombstone or update of group.id would miss it.
                self._reject(
                    record,
                    "mismatched_key",
                    f"definition key {group_id[:64]!r} does not match the group id {group.id!r}; key definitions "
                    f"by group id (a tombstone for key {group_id[:64]!r} removes this record)",
                )
                continue
            self.groups[group_id] = group

    def _reject(self, record: object, error: Literal["invalid", "mismatched_key"], reason: str) -> None:
        self.invalid += 1
        log.error("ignoring a record of %s: %s", self._topic, reason)
        if self._on_rejected is not None:
            self._on_rejected(record, error, reason)
