"""When time alone changes what a customer's conditions see, and which groups that touches.

Two kinds of metric move while no event arrives:
- relative windows (`browse_count` over the last 7 days): a count changes only at a day boundary
  where one of the customer's day buckets leaves the window, or a future-dated bucket enters it;
- days since the first / last order: a whole number that only matters when it reaches one of the
  values the rules compare it with;
- absolute windows whose condition waits for the window's end (`conditions.upper_bounding`): at
  that instant the condition may start to hold, for every customer alike;
- cycles since the last order (a days-since value compared in cycles: its points are in days) and
  loyalty over the last n periods of t days (`loyalty.py`): a loyalty value changes only at a local
  midnight when an order day crosses a period boundary.
- age: whole years from the birth date, which only matter when they reach a value the rules compare
  them with, on a birthday (profile.py: 1 March for 29 February in common years).

Days are the shop's local days (`EvalContext.zone`): a window or a days-since value moves at local
midnight, which is `zone.start(day)` as an instant (23 or 25 hours apart across a clock change).

For each *family* (what kind of event moves them) the plan gives the next instant anything can change
for a customer, and at that instant the groups whose inputs actually changed. Evaluating at these
instants, and at every event, sees every change of every condition's truth: the engine relies on it
to be exact, not approximately on time.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from schemas.tags import Metric
from services.engine.conditions import CompiledCondition, FixedWindow, change_points
from services.engine.loyalty import PeriodShape, next_period_change, periods_turning
from services.engine.profile import age_on, birth_date, next_age_change
from services.engine.score_plan import ScorePlan
from services.engine.scores import SCORE_TIME, SCORE_WINDOW
from services.engine.windows import ORDERS, SCAN_MAX, WINDOW_KINDS, EvalContext, next_window_change

ORDER_TIME: Final = "order_time"
ORDER_WINDOW: Final = "order_window"
BROWSE_WINDOW: Final = "browse_window"
CLICK_WINDOW: Final = "click_window"
WINDOW_END: Final = "window_end"
LOYALTY: Final = "loyalty"
AGE_TIME: Final = "age"

WINDOW_METRIC: Final = {
    ORDER_WINDOW: Metric.ORDER_COUNT,
    BROWSE_WINDOW: Metric.BROWSE_COUNT,
    CLICK_WINDOW: Metric.CLICK_COUNT,
}
_DAYS_SINCE: Final = (Metric.DAYS_SINCE_LAST_ORDER, Metric.DAYS_SINCE_FIRST_ORDER, Metric.CYCLES_SINCE_LAST_ORDER)
_PERIOD_METRICS: Final = (Metric.LOYALTY, Metric.LOYALTY_TREND)

_bisect_right: Final = bisect_right
"""Compiled, a Final name is a C static, not a module dict lookup per call."""

Fired = tuple[str, tuple[int, ...] | tuple[Metric, ...], bool]
"""What one family changes at one instant: (family, the window spans in days, the days-since metrics
whose value changes, or the absolute window end instant reached; and whether a bucket enters the
windows). Plain hashable data, so the engine can remember what each combination means for
evaluation instead of recomputing it."""


class _Window:
    """One window family, resolved once: which buckets it reads and the spans rules use."""

    def __init__(self, kind: int, spans: tuple[int, ...]) -> None:
        self.kind = kind
        self.spans = spans


class _DaysSince:
    """One days-since metric, resolved once: which order it counts from and the values rules compare
    it with."""

    def __init__(self, metric: Metric, points: tuple[int, ...]) -> None:
        self.metric = metric
        self.last = metric is not Metric.DAYS_SINCE_FIRST_ORDER
        self.points = points

    def since(self, ctx: EvalContext) -> int | None:
        return ctx.agg.last_order_us if self.last else ctx.agg.first_order_us


@dataclass(frozen=True)
class TimePlan:
    spans: Mapping[Metric, tuple[int, ...]]
    """Window metric -> the relative window lengths (days) rules use."""
    window_tags: Mapping[tuple[Metric, int], Readers]
    """(window metric, days) -> the tags whose rules read that window."""
    day_points: Mapping[Metric, tuple[int, ...]]
    """days_since_* -> the values at which some condition on it can change truth."""
    day_tags: Mapping[Metric, Readers]
    ends: tuple[int, ...] = ()
    """The instants (µs, ascending) at which an absolute window some condition waits for ends."""
    end_tags: Mapping[int, Readers] = field(default_factory=dict)
    """End instant -> the tags whose rules wait for a window ending then."""
    end_metrics: Mapping[int, tuple[Metric, ...]] = field(default_factory=dict)
    """End instant -> the window metrics of the conditions waiting for it."""
    period_shapes: tuple[PeriodShape, ...] = ()
    """The (cycle, periods) of the loyalty conditions, in a fixed order (the LOYALTY family's hits
    are indexes into it)."""
    period_tags: Mapping[PeriodShape, Readers] = field(default_factory=dict)
    age_points: tuple[int, ...] = ()
    """The ages at which some `age` condition can change truth."""
    age_tags: Mapping[str, frozenset[str]] = field(default_factory=dict)
    scores: ScorePlan | None = None
    """The scores that time moves (`scores.py`), None when no rule reads one."""
    _windows: Mapping[str, _Window] = field(init=False, repr=False, compare=False)
    _days: tuple[_DaysSince, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The hot paths below look families up by string and never hash a Metric (an Enum's hash is
        # a Python-level function).
        windows = {
            family: _Window(WINDOW_KINDS[metric], self.spans[metric])
            for family, metric in WINDOW_METRIC.items()
            if self.spans.get(metric)
        }
        days = tuple(_DaysSince(metric, points) for metric, points in self.day_points.items())
        object.__setattr__(self, "_windows", windows)
        object.__setattr__(self, "_days", days)

    @classmethod
    def build(cls, conditions: Iterable[tuple[str, str, CompiledCondition]]) -> TimePlan:
        """From (group id, tag id, condition) for the groups that rules run for."""
        spans: dict[Metric, set[int]] = {}
        window_tags: dict[tuple[Metric, int], dict[str, set[str]]] = {}
        day_points: dict[Metric, set[int]] = {}
        day_tags: dict[Metric, dict[str, set[str]]] = {}
        end_tags: dict[int, dict[str, set[str]]] = {}
        end_metrics: dict[int, set[Metric]] = {}
        conditions = list(conditions)
        scores = ScorePlan(conditions)
        period_tags: dict[PeriodShape, dict[str, set[str]]] = {}
        age_points: set[int] = set()
        age_tags: dict[str, set[str]] = {}
        for group_id, tag_id, condition in conditions:
            spec = condition.spec
            span = spec.window.last_days if spec.window is not None else None
            if isinstance(condition, FixedWindow):
                if condition.waits:
                    end_tags.setdefault(condition.end_us, {}).setdefault(group_id, set()).add(tag_id)
                    end_metrics.setdefault(condition.end_us, set()).add(spec.metric)
            elif span is not None:
                spans.setdefault(spec.metric, set()).add(span)
                window_tags.setdefault((spec.metric, span), {}).setdefault(group_id, set()).add(tag_id)
            elif spec.metric in _DAYS_SINCE:
                unit = spec.cycle_days or 1  # a value in cycles reaches v on day v x cycle
                day_points.setdefault(spec.metric, set()).update(point * unit for point in change_points(spec))
                day_tags.setdefault(spec.metric, {}).setdefault(group_id, set()).add(tag_id)
            elif spec.metric in _PERIOD_METRICS:
                cycle, periods = spec.cycle_days, spec.periods
                assert cycle is not None  # both required on these metrics
                assert periods is not None
                shape = (cycle, periods)
                period_tags.setdefault(shape, {}).setdefault(group_id, set()).add(tag_id)
            elif spec.metric is Metric.AGE:
                age_points.update(change_points(spec))
                age_tags.setdefault(group_id, set()).add(tag_id)
        return cls(
            spans={metric: tuple(sorted(values)) for metric, values in spans.items()},
            window_tags={key: _frozen(value) for key, value in window_tags.items()},
            day_points={metric: tuple(sorted(values)) for metric, values in day_points.items()},
            day_tags={metric: _frozen(value) for metric, value in day_tags.items()},
            ends=tuple(sorted(end_tags)),
            end_tags={end: _frozen(value) for end, value in end_tags.items()},
            end_metrics={end: tuple(sorted(metrics)) for end, metrics in end_metrics.items()},
            period_shapes=tuple(sorted(period_tags)),
            period_tags={shape: _frozen(value) for shape, value in period_tags.items()},
            age_points=tuple(sorted(age_points)),
            age_tags=_frozen(age_tags),
            scores=scores if scores.windowed or scores.decaying else None,
        )

    @property
    def families(self) -> tuple[str, ...]:
        found = [family for family, metric in WINDOW_METRIC.items() if metric in self.spans]
        if self.day_points:
            found.append(ORDER_TIME)
        if self.ends:
            found.append(WINDOW_END)
        if self.period_shapes:
            found.append(LOYALTY)
        if self.age_points:
            found.append(AGE_TIME)
        if self.scores is not None:
            found.extend(self.scores.families())
        return tuple(found)

    def next_change(self, family: str, ctx: EvalContext) -> int | None:
        """The first instant after ctx.now_us at which a metric of this family changes (µs), if any."""
        if family == ORDER_TIME:
            return self._next_day_point(ctx)
        if family == SCORE_TIME:
            return self.scores.next_flip(ctx) if self.scores is not None else None
        if family == SCORE_WINDOW:
            return self.scores.next_window_change(ctx) if self.scores is not None else None
        if family == WINDOW_END:
            ends = self.ends
            index = _bisect_right(ends, ctx.now_us)
            return ends[index] if index < len(ends) else None
        if family == LOYALTY:
            return _day_start(ctx, next_period_change(ctx.buckets(ORDERS), ctx.today, self.period_shapes))
        if family == AGE_TIME:
            born = birth_date(ctx.agg.profile)
            return None if born is None else _day_start(ctx, next_age_change(born, ctx.today, self.age_points))
        window = self._windows.get(family)
        if window is None:
            return None
        today = ctx.today
        present = ctx.buckets(window.kind)
        if len(present) <= SCAN_MAX:
            return _day_start(ctx, next_window_change(present, today, window.spans))
        days = ctx.series(window.kind).days
        entering = _bisect_right(days, today)
        best = days[entering] if entering < len(days) else None
        for span in window.spans:
            oldest = _bisect_right(days, today - span)
            if oldest < len(days):
                leaves = days[oldest] + span
                if best is None or leaves < best:
                    best = leaves
        return _day_start(ctx, best)

    def next_change_for_day(self, family: str, day: int, ctx: EvalContext) -> int | None:
        """`next_change` of a window family as far as the customer's bucket of `day` alone goes: a
        family's next change is the earliest of its buckets' own."""
        window = self._windows.get(family)
        if window is None:
            return None
        # rare: a customer's first event of a day
        return _day_start(ctx, next_window_change({day: 1}, ctx.today, window.spans))

    def fired(self, family: str, ctx: EvalContext) -> Fired | None:
        """What of this family changes exactly at ctx.now_us (None: nothing)."""
        now_us = ctx.now_us
        if family == WINDOW_END:
            return (family, (now_us,), False) if now_us in self.end_tags else None
        if family == SCORE_TIME:
            return self.scores.decay_fired() if self.scores is not None else None
        if family == SCORE_WINDOW:
            return self.scores.window_fired(ctx) if self.scores is not None else None
        midnight = ctx.zone.start(ctx.today) == now_us
        if family == AGE_TIME:
            born = birth_date(ctx.agg.profile)
            if not midnight or born is None or age_on(born, ctx.today) == age_on(born, ctx.today - 1):
                return None
            return (family, (Metric.AGE,), False) if age_on(born, ctx.today) in self.age_points else None
        if family == ORDER_TIME:
            metrics = []
            if midnight:
                for days_since in self._days:
                    since = days_since.since(ctx)
                    if since is None or since > now_us:
                        continue
                    if ctx.zone.days_between(since, now_us) in days_since.points:
                        metrics.append(days_since.metric)
            return (family, tuple(metrics), False) if metrics else None
        if family == LOYALTY:
            hits = periods_turning(ctx.buckets(ORDERS), ctx.today, self.period_shapes) if midnight else ()
            return (family, hits, False) if hits else None
        window = self._windows.get(family)
        if window is None or not midnight:
            return None
        # A window's count changes at midnight only if a bucket enters it (today's, when events were
        # dated ahead of the customer's clock) or leaves it (the day `span` days back). The bucket
        # dict answers both without building the sorted series.
        present = ctx.buckets(window.kind)
        today = ctx.today
        entering = today in present
        spans = tuple(span for span in window.spans if entering or today - span in present)
        return (family, spans, entering) if spans else None

    def effect(self, fired: Iterable[Fired]) -> tuple[dict[str, set[str]], dict[Metric, int]]:
        """The tags (by group) whose inputs change, and how each moved metric moves: -1 only down (a
        window that only loses a day), +1 only up (days since an order), 0 either way."""
        touched: dict[str, set[str]] = {}
        moves: dict[Metric, int] = {}
        for family, hits, entering in fired:
            if family == AGE_TIME:
                _merge(touched, self.age_tags)
                _move(moves, Metric.AGE, 1)
                continue
            if family == ORDER_TIME:
                for metric in hits:
                    assert isinstance(metric, Metric)
                    _merge(touched, self.day_tags[metric])
                    _move(moves, metric, 1)
                continue
            if family == SCORE_TIME:
                assert self.scores is not None
                _merge(touched, self.scores.decay_readers)
                _move(moves, Metric.SCORE, 0)  # a decaying score moves towards 0, from either side
                continue
            if family == SCORE_WINDOW:
                assert self.scores is not None
                for slot in hits:
                    assert isinstance(slot, int)
                    _merge(touched, self.scores.slot_readers[slot])
                _move(moves, Metric.SCORE, 0)  # points may be negative: a day leaving moves either way
                continue
            if family == WINDOW_END:
                for end in hits:
                    assert isinstance(end, int)
                    _merge(touched, self.end_tags[end])
                    for metric in self.end_metrics[end]:
                        _move(moves, metric, 0)  # the count stays; what it may decide changes
                continue
            if family == LOYALTY:
                for index in hits:
                    assert isinstance(index, int)
                    _merge(touched, self.period_tags[self.period_shapes[index]])
                for metric in _PERIOD_METRICS:
                    _move(moves, metric, 0)  # a period gained or lost: either way
                continue
            metric = WINDOW_METRIC[family]
            for span in hits:
                assert isinstance(span, int)
                _merge(touched, self.window_tags[(metric, span)])
            _move(moves, metric, 0 if entering else -1)
        return touched, moves

    def _next_day_point(self, ctx: EvalContext) -> int | None:
        best = None
        zone = ctx.zone
        for days_since in self._days:
            since = days_since.since(ctx)
            if since is None:
                continue  # only an order makes the metric present
            since_day = zone.day(since)
            points = days_since.points
            index = _bisect_right(points, max(0, ctx.today - since_day))
            if index < len(points):
                at = zone.start(since_day + points[index])
                if best is None or at < best:
                    best = at
        return best


def _day_start(ctx: EvalContext, day: int | None) -> int | None:
    return None if day is None else ctx.zone.start(day)


def _move(moves: dict[Metric, int], metric: Metric, direction: int) -> None:
    """Record how a metric moves; two different directions at one instant make it move either way."""
    before = moves.get(metric)
    moves[metric] = direction if before is None or before == direction else 0


Readers = Mapping[str, frozenset[str]]
"""Group id -> ids of its tags that read a given input."""


def _frozen(readers: dict[str, set[str]]) -> Readers:
    return {group: frozenset(tags) for group, tags in readers.items()}


def _merge(into: dict[str, set[str]], readers: Readers) -> None:
    for group, tags in readers.items():
        into.setdefault(group, set()).update(tags)
