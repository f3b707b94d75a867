"""Per-customer aggregates as a fold over that customer's events.

`initial()` gives the empty state and `apply(state, event)` folds one event into it. The result depends
only on the *set* of distinct events (not their order, batching or duplicates), which is what lets the
tagger restart, rebalance and replay freely. `apply` updates the state in place and returns it: the
per-event cost matters more here than immutability, and every caller owns the state it passes in.

Business rules (Youzan-style CRM):
- `order_count` counts paid orders that are not fully refunded; `total_spent` is paid minus refunded;
  `points_total` counts points of orders that still count. An order paid at 0 (covered by a coupon or
  points) counts like any other; refunds carry an amount above 0, so any refund of a 0 order refunds
  it fully and it stops counting.
- `first_order_at` / `last_order_at` and `bought_any` ignore refunds: a refund does not undo a visit.
- A refund that arrives before its order is kept and applied when the order arrives.
- browse / click counts are kept as daily buckets for `horizon_days`, pruned relative to the latest
  event the customer has, so pruning too is independent of arrival order. A bucket's day is the
  shop's local day (`DayZone.day`, an epoch day in the shop's calendar): stored buckets keep the days
  they were folded into, so changing the shop's zone later moves no stored browse or click.
- Every browse / click counted is remembered (a 64-bit digest of its event id, under its day)
  for as long as its day bucket is kept, so a resent event never counts twice, however late. A day
  counts at most DAY_CAP browses and DAY_CAP clicks per customer: what bounds that memory (a resend
  of a capped event finds the day full and changes nothing either).
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from schemas.events import Browse, Click, OrderPaid, OrderRefunded, ProfileUpdated, SourceAttributed
from services.engine.profile import ProfileState
from services.engine.timeutil import to_us
from services.engine.zone import UTC_ZONE, DayZone

if TYPE_CHECKING:
    from services.engine.score_state import ScoreState

CustomerEvent = OrderPaid | OrderRefunded | Browse | Click | ProfileUpdated | SourceAttributed

DEFAULT_HORIZON_DAYS: Final = 400
DAY_CAP: Final = 1000
"""Browses (and, apart, clicks) a customer's day counts at most; each counted one is remembered for
de-duplication (8 bytes) while its day is kept. Orders and refunds are de-duplicated exactly (by
order id and refund event id), whatever their age."""
EVENT_DIGEST_BYTES: Final = 8

_DIGEST_SEED: Final = hashlib.blake2b(digest_size=EVENT_DIGEST_BYTES)
"""Never updated itself: `event_digest` copies it."""

_ZERO: Final = Decimal(0)


class Windows:
    """One window metric's event counts over every relative window the rules use, for one customer
    on one day: `counts[i]` events in the last `spans[i]` days up to `today`, today included."""

    __slots__ = ("counts", "spans", "today")

    def __init__(self, spans: tuple[int, ...], today: int, counts: list[int]) -> None:
        self.spans = spans
        self.today = today
        self.counts = counts

    def count_in(self, day: int, events: int = 1) -> None:
        """`events` more on `day`: every window that holds the day counts them (how the counts are
        built from the buckets, and kept in step with them by the fold)."""
        age = self.today - day
        if age < 0:
            return  # dated ahead of `today`: in no window yet
        spans = self.spans
        counts = self.counts
        index = len(spans) - 1
        while index >= 0 and spans[index] > age:  # spans ascending: the longest ones hold it
            counts[index] += events
            index -= 1


class OrderRecord:
    """What one order contributes. `paid_us` is None while only a refund has been seen."""

    __slots__ = ("paid", "paid_us", "points", "refund_ids", "refunded")

    def __init__(
        self,
        paid: Decimal | None = None,
        paid_us: int | None = None,
        points: int = 0,
        refunded: Decimal = _ZERO,
        refund_ids: list[str] | None = None,
    ) -> None:
        self.paid = paid
        self.paid_us = paid_us
        self.points = points
        self.refunded = refunded
        self.refund_ids = refund_ids

    @property
    def counts(self) -> bool:
        # `not refunded`: an order paid at 0 counts until a refund (always > 0) refunds it fully
        return self.paid is not None and (not self.refunded or self.refunded < self.paid)

    @property
    def spent(self) -> Decimal:
        if self.paid is None or self.refunded >= self.paid:
            return _ZERO
        return self.paid - self.refunded


class Aggregates:
    __slots__ = (
        "browse",
        "browse_windows",
        "click",
        "click_windows",
        "first_order_us",
        "last_order_us",
        "last_seen_us",
        "max_day",
        "order_count",
        "order_day_counts",
        "order_windows",
        "orders",
        "points_total",
        "products",
        "profile",
        "scores",
        "seen",
        "total_spent",
    )

    def __init__(self) -> None:
        self.order_count = 0
        self.total_spent = _ZERO
        self.points_total = 0
        self.first_order_us: int | None = None
        self.last_order_us: int | None = None
        self.last_seen_us: int | None = None
        self.max_day: int | None = None
        self.products: set[str] = set()
        self.orders: dict[str, OrderRecord] = {}
        self.browse: dict[int, int] = {}
        self.click: dict[int, int] = {}
        self.seen: dict[int, bytearray] = {}
        """Day -> the event digests of the browses and clicks counted on that day, EVENT_DIGEST_BYTES
        each, in one flat buffer (a membership test is a byte search, not a comparison of Python
        ints). A resent event has the same date, so only its day is searched; pruned with the buckets."""
        self.order_day_counts: dict[int, int] | None = None
        """`order_days()`, kept up to date by the fold once first asked for (never stored: derived)."""
        self.browse_windows: Windows | None = None
        self.click_windows: Windows | None = None
        self.profile: ProfileState | None = None
        """Profile attributes and sources (profile.py); None for customers without any, most of them."""
        self.order_windows: Windows | None = None
        """The latest relative window counts evaluation asked for (`EvalContext.windows`), kept in
        step by the fold (browses and clicks) or dropped when they change (orders, pruning): a
        customer's events come in sessions, evaluated on the same day. Never stored: derived."""
        self.scores: ScoreState | None = None
        """The customer's behaviour scores (`score_state.ScoreState`), kept by the engine's fold when the
        definitions have scores; None otherwise (most shops, and every state stored before them)."""

    @property
    def avg_order_value(self) -> Decimal:
        if self.order_count == 0:
            return _ZERO
        return (self.total_spent / self.order_count).quantize(Decimal("0.0001"))

    def order_days(self, zone: DayZone) -> dict[int, int]:
        """Counted orders per (local) day of payment: the buckets behind windowed order counts. Built
        from the orders once, then moved by the fold as orders start or stop counting (evaluations
        read it far more often than orders change). Read only: callers must not change it. Derived
        from the orders' instants, so unlike browse and click buckets they follow the zone given."""
        days = self.order_day_counts
        if days is None:
            days = self.order_day_counts = {}
            for order in self.orders.values():
                paid = order.paid
                refunded = order.refunded
                if paid is not None and (not refunded or refunded < paid) and order.paid_us is not None:  # counts
                    day = zone.day(order.paid_us)
                    days[day] = days.get(day, 0) + 1
        return days


