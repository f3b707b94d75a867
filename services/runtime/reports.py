"""The report of a campaign or playbook: per step what was decided, and conversion, treated vs holdout.

The counts are the notifier ledger's tallies (`Tally` below): each step key's final decision is
counted once, when first recorded, so they equal the distinct idempotency keys per
outcome on `tagstream.notifications`. `deferred` counts deferrals (a step deferred twice counts
twice), `targeted` the steps planned (a campaign: its customers fanned out per step).

Conversion: a customer converted when their last order is after their first touch (first send, or
the holdout suppression that stood in for it) and at most `window` later. Only the last order is
kept by the read model, so a customer who ordered inside the window and again after it is not
counted: the same undercount in both groups, so the comparison holds; read the report before the
window closes for exact figures.

Key layout (prefix `ts:` by default), written by the notifier's ledger (services/notifier/redis_store.py):

    ts:r:<kind>:<id>             hash    report tallies of a playbook or campaign: "<step>|<outcome>|<reason>" -> n
    ts:r:<kind>:<id>:touch       hash    customer -> "treated|<ms>" or "holdout|<ms>": their first send (or holdout)
    ts:c:{<customer>}:sent:<ch>  zset    "<playbook>|<step key>" -> sent at (ms): what the caps count
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from services.engine.timeutil import from_us
from services.runtime.caps import SendRecord
from services.runtime.readmodel import DEFAULT_PREFIX, Activity
from services.runtime.redis import as_text, to_ms

ProgramKind = Literal["playbook", "campaign"]


@dataclass(frozen=True, slots=True)
class Tally:
    """A final decision as the reports count it: once per step key, however often it is recorded."""

    kind: ProgramKind
    program_id: str
    step: int
    outcome: str
    reason: str
    customer_id: str
    touched: Literal["treated", "holdout"] | None
    """A send (treated) or a holdout suppression: the customer's first one starts their conversion window."""
    at: datetime

    @property
    def field(self) -> str:
        return f"{self.step}|{self.outcome}|{self.reason}"


class Reports(Protocol):
    """What the reports read (GET /v1/campaigns/{id}/report, /v1/playbooks/{id}/report)."""

    async def counts(self, kind: ProgramKind, program_id: str) -> dict[str, int]:
        """Tally field ("<step>|<outcome>|<reason>", "<step>|targeted", ...) -> count."""
        ...

    def touches(self, kind: ProgramKind, program_id: str) -> AsyncIterator[tuple[str, str, datetime]]:
        """(customer, "treated" | "holdout", first touch) of every customer the program touched."""
        ...


class SendHistory(Protocol):
    async def history(self, customer_id: str, channel: str, since: datetime) -> list[SendRecord]:
        """The customer's sends on `channel` after `since`: what the caps count."""
        ...


class RedisReports:
    """The tallies and send history in Redis, read by the reports and the campaign preview; the
    notifier's ledger (services/notifier/redis_store.py `RedisLedger`) writes them."""

    def __init__(self, redis: Redis, *, key_prefix: str = DEFAULT_PREFIX) -> None:
        self._redis = redis
        self._prefix = key_prefix

    def report_key(self, kind: ProgramKind, program_id: str) -> str:
        return f"{self._prefix}r:{kind}:{program_id}"

    def sent_key(self, customer_id: str, channel: str) -> str:
        return f"{self._prefix}c:{{{customer_id}}}:sent:{channel}"

    async def history(self, customer_id: str, channel: str, since: datetime) -> list[SendRecord]:
        entries: list[Any] = await self._redis.zrangebyscore(
            self.sent_key(customer_id, channel), f"({to_ms(since)}", "+inf", withscores=True
        )
        return [
            SendRecord(channel, as_text(member).split("|", 1)[0], from_us(int(score) * 1000))
            for member, score in entries
        ]

    async def counts(self, kind: ProgramKind, program_id: str) -> dict[str, int]:
        fields = await self._redis.hgetall(self.report_key(kind, program_id))
        return {as_text(name): int(value) for name, value in fields.items()}

    async def touches(self, kind: ProgramKind, program_id: str) -> AsyncIterator[tuple[str, str, datetime]]:
        key = f"{self.report_key(kind, program_id)}:touch"
        async for customer, value in self._redis.hscan_iter(key, count=1000):
            touched, at = as_text(value).split("|", 1)
            yield as_text(customer), touched, from_us(int(at) * 1000)


