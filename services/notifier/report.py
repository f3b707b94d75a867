"""The report of a campaign or playbook: per step what was decided, and conversion, treated vs holdout.

The counts are the ledger's tallies (services/notifier/ports.py `Tally`): each step key's final
decision is counted once, when first recorded, so they equal the distinct idempotency keys per
outcome on `tagstream.notifications`. `deferred` counts deferrals (a step deferred twice counts
twice), `targeted` the steps planned (a campaign: its customers fanned out per step).

Conversion: a customer converted when their last order is after their first touch (first send, or
the holdout suppression that stood in for it) and at most `window` later. Only the last order is
kept by the read model, so a customer who ordered inside the window and again after it is not
counted: the same undercount in both groups, so the comparison holds; read the report before the
window closes for exact figures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from pydantic import BaseModel, Field

from services.notifier.ports import ProgramKind, Reports
from services.runtime.readmodel import Activity

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
