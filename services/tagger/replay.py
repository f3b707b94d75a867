"""Backtesting: fold a JSON-lines event history through the engine as if it were streaming live.

Events are applied in file order with a simulated clock that never runs backwards (the latest event
time seen). Between events, every customer's time-based flips fire at their own instants, in time
order across customers, exactly as the live tagger's timers would. At the end the clock is moved to
`now` and every remaining flip fires. The output is therefore what the live tagger would have emitted
had these events arrived in this order.
"""

from __future__ import annotations

import gc
import heapq
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, Final

import orjson
from pydantic import ValidationError

from schemas.events import CustomerEvent, OrderPaid, event_adapter
from schemas.excerpt import describe_validation_error
from schemas.tags import ChangeSource, TagCommand
from services.engine import CustomerState, Engine, RuleBook
from services.engine.admission import wrong_currency
from services.engine.changes import TagChange, json_line
from services.engine.fingerprint import DefinitionChange
from services.engine.timeutil import from_us, to_us
from services.engine.zone import UTC_ZONE, DayZone

OUTPUT_BUFFER: Final = 1 << 20
"""Buffer size for the replay's output files: a replay writes several changes of JSON per event, and
1 MiB buffers make a hundredth of the write calls 8 KiB ones do."""


@dataclass
class ReplaySummary:
    lines: int = 0
    events: int = 0
    rejected: int = 0
    duplicates: int = 0
    customers: int = 0
    changes: int = 0
    timer_wakeups: int = 0
    """Customers woken between events because time changed something for them."""
    now: datetime | None = None


class Replay:
    """One replay run: feed lines, then `finish(now)`; `states` holds every customer afterwards."""

    def __init__(
        self,
        engine: Engine,
        *,
        on_change: Callable[[TagChange], None] | None = None,
        on_reject: Callable[[int, str], None] | None = None,
        until: datetime | None = None,
        changes_out: IO[bytes] | None = None,
        currency: str | None = None,
    ) -> None:
        """`changes_out` receives every change as a JSON line (before `on_change` sees it): written
        here rather than by an `on_change` callback, a call per change cheaper. `currency` is the
        shop's: an order in another one is rejected (None: no check, every order is summed)."""
        self.engine = engine
        self._currency = currency
        self._write_change = changes_out.write if changes_out is not None else None
        """`changes_out.write`, looked up once: a replay writes every change through it."""
        self.states: dict[str, CustomerState] = {}
        self.summary = ReplaySummary()
        self._validate_json = event_adapter().validator.validate_json
        """The event adapter's compiled validator, called directly: `TypeAdapter.validate_json` is a
        Python-level wrapper that passes it nothing but defaults, a frame and a keyword call per line."""
        self._on_change = on_change
        self._on_reject = on_reject
        self._until_us = to_us(until) if until is not None else None
        self._clock_us: int | None = None
        self._timers: list[int] = []
        """A heap of the instants (µs) some customer is due at; `_due_at` lists who. Many customers
        fall due at the same instant (midnight, when windows move), and a heap of plain ints is
        cheaper than one of (instant, customer) tuples."""
        self._due_at: dict[int, list[str]] = {}

    def feed(self, lines: Iterable[bytes | str]) -> None:
        summary = self.summary
        for line in lines:
            summary.lines += 1
            if line and not line.isspace():  # not blank: `line.strip()` without copying the line
                self._line(summary.lines, line)

    def finish(self, now: datetime | None = None) -> ReplaySummary:
        """Move the clock to `now` (default: the latest event time) and fire everything due."""
        if now is None:
            now = from_us(self._clock_us) if self._clock_us is not None else None
        if now is not None:
            now_us = to_us(now)
            self._fire(now_us)
            for state in self.states.values():
                self._emit(self.engine.advance_us(state, now_us))
        self.summary.now = now
        self.summary.customers = len(self.states)
        self.summary.duplicates = self.engine.duplicates
        return self.summary

    def apply(self, event: CustomerEvent, number: int = 0) -> None:
        """One validated event, as if it streamed in at its own date; `number` names it in a rejection.

        The backtest's clock: the latest event date seen (`--now` bounds it). Live callers use `apply_at`."""
        at = to_us(event.occurred_at)
        if self._until_us is not None and at > self._until_us:
            self._reject(number, f"occurred_at {event.occurred_at.isoformat()} is after --now")
            return
        currency = self._currency
        if currency is not None and type(event) is OrderPaid and event.currency != currency:
            self._reject(number, wrong_currency(event, currency) or "")
            return
        if self._clock_us is None or at > self._clock_us:
            self._fire(at)
            self._clock_us = at
        self._fold(event, at, "import" if event.source == "import" else "rule")

    def apply_at(self, event: CustomerEvent, now: datetime, source: ChangeSource) -> None:
        """One validated event arriving at `now` (the wall clock): evaluated then, its own date only
        picking the day it counts for; its changes carry `source`."""
        self.advance_to(now)
        self._fold(event, to_us(event.occurred_at), source)

    def _fold(self, event: CustomerEvent, occurred_us: int, source: ChangeSource) -> None:
        assert self._clock_us is not None
        state = self.states.get(event.customer_id)
        if state is None:
            state = self.states[event.customer_id] = self.engine.new_state(event.customer_id)
        before = state.next_at
        self._emit(self.engine.on_event_us(state, event, self._clock_us, occurred_us, source))
        self.summary.events += 1
        self._schedule(state, before)

    def apply_command(self, command: TagCommand) -> None:
        """A manual tag command at the current clock (raises CommandRefused, changing nothing)."""
        clock = from_us(self._clock_us) if self._clock_us is not None else None
        now = max(command.occurred_at, clock) if clock is not None else command.occurred_at
        self.advance_to(now)
        state = self.states.get(command.customer_id)
        if state is None:
            state = self.engine.new_state(command.customer_id)
        before = state.next_at
        changes = self.engine.on_command(state, command, now)
        self.states[command.customer_id] = state
        self._emit(changes)
        self._schedule(state, before)

    def load(self, rulebook: RuleBook, now: datetime) -> DefinitionChange:
        """New tag definitions: every existing customer they concern is re-evaluated (source rule_change)."""
        self.advance_to(now)
        change = self.engine.load(rulebook)
        if not change.empty:
            for state in self.states.values():
                before = state.next_at
                self._emit(self.engine.backfill(state, change, now))
                self._schedule(state, before)
        return change

    def advance_to(self, now: datetime) -> None:
        """Let time pass without events: every flip due up to `now` fires at its own instant."""
        now_us = to_us(now)
        self._fire(now_us)
        if self._clock_us is None or now_us > self._clock_us:
            self._clock_us = now_us

    def _line(self, number: int, line: bytes | str) -> None:
        try:
            event: CustomerEvent = self._validate_json(line)
        except ValidationError as error:
            self._reject(number, describe_validation_error(error))
            return
        self.apply(event, number)

    def _fire(self, until_us: int) -> None:
        """Wake every customer due up to `until_us`: by instant, and at one instant by customer id."""
        timers = self._timers
        while timers and timers[0] <= until_us:
            at = heapq.heappop(timers)
            customers = self._due_at.pop(at)
            if len(customers) > 1:
                customers.sort()
            for customer_id in customers:
                self._fire_one(at, customer_id)

    def _fire_one(self, at: int, customer_id: str) -> None:
        state = self.states[customer_id]
        if state.next_at != at:
            return  # superseded: a newer entry for this customer is in the heap
        self.summary.timer_wakeups += 1
        self._emit(self.engine.advance_us(state, at))
        self._schedule(state, None)

    def _schedule(self, state: CustomerState, before: int | None) -> None:
        at = state.next_at
        if at is not None and at != before:
            waiting = self._due_at.get(at)
            if waiting is None:
                self._due_at[at] = [state.customer_id]
                heapq.heappush(self._timers, at)
            else:
                waiting.append(state.customer_id)

    def _emit(self, changes: list[TagChange]) -> None:
        if changes:
            self.summary.changes += len(changes)
            write = self._write_change
            if write is not None:
                for change in changes:
                    write(json_line(change))
            if self._on_change is not None:
                for change in changes:
                    self._on_change(change)

    def _reject(self, number: int, reason: str) -> None:
        self.summary.rejected += 1
        if self._on_reject is not None:
            self._on_reject(number, reason)


