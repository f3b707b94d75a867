"""The tagger's per-message step, with no I/O: decode, run the engine, say what to send and store.

The faust agent stays a thin loop around this: it hands over each message and a way to load a
customer's stored state, then sends what comes back and writes the new state only after Kafka has
acknowledged every tag change (at-least-once with an exact effect: see docs/tagger.md).
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter, ValidationError

from schemas.events import event_adapter
from schemas.excerpt import describe_validation_error, excerpt
from schemas.tags import TagCommand
from schemas.topics import DeadLetter, SyncPartition, Tick, TopicNames
from services.engine import CommandRefused, CustomerState, DefinitionChange, Engine
from services.engine.admission import wrong_currency
from services.engine.arrival import Arrival
from services.engine.changes import TagChange
from services.engine.codec import decode, encode
from services.engine.evaluator import next_due
from services.engine.timeutil import from_us, to_us
from services.runtime.clock import Clock
from services.runtime.partitioning import cached_partition_for
from services.tagger.decoded import DecodedStates

RecordOutcome = Literal[
    "applied", "duplicate", "invalid", "refused", "mismatched_key", "failed", "tick", "sync", "ignored"
]


@dataclass(frozen=True)
class Incoming:
    """One consumed record, as the agent sees it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_us: int
    """The record's timestamp: the instant the message is evaluated at, the same on every redelivery."""


@dataclass
class Result:
    outcome: RecordOutcome
    kind: str = ""
    """The event type (order_paid, browse...), 'command', 'tick' or 'sync' — for metrics."""
    customer_id: str | None = None
    state: bytes | None = None
    """The customer's new stored state (None: nothing to write)."""
    next_check_us: int | None = None
    changes: list[TagChange] = field(default_factory=list)
    dead_letter: DeadLetter | None = None
    sync: SyncPartition | None = None


Loader = Callable[[str], bytes | None]