def initial() -> Aggregates:
    return Aggregates()


def apply(
    state: Aggregates,
    event: CustomerEvent,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
    zone: DayZone = UTC_ZONE,
    keep: frozenset[str] | None = None,
) -> Aggregates:
    """Fold one event into `state` (in place) and return it; days are `zone`'s local days, and only
    the profile attributes in `keep` are kept (all when None)."""
    fold(state, event, horizon_days, None, zone, keep)
    return state


def fold(
    state: Aggregates,
    event: CustomerEvent,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
    occurred_us: int | None = None,
    zone: DayZone = UTC_ZONE,
    keep: frozenset[str] | None = None,
) -> bool:
    """Fold one event; False when it was a duplicate and changed nothing. `occurred_us` is the
    event's `occurred_at` in epoch microseconds when the caller has already converted it; `keep`
    the profile attributes to store (the rules' `RuleBook.attributes`; None: all)."""
    at = to_us(event.occurred_at) if occurred_us is None else occurred_us
    if isinstance(event, Browse) or isinstance(event, Click):  # noqa: SIM101 - compiled, `A | B` is built per call
        applied = _fold_activity(state, event, at, horizon_days, zone)
    elif isinstance(event, OrderPaid):
        applied = _fold_paid(state, event, at, zone)
    elif isinstance(event, OrderRefunded):
        applied = _fold_refund(state, event, zone)
    else:
        applied = _fold_profile(state, event, at, keep)
    if applied and (state.last_seen_us is None or at > state.last_seen_us):
        state.last_seen_us = at
    return applied


def event_digest(event_id: str) -> bytes:
    """A stable 64-bit digest (Python's hash() is salted per process, so it cannot be persisted):
    blake2b with an 8-byte digest, from a copy of a hasher set up once rather than a new one per
    event (a keyword call that parses a dozen parameters)."""
    hasher = _DIGEST_SEED.copy()
    hasher.update(event_id.encode())
    return hasher.digest()


