"""Metrics counted in the shop's consumption cycle: loyalty, its trend, and cycles between orders.

The loyalty model (Reichheld & Sasser: a consumption cycle t, n periods, the purchases in them),
made concrete (docs/tagger.md "Loyalty and customer status"):

- the last n periods of t local days, counted back from today: period 0 is days
  [today - t + 1, today], period i is [today - (i + 1)t + 1, today - i·t];
- a period is *bought* when the customer has a counted order (paid, not fully refunded: the fold's
  order rule, `Aggregates.order_days`) on one of its days;
- `loyalty` = 100 · k // n, k the bought periods (an integer percent, rounded down);
- `loyalty_trend` = bought periods among the newest n // 2 minus among the oldest n // 2 (the middle
  period of an odd n counts for neither): above 0 the customer buys more often lately.

Two more metrics express recency in cycles, for the customer status model:
- `cycles_since_last_order` = days since the last order // t (absent before the first order);
- `cycles_between_last_orders` = (day of the last order - the latest earlier day with an order) // t
  (absent with fewer than two order days): how long the customer had been away before the last
  order, which is what makes a recent buyer "returned". Both read orders as `days_since_last_order`
  does: a refund does not undo a visit.

Only the orders already kept are read: no state of its own. The periods slide with the days, so a
loyalty value changes only at a local midnight when one of the order days crosses a period boundary
(or a future-dated one becomes today): `next_period_change` says when, `periods_turning` whether
today is such a day (the time plan's LOYALTY family).
"""

from __future__ import annotations

from typing import Any, Final

from schemas.tags import Condition, Metric
from services.engine.comparisons import Comparison, comparison_for
from services.engine.conditions import CompiledCondition
from services.engine.windows import EvalContext

PeriodShape = tuple[int, int]
"""(cycle days, periods) of a loyalty condition."""


def bought_periods(days: dict[int, int], today: int, cycle: int, periods: int) -> list[bool]:
    """Per period, newest first, whether an order day lies in it. Days after today lie in none yet."""
    bought = [False] * periods
    span = cycle * periods
    for day in days:
        age = today - day
        if 0 <= age < span:
            bought[age // cycle] = True
    return bought


def loyalty_share(days: dict[int, int], today: int, cycle: int, periods: int) -> int:
    bought = bought_periods(days, today, cycle, periods)
    return 100 * bought.count(True) // periods


def loyalty_trend(days: dict[int, int], today: int, cycle: int, periods: int) -> int:
    bought = bought_periods(days, today, cycle, periods)
    half = periods // 2
    return bought[:half].count(True) - bought[periods - half :].count(True)


def order_gap_days(ctx: EvalContext) -> int | None:
    """Local days between the last order's day and the latest earlier day with an order (None with
    fewer than two order days). Every paid order, refunded or not, like `last_order_us`."""
    zone = ctx.zone
    last = _NO_DAY
    before = _NO_DAY
    for order in ctx.agg.orders.values():
        paid_us = order.paid_us
        if paid_us is None:
            continue
        day = zone.day(paid_us)
        if day > last:
            before = last
            last = day
        elif before < day < last:
            before = day
    return last - before if before != _NO_DAY else None


_NO_DAY: Final = -(1 << 40)
"""Before every local day an instant can fall on (instants start in 1970): "no day yet"."""


def next_period_change(days: dict[int, int], today: int, shapes: tuple[PeriodShape, ...]) -> int | None:
    """The first local day after `today` on which an order day moves to another period, leaves the
    last one, or (dated ahead) enters the first: the only days a loyalty value can change on."""
    found = False
    best = 0
    for day in days:
        for cycle, periods in shapes:
            if day > today:
                at = day
            else:
                age = today - day
                if age >= cycle * periods:
                    continue  # out of every period for good
                at = day + (age // cycle + 1) * cycle
            if not found or at < best:
                best = at
                found = True
    return best if found else None


def periods_turning(days: dict[int, int], today: int, shapes: tuple[PeriodShape, ...]) -> tuple[int, ...]:
    """The indexes of the shapes whose periods some order day enters, crosses or leaves today."""
    hits = []
    for index, (cycle, periods) in enumerate(shapes):
        for day in days:
            age = today - day
            if age == 0 or (0 < age <= cycle * periods and age % cycle == 0):
                hits.append(index)
                break
    return tuple(hits)


def compile_cycle_condition(spec: Condition) -> CompiledCondition:
    """A condition on one of this module's metrics (`schemas.tags.CYCLE_METRICS`)."""
    cycle = spec.cycle_days
    assert cycle is not None  # the schema requires it on these metrics
    comparison = comparison_for(spec.op, spec.value)
    if spec.metric is Metric.CYCLES_SINCE_LAST_ORDER:
        return _CyclesSinceLastOrder(spec, comparison, cycle, 0)
    if spec.metric is Metric.CYCLES_BETWEEN_LAST_ORDERS:
        return _CyclesBetweenLastOrders(spec, comparison, cycle, 0)
    assert spec.periods is not None
    if spec.metric is Metric.LOYALTY:
        return LoyaltyCondition(spec, comparison, cycle, spec.periods)
    return LoyaltyTrendCondition(spec, comparison, cycle, spec.periods)


class CycleCondition(CompiledCondition):
    """A whole-number metric counted in cycles of `cycle` local days."""

    def __init__(self, spec: Condition, comparison: Comparison, cycle: int, periods: int) -> None:
        super().__init__(spec)
        self.comparison = comparison
        self.cycle = cycle
        self.periods = periods

    def test(self, observed: Any) -> bool:
        return self.comparison.holds_int(observed)

    def value(self, ctx: EvalContext) -> int | None:
        raise NotImplementedError

    def read(self, ctx: EvalContext) -> int | None:
        return self.value(ctx)

    def matches(self, ctx: EvalContext) -> bool:
        found = self.value(ctx)
        return found is not None and self.comparison.holds_int(found)


class LoyaltyCondition(CycleCondition):
    """Never absent: a customer without an order in the periods has loyalty 0."""

    def value(self, ctx: EvalContext) -> int | None:
        return loyalty_share(ctx.agg.order_days(ctx.zone), ctx.today, self.cycle, self.periods)


class LoyaltyTrendCondition(CycleCondition):
    def value(self, ctx: EvalContext) -> int | None:
        return loyalty_trend(ctx.agg.order_days(ctx.zone), ctx.today, self.cycle, self.periods)


class _CyclesSinceLastOrder(CycleCondition):
    def value(self, ctx: EvalContext) -> int | None:
        since = ctx.agg.last_order_us
        if since is None:
            return None
        return ctx.zone.days_between(since, ctx.now_us) // self.cycle


class _CyclesBetweenLastOrders(CycleCondition):
    def value(self, ctx: EvalContext) -> int | None:
        gap = order_gap_days(ctx)
        return None if gap is None else gap // self.cycle
