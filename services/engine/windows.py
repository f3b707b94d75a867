"""Window counting: a customer's day buckets counted over the rules' windows, once per evaluation.

Relative windows (the last N days) of one metric are all counted in one pass over its buckets, and
the counts are kept on the customer's aggregates for the day (the fold keeps them in step): an
evaluation reading one window of a kind usually reads its others too, and a customer's events come
in sessions. Absolute windows are counted by a scan of the bucket dict when it is small (most
customers), else through sorted days and prefix sums built at most once per evaluation and dropped
after it: kept between evaluations they would cost memory per customer for no measurable gain.

`EvalContext` is one customer at one instant, as conditions read it: its aggregates, tags, "now",
the shop's day of "now", and the window counts and series of this evaluation.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Final

from schemas.tags import Metric
from services.engine.aggregates import Aggregates, Windows
from services.engine.state import Held
from services.engine.zone import UTC_ZONE, DayZone

_bisect_left: Final = bisect_left
_bisect_right: Final = bisect_right
"""The bisect functions under Final names: compiled, a Final name is a C static, where an imported
name is looked up in the module's dict on every call (a window count makes two)."""

ORDERS: Final = 0
BROWSES: Final = 1
CLICKS: Final = 2
"""The window metrics' day buckets, as small ints (what `EvalContext.series` takes)."""
WINDOW_KINDS: Final[dict[Metric, int]] = {
    Metric.ORDER_COUNT: ORDERS,
    Metric.BROWSE_COUNT: BROWSES,
    Metric.CLICK_COUNT: CLICKS,
}


class Series:
    """A customer's buckets for one window metric: sorted days and prefix sums (prefix[i] = events
    before days[i]). A class rather than a tuple: compiled, a tuple would be unboxed and boxed again
    on every read, and this is read many times per evaluation."""

    __slots__ = ("days", "prefix")

    def __init__(self, days: list[int], prefix: list[int]) -> None:
        self.days = days
        self.prefix = prefix

    def count(self, first_day: int, last_day: int) -> int:
        """Events in days [first_day, last_day], both inclusive."""
        days = self.days
        if len(days) == 1:  # most customers have one day of a kind: no search
            return self.prefix[1] if first_day <= days[0] <= last_day else 0
        return self.prefix[_bisect_right(days, last_day)] - self.prefix[_bisect_left(days, first_day)]


def _build_series(found: dict[int, int]) -> Series:
    if len(found) > 1:
        days = sorted(found)
        prefix = [0]
        total = 0
        for day in days:  # a loop: for a few days cheaper than accumulate(map(...)), compiled or not
            total += found[day]
            prefix.append(total)
        return Series(days, prefix)
    if found:  # most customers have one day of a kind, or none: no sort
        for day, count in found.items():
            return Series([day], [0, count])
    return _NO_SERIES


SCAN_MAX: Final = 16
"""Up to this many day buckets, windows are counted (and their next change found) by scanning the
bucket dict rather than through a sorted series: a scan of a few entries costs less than the sort,
the prefix sums and their allocations, rebuilt per evaluation. Larger values gain little compiled
and make the scans of heavy customers long in pure Python (docs/performance.md)."""

_NO_SERIES: Final = Series([], [0])
"""The series of no buckets, shared: series are only ever read."""


class EvalContext:
    """One customer at one instant. Window counts and series are cached for the duration of one
    evaluation. `today` is the shop's local day of `now_us` (`zone`)."""

    __slots__ = ("_browses", "_clicks", "_orders", "agg", "now_us", "tags", "today", "zone")

    def __init__(self, agg: Aggregates, tags: Held, now_us: int, zone: DayZone = UTC_ZONE) -> None:
        self.agg = agg
        self.tags = tags
        self.now_us = now_us
        self.zone = zone
        self.today = zone.day(now_us)
        self._orders: Series | None = None
        self._browses: Series | None = None
        self._clicks: Series | None = None

    def buckets(self, kind: int) -> dict[int, int]:
        """The customer's day buckets for one window metric (day -> count, every count >= 1); order
        buckets are derived from the orders, once per evaluation."""
        if kind == BROWSES:
            return self.agg.browse
        if kind == CLICKS:
            return self.agg.click
        return self.agg.order_days(self.zone)

    def windows(self, kind: int, spans: tuple[int, ...]) -> list[int]:
        """Events of one window metric in each of the last `spans[i]` days (today included; `spans`
        ascending), all counted in one pass over the day buckets. Kept on the customer's aggregates
        for the day (the fold keeps them in step): an evaluation reading one window of a kind
        usually reads its others too (rules share one `spans` tuple per kind), and a customer's
        events come in sessions."""
        agg = self.agg
        if kind == BROWSES:
            found = agg.browse_windows
        elif kind == CLICKS:
            found = agg.click_windows
        else:
            found = agg.order_windows
        today = self.today
        if found is not None and found.spans is spans and found.today == today:
            return found.counts
        found = Windows(spans, today, [0] * len(spans))
        for day, events in self.buckets(kind).items():
            found.count_in(day, events)
        if kind == BROWSES:
            agg.browse_windows = found
        elif kind == CLICKS:
            agg.click_windows = found
        else:
            agg.order_windows = found
        return found.counts

    def count(self, kind: int, first_day: int, last_day: int) -> int:
        """Events of one window metric in days [first_day, last_day], both inclusive. A customer with
        few day buckets of the kind (most of them) is answered by a scan of the bucket dict: cheaper
        than sorting the days and summing prefixes for the two or three windows an evaluation reads."""
        found = self.buckets(kind)
        if len(found) > SCAN_MAX:
            return self.series(kind).count(first_day, last_day)
        total = 0
        for day, events in found.items():
            if first_day <= day <= last_day:
                total += events
        return total

    def series(self, kind: int) -> Series:
        """The series of one window metric (ORDERS, BROWSES or CLICKS), built at most once per
        evaluation."""
        if kind == BROWSES:
            found = self._browses
            if found is None:
                found = self._browses = _build_series(self.agg.browse)
        elif kind == CLICKS:
            found = self._clicks
            if found is None:
                found = self._clicks = _build_series(self.agg.click)
        else:
            found = self._orders
            if found is None:
                found = self._orders = _build_series(self.buckets(ORDERS))
        return found


def series(ctx: EvalContext, metric: Metric) -> Series:
    """The series of one window metric, built at most once per evaluation."""
    return ctx.series(WINDOW_KINDS[metric])


def next_window_change(present: dict[int, int], today: int, spans: tuple[int, ...]) -> int | None:
    """The local day at which a window family next changes, from a few buckets, without sorting them:
    the first of a future bucket's day (it enters every window) and, for a bucket in the past, the day
    it leaves the shortest window that still holds it (`spans` ascending). The same minimum as the
    series path's first future day and first bucket leaving each window."""
    found = False
    best = 0
    for day in present:
        if day > today:
            at = day
        else:
            for span in spans:
                if day + span > today:
                    at = day + span
                    break
            else:
                continue  # out of every window already: it changes nothing any more
        if not found or at < best:
            best = at
            found = True
    return best if found else None