class TaggerCore:
    def __init__(
        self,
        engine: Engine,
        topics: TopicNames,
        clock: Clock,
        arrival: Arrival | None = None,
        *,
        currency: str = "CNY",
        partitions: int | None = None,
        decoded: DecodedStates | None = None,
    ) -> None:
        self.engine = engine
        self._decoded = decoded if decoded is not None else DecodedStates(0)
        """States kept decoded between a customer's messages (decoded.py); none kept by default."""
        self._partitions = partitions
        """The input topics' partition count: a record on another partition than its key's is refused
        (None: records are not read from Kafka, nothing to check)."""
        self._arrival = arrival or Arrival()
        self._topics = topics
        self._clock = clock
        self._currency = currency
        """The shop's one currency: an order in another one is dead-lettered, never summed with it."""
        self._events = event_adapter()
        self._internal_messages: TypeAdapter[Tick | SyncPartition] = TypeAdapter(
            Annotated[Tick | SyncPartition, Field(discriminator="kind")]
        )

    def handle(self, message: Incoming, load: Loader) -> Result:
        if message.topic == self._topics.events:
            return self._event(message, load)
        if message.topic == self._topics.tag_commands:
            return self._command(message, load)
        if message.topic == self._topics.tagger_ticks:
            return self._internal(message, load)
        return Result("ignored")

    def failed(self, message: Incoming, error: Exception) -> Result:
        """A message that made the tagger fail: dead-lettered so it cannot stall its partition."""
        return self._rejected(message, "failed", f"internal error: {type(error).__name__}: {excerpt(str(error), 300)}")

    def dead_letter(
        self, message: Incoming, error: Literal["invalid", "refused", "mismatched_key", "failed"], reason: str
    ) -> DeadLetter:
        """The dead letter of a message read outside the agent (the definitions feed)."""
        letter = self._rejected(message, error, reason).dead_letter
        assert letter is not None
        return letter

    def backfill(
        self, stored: bytes, change: DefinitionChange, now_us: int
    ) -> tuple[bytes, list[TagChange], int | None]:
        """Bring one stored customer in line with new definitions (see Engine.backfill)."""
        state = decode(stored)
        changes = self.engine.backfill(state, change, from_us(now_us))
        return encode(state), changes, next_due(state)

    def _event(self, message: Incoming, load: Loader) -> Result:
        try:
            event = self._events.validate_json(message.value or b"")
        except ValidationError as error:
            return self._rejected(message, "invalid", describe_validation_error(error))
        mismatch = _key_mismatch(message, event.customer_id, self._partitions)
        if mismatch:
            return self._rejected(message, "mismatched_key", mismatch)
        refused = wrong_currency(event, self._currency)
        if refused:
            return self._rejected(message, "invalid", refused, kind=event.type)
        # The record timestamp is the clock; the event's own date only picks its day (arrival.py).
        now_us = message.timestamp_us
        occurred_us = to_us(event.occurred_at)
        ahead = self._arrival.too_far_ahead(occurred_us, now_us)
        if ahead:
            return self._rejected(message, "invalid", ahead, kind=event.type)
        source = self._arrival.source(event, occurred_us, now_us)
        state = self._load(event.customer_id, load)
        duplicates = self.engine.duplicates
        changes = self.engine.on_event_us(state, event, now_us, occurred_us, source)
        outcome: RecordOutcome = "duplicate" if self.engine.duplicates != duplicates else "applied"
        stored = self._stored(event.customer_id, state)
        return Result(outcome, event.type, event.customer_id, stored, next_due(state), changes)

    def _command(self, message: Incoming, load: Loader) -> Result:
        try:
            command = TagCommand.model_validate_json(message.value or b"")
        except ValidationError as error:
            return self._rejected(message, "invalid", describe_validation_error(error))
        mismatch = _key_mismatch(message, command.customer_id, self._partitions)
        if mismatch:
            return self._rejected(message, "mismatched_key", mismatch)
        state = self._load(command.customer_id, load)
        try:
            changes = self.engine.on_command(state, command, from_us(message.timestamp_us))
        except CommandRefused as refused:
            return self._rejected(message, "refused", str(refused), kind="command")
        stored = self._stored(command.customer_id, state)
        return Result("applied", "command", command.customer_id, stored, next_due(state), changes)

    def _internal(self, message: Incoming, load: Loader) -> Result:
        try:
            internal = self._internal_messages.validate_json(message.value or b"")
        except ValidationError as error:
            return self._rejected(message, "invalid", describe_validation_error(error))
        if isinstance(internal, SyncPartition):
            return Result("sync", "sync", sync=internal)
        tick = internal
        stored = load(tick.customer_id)
        if stored is None:
            return Result("ignored", "tick")
        state = self._decode(tick.customer_id, stored)
        changes = self.engine.advance_us(state, tick.until_us)
        return Result("tick", "tick", tick.customer_id, self._stored(tick.customer_id, state), next_due(state), changes)

    def _rejected(
        self,
        message: Incoming,
        error: Literal["invalid", "refused", "mismatched_key", "failed"],
        reason: str,
        kind: str = "",
    ) -> Result:
        value = message.value or b""
        letter = DeadLetter(
            reason=reason,
            error=error,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key.decode("utf-8", "replace") if message.key is not None else None,
            original=value.decode("utf-8", "replace"),
            original_base64=base64.b64encode(value).decode(),
            failed_at=self._clock.now(),
        )
        return Result(error, kind or "unknown", dead_letter=letter)

    def _load(self, customer_id: str, load: Loader) -> CustomerState:
        stored = load(customer_id)
        return self._decode(customer_id, stored) if stored is not None else self.engine.new_state(customer_id)

    def _decode(self, customer_id: str, stored: bytes) -> CustomerState:
        """The state behind `stored`: the one kept decoded, when it was encoded to these very bytes."""
        kept = self._decoded.take(customer_id, stored)
        return kept if kept is not None else decode(stored)

    def _stored(self, customer_id: str, state: CustomerState) -> bytes:
        """The state's stored form; the state kept decoded beside it (the message succeeded: nothing
        changes the state after this)."""
        stored = encode(state)
        self._decoded.keep(customer_id, stored, state)
        return stored


def _key_mismatch(message: Incoming, customer_id: str, partitions: int | None) -> str | None:
    # Per-customer order needs every message of a customer in one partition: the key decides it. A
    # key-less message lands on any partition, so the customer's state would exist in several; so
    # does a keyed one placed by another partitioner (librdkafka's default hashes with CRC32).
    if message.key is None:
        return f"the message has no key; key messages by customer_id ({customer_id!r})"
    key = message.key.decode("utf-8", "replace")
    if key != customer_id:
        return f"message key {key!r} does not match customer_id {customer_id!r}; key messages by customer_id"
    if partitions is not None:
        expected = cached_partition_for(message.key, partitions)
        if expected != message.partition:
            return (
                f"message key {excerpt(key, 60)} belongs in partition {expected} of {partitions}, not "
                f"{message.partition}; produce with Kafka's default partitioner (murmur2; librdkafka clients: "
                "partitioner=murmur2_random)"
            )
    return None
