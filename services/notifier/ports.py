"""The notifier's ports: what its core needs from the outside, each with a Redis and an in-memory store.

The core (core.py) only sees these; services wire Redis, Kafka and HTTP behind them, the embedded
mode wires memory.py and the log provider.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from schemas.notifications import NotificationOutcome
from services.notifier.policy import ScheduledStep, SendRecord
from services.runtime.reports import ProgramKind, Tally


@dataclass(frozen=True, slots=True)
class Claim:
    """A job leased to this replica until its lease ends; `token` proves the lease is still ours."""

    job: ScheduledStep
    token: str
    claims: int
    """How many times the job has been claimed, this one included (more than one: a replica died or gave up)."""


class Scheduler(Protocol):
    """Due steps, with lease-based claiming: a claimed job is invisible to others until its lease ends."""

    async def schedule(self, jobs: Sequence[ScheduledStep]) -> set[str]:
        """Store the jobs; a key already stored is left alone (scheduling is idempotent). Returns the new keys."""
        ...

    async def claim(self, now: datetime, limit: int, lease: timedelta) -> list[Claim]:
        """Up to `limit` jobs due at `now` (including ones whose lease ran out), leased until now + lease."""
        ...

    async def complete(self, claim: Claim) -> bool:
        """Remove the job; False when the lease was lost (another replica has it now)."""
        ...

    async def defer(self, claim: Claim, until: datetime) -> bool:
        """Release the job, due again at `until`; False when the lease was lost."""
        ...

    async def backlog(self, now: datetime) -> tuple[int, datetime | None]:
        """Due, unclaimed jobs at `now` and the due time of the oldest of them."""
        ...


class Ledger(Protocol):
    """What was decided and sent: dedupe keys, coupon reservations and the send history the caps count."""

    async def decided(self, key: str) -> bool: ...

    async def history(self, customer_id: str, channel: str, since: datetime) -> list[SendRecord]: ...

    async def coupon_holder(self, customer_id: str, coupon: str, now: datetime) -> str | None:
        """The step key holding this coupon kind for the customer, while its reservation lasts."""
        ...

    async def reserve_coupon(self, customer_id: str, coupon: str, key: str, now: datetime, until: datetime) -> str:
        """Atomically take the coupon kind for `key` unless another step holds it; returns the holder."""
        ...

    async def release_coupon(self, customer_id: str, coupon: str, key: str) -> None:
        """Give the reservation back (the send failed), only if `key` holds it."""
        ...

    async def record(
        self,
        key: str,
        outcome: str,
        sent: SendRecord | None,
        customer_id: str,
        keep: timedelta,
        tally: Tally | None = None,
    ) -> None:
        """Mark the step decided for `keep`, and count a send in the customer's history; the first
        record of a key also counts `tally` into its program's report (atomically with the mark)."""
        ...

    async def tally(self, kind: ProgramKind, program_id: str, field: str, count: int = 1) -> None:
        """Count something the reports show that is not a final decision (targeted, deferred)."""
        ...

    async def lock(self, customer_id: str, channel: str, holder: str, ttl: timedelta) -> bool:
        """Take the customer's channel for one decision and send; False when another holder has it.

        The lock expires after `ttl` (the claim's lease), so a crashed holder never blocks it for long;
        the same holder (the step, re-claimed after a crash) gets it back at once.
        """
        ...

    async def unlock(self, customer_id: str, channel: str, holder: str) -> None: ...


class TagFacts(Protocol):
    """The narrow read of the tag read model that cancel conditions need."""

    async def holds(self, customer_id: str, group_id: str, tag_id: str) -> bool | None:
        """Whether the customer holds the tag now; None when the read model does not know the customer."""
        ...

    async def last_activity(self, customer_id: str) -> datetime | None:
        """The later of the customer's last order and last visit."""
        ...


class OutcomeSink(Protocol):
    async def emit(self, outcome: NotificationOutcome) -> None: ...

    async def dead_letter(self, outcome: NotificationOutcome) -> None: ...


@dataclass(frozen=True, slots=True)
class Message:
    """What a provider receives. `to` and `text` are personal data: never logged (see __repr__)."""

    idempotency_key: str
    channel: str
    customer_id: str
    playbook_id: str | None
    step: int
    template: str | None
    text: str | None
    coupon: str | None
    to: str | None = field(default=None)
    campaign_id: str | None = None

    def __repr__(self) -> str:
        return (
            f"Message(key={self.idempotency_key}, channel={self.channel}, "
            f"{'campaign=' + self.campaign_id if self.campaign_id else f'playbook={self.playbook_id}'}, "
            f"step={self.step}, customer={self.customer_id})"
        )

    __str__ = __repr__

    def payload(self) -> dict[str, object]:
        return {
            "idempotency_key": self.idempotency_key,
            "channel": self.channel,
            "customer_id": self.customer_id,
            "playbook_id": self.playbook_id,
            "campaign_id": self.campaign_id,
            "step": self.step,
            "template": self.template,
            "text": self.text,
            "coupon": self.coupon,
            "to": self.to,
        }


class Provider(Protocol):
    """Delivers one message; raises resilience.GaveUp or CircuitOpen. Returns the attempts it took."""

    async def send(self, message: Message) -> int: ...

    async def close(self) -> None: ...