_BATCH = 32
"""Customers whose last order is read at once (each read takes one of redis-py's 100 pooled connections)."""


class OrderActivity(Protocol):
    async def activity(self, customer_id: str) -> Activity | None: ...


class StepReport(BaseModel):
    step: int
    channel: str | None = Field(description="a campaign's step channel (a playbook's may have changed: none)")
    targeted: int = Field(description="customers the step was planned for (campaign: fanned out so far)")
    held_out: int = Field(description="suppressed because the customer is in the control group")
    sent: int
    suppressed: dict[str, int] = Field(description="reason -> steps (consent, unreachable, duplicate, cap, stale)")
    deferred: dict[str, int] = Field(description="reason -> deferrals (quiet_hours, circuit_open, paused)")
    cancelled: int
    failed: int


class Conversion(BaseModel):
    window: timedelta
    treated: int = Field(description="customers sent at least one step")
    treated_converted: int
    treated_rate: float | None
    holdout: int = Field(description="customers held out")
    holdout_converted: int
    holdout_rate: float | None
    uplift: float | None = Field(description="treated_rate - holdout_rate")


class Report(BaseModel):
    kind: ProgramKind
    id: str
    steps: list[StepReport]
    conversion: Conversion


def step_reports(
    counts: dict[str, int], channels: Sequence[str | None], targeted: Sequence[int] | None = None
) -> list[StepReport]:
    """The per-step figures from the tallies; `targeted` overrides the tallied one (a campaign's cursors)."""
    steps = []
    for number, channel in enumerate(channels):
        prefix = f"{number}|"
        mine = {field[len(prefix) :]: n for field, n in counts.items() if field.startswith(prefix)}

        def by_reason(outcome: str, mine: dict[str, int] = mine) -> dict[str, int]:
            return {f.split("|", 1)[1]: n for f, n in mine.items() if f.startswith(outcome + "|") and "|" in f}

        suppressed = by_reason("suppressed")
        held_out = suppressed.pop("holdout", 0)
        steps.append(
            StepReport(
                step=number,
                channel=channel,
                targeted=targeted[number] if targeted is not None else mine.get("targeted", 0),
                held_out=held_out,
                sent=sum(by_reason("sent").values()),
                suppressed=suppressed,
                deferred=by_reason("deferred"),
                cancelled=sum(by_reason("cancelled").values()),
                failed=sum(by_reason("failed").values()),
            )
        )
    return steps


async def conversion(
    reports: Reports, activity: OrderActivity, kind: ProgramKind, program_id: str, window: timedelta
) -> Conversion:
    touched: dict[str, int] = {"treated": 0, "holdout": 0}
    converted: dict[str, int] = {"treated": 0, "holdout": 0}
    batch: list[tuple[str, str, datetime]] = []

    async def flush() -> None:
        found = await asyncio.gather(*(activity.activity(customer) for customer, _, _ in batch))
        for (_, group, first), seen in zip(batch, found, strict=True):
            touched[group] += 1
            last_order = seen.last_order_at if seen is not None else None
            if last_order is not None and first < last_order <= first + window:
                converted[group] += 1
        batch.clear()

    async for touch in reports.touches(kind, program_id):
        batch.append(touch)
        if len(batch) >= _BATCH:
            await flush()
    await flush()
    treated_rate = converted["treated"] / touched["treated"] if touched["treated"] else None
    holdout_rate = converted["holdout"] / touched["holdout"] if touched["holdout"] else None
    return Conversion(
        window=window,
        treated=touched["treated"],
        treated_converted=converted["treated"],
        treated_rate=treated_rate,
        holdout=touched["holdout"],
        holdout_converted=converted["holdout"],
        holdout_rate=holdout_rate,
        uplift=None if treated_rate is None or holdout_rate is None else treated_rate - holdout_rate,
    )