def _seen(prints: bytearray, print_: bytes) -> bool:
    """Whether `print_` is one of the digests in `prints` (a match must start on a boundary)."""
    at = prints.find(print_)  # not `in`: with bytes on the left it first fails to read an int (an exception)
    while at >= 0:
        if at % EVENT_DIGEST_BYTES == 0:
            return True
        at = prints.find(print_, at + 1)
    return False


def _fold_activity(state: Aggregates, event: Browse | Click, at: int, horizon_days: int, zone: DayZone) -> bool:
    day = zone.day(at)
    print_ = event_digest(event.event_id)
    prints = state.seen.get(day)
    if prints is not None and _seen(prints, print_):
        return False
    if state.max_day is None or day > state.max_day:
        state.max_day = day
        _prune(state, day - horizon_days + 1)
    if day <= state.max_day - horizon_days:
        return True  # older than anything a window may look at: seen, not counted (nor remembered)
    if isinstance(event, Browse):
        buckets = state.browse
        windows = state.browse_windows
    else:
        buckets = state.click
        windows = state.click_windows
    counted = buckets.get(day, 0)
    if counted >= DAY_CAP:
        return True  # the day is full: seen, not counted, and a resend finds it full again
    buckets[day] = counted + 1
    if prints is None:
        state.seen[day] = bytearray(print_)
    else:
        prints += print_
    if windows is not None:
        windows.count_in(day)
    return True


def _fold_paid(state: Aggregates, event: OrderPaid, at: int, zone: DayZone) -> bool:
    order = state.orders.get(event.order_id)
    if order is None:
        order = state.orders[event.order_id] = OrderRecord()
    elif order.paid is not None:
        return False  # an order is paid once; a re-sent payment is a duplicate
    before_counts, before_spent = order.counts, order.spent
    order.paid = event.amount
    order.paid_us = at
    order.points = event.points_earned
    _account(state, order, before_counts, before_spent, zone)
    if state.first_order_us is None or at < state.first_order_us:
        state.first_order_us = at
    if state.last_order_us is None or at > state.last_order_us:
        state.last_order_us = at
    for item in event.items:
        state.products.add(item.product_id)
    day = zone.day(at)
    if state.max_day is None or day > state.max_day:
        state.max_day = day
    return True


def _fold_refund(state: Aggregates, event: OrderRefunded, zone: DayZone) -> bool:
    order = state.orders.get(event.order_id)
    if order is None:
        order = state.orders[event.order_id] = OrderRecord()
    if order.refund_ids is None:
        order.refund_ids = []
    elif event.event_id in order.refund_ids:
        return False
    order.refund_ids.append(event.event_id)
    before_counts, before_spent = order.counts, order.spent
    order.refunded += event.amount
    _account(state, order, before_counts, before_spent, zone)
    return True


def _account(state: Aggregates, order: OrderRecord, before_counts: bool, before_spent: Decimal, zone: DayZone) -> None:
    """Move the totals by the difference between an order's old and new contribution."""
    after_counts = order.counts
    if after_counts != before_counts:
        state.order_count += 1 if after_counts else -1
        state.points_total += order.points if after_counts else -order.points
        state.order_windows = None
        days = state.order_day_counts
        if days is not None and order.paid_us is not None:  # an order counts only once paid
            day = zone.day(order.paid_us)
            left = days.get(day, 0) + (1 if after_counts else -1)
            if left:
                days[day] = left
            else:
                del days[day]
    state.total_spent += order.spent - before_spent


def _fold_profile(
    state: Aggregates, event: ProfileUpdated | SourceAttributed, at: int, keep: frozenset[str] | None
) -> bool:
    profile = state.profile
    if profile is None:
        profile = ProfileState()
    applied = profile.update(event, at, keep) if isinstance(event, ProfileUpdated) else profile.touch(event, at)
    if state.profile is None and not profile.empty:  # an update of attributes no rule reads leaves None
        state.profile = profile
    return applied


def _prune(state: Aggregates, first_kept_day: int) -> None:
    for buckets in (state.browse, state.click):
        stale = [day for day in buckets if day < first_kept_day]
        for day in stale:
            del buckets[day]
        if stale:  # out of every window as of the latest event, but maybe not as of a cached day
            state.browse_windows = state.click_windows = None
    seen = state.seen
    for day in [day for day in seen if day < first_kept_day]:
        del seen[day]