def replay_to(
    lines: Iterable[bytes | str],
    engine: Engine,
    out: IO[bytes],
    *,
    changes_out: IO[bytes] | None = None,
    now: datetime | None = None,
    on_reject: Callable[[int, str], None] | None = None,
    currency: str | None = None,
) -> Replay:
    """The whole replay as the command runs it: JSON lines in; tag changes (as they happen) and one
    snapshot per customer (sorted by id, at the end) out."""

    run = Replay(engine, on_reject=on_reject, until=now, changes_out=changes_out, currency=currency)
    with no_cyclic_gc():
        run.feed(lines)
        summary = run.finish(now)
    if summary.now is not None:
        zone = engine.rulebook.zone
        for customer_id in sorted(run.states):
            out.write(orjson.dumps(customer_snapshot(run.states[customer_id], summary.now, zone)) + b"\n")
    return run


@contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector over work that makes no reference cycles: a replay folding
    (it builds every customer's state, a few KiB of objects each), so the collector's full passes over
    that growing heap find nothing; a benchmark pacing sends, whose full passes would stall them.
    Reference counting still frees everything as usual.

    Afterwards the objects made meanwhile go straight to the oldest generation (`freeze` then
    `unfreeze`: two list splices) instead of waiting in the youngest one, where the next allocation
    after re-enabling would have the collector walk all of them. They are collected as usual from
    there. (What each saves: docs/performance.md.)"""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if gc.get_freeze_count() == 0:  # unfreeze would also release what the process froze itself
            gc.freeze()
            gc.unfreeze()
        if enabled:
            gc.enable()


def customer_snapshot(state: CustomerState, now: datetime, zone: DayZone = UTC_ZONE) -> dict[str, Any]:
    """The replay output line for one customer: current tags and the aggregates behind them (days
    since an order in the shop's local days, as the rules read them)."""
    agg = state.agg
    now_us = to_us(now)

    def days_since(moment: int | None) -> int | None:
        return None if moment is None else zone.days_between(moment, now_us)

    def instant(moment: int | None) -> str | None:
        return None if moment is None else from_us(moment).isoformat().replace("+00:00", "Z")

    return {
        "customer_id": state.customer_id,
        "tags": state.tag_ids(),
        "aggregates": {
            "order_count": agg.order_count,
            "total_spent": str(agg.total_spent),
            "avg_order_value": str(agg.avg_order_value),
            "points_total": agg.points_total,
            "first_order_at": instant(agg.first_order_us),
            "last_order_at": instant(agg.last_order_us),
            "days_since_first_order": days_since(agg.first_order_us),
            "days_since_last_order": days_since(agg.last_order_us),
            "last_seen_at": instant(agg.last_seen_us),
            "products_bought": sorted(agg.products),
            "browse_count": sum(agg.browse.values()),
            "click_count": sum(agg.click.values()),
        },
    }
