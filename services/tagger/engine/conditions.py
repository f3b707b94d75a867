"""Compiled conditions and rules: read a metric, test it, explain it, and tell when it may next flip.

Conditions are compiled once per definition change into closures, so that evaluating one costs a
couple of attribute reads and a comparison. An absent metric (days since the last order of a customer
who never ordered) makes every condition on it false, whatever the operator.

Window counts are answered from each customer's day buckets through sorted days and prefix sums,
built at most once per evaluation (`EvalContext.cache`), so many windows over the same buckets cost a
binary search each; the counts themselves are cached the same way. (Keeping series between
evaluations was measured: no gain worth ~1 KiB more memory per customer.)

Evaluation is the engine's hot loop (tens of condition tests per event), so `matches` is built to
cost as few Python frames as possible: scalar metrics are read with C-level `attrgetter`s, tests are
C-level `partial`s of `operator` functions where the operator allows it, a relative window reads its
cached count inline, and cache keys are plain strings (an Enum's `__hash__` is a Python function).
"""

from __future__ import annotations

import operator
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from itertools import accumulate
from operator import attrgetter
from typing import Any

from schemas.tags import Condition, Metric, Op, Rule
from services.tagger.engine.aggregates import Aggregates
from services.tagger.engine.changes import Outcome
from services.tagger.engine.timeutil import DAY_US, date_to_day

Held = dict[str, dict[str, tuple[bool, int | None]]]
"""A customer's tags: group id -> tag id -> (given by hand, expires at µs or None)."""

Matcher = Callable[["EvalContext"], bool]


class EvalContext:
    """One customer at one instant. Window counts are cached for the duration of one evaluation."""

    __slots__ = ("agg", "cache", "now_us", "tags", "today")

    def __init__(self, agg: Aggregates, tags: Held, now_us: int) -> None:
        self.agg = agg
        self.tags = tags
        self.now_us = now_us
        self.today = now_us // DAY_US
        self.cache: dict[object, Any] = {}


@dataclass(frozen=True, slots=True, eq=False)
class CompiledCondition:
    spec: Condition
    read: Callable[[EvalContext], Any]
    test: Callable[[Any], bool]
    matches: Matcher
    plain: bool = field(init=False)
    """Whether the observed value is shown as read (numbers), not narrowed to the listed items."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "plain", self.spec.metric not in (Metric.BOUGHT_ANY, Metric.HAS_TAG))

    def outcome(self, ctx: EvalContext) -> Outcome:
        """The condition with what the customer had: products bought and tags held show only the
        listed ones the customer has."""
        observed = self.read(ctx)
        matched = observed is not None and self.test(observed)
        if self.plain:
            return (self.spec, observed, matched)
        if self.spec.metric is Metric.BOUGHT_ANY:
            observed = sorted(_listed(self.spec.value) & observed)
        else:
            observed = sorted(ref for ref in _listed(self.spec.value) if _holds(observed, _split(ref)))
        return (self.spec, observed, matched)


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    match_all: bool
    children: tuple[CompiledCondition | CompiledRule, ...]
    matches: Matcher
    flat: tuple[CompiledCondition, ...] = field(init=False)
    """Every leaf condition, depth first: explaining a change walks this instead of the tree."""

    def __post_init__(self) -> None:
        flat: list[CompiledCondition] = []
        for child in self.children:
            flat.extend(child.flat if isinstance(child, CompiledRule) else (child,))
        object.__setattr__(self, "flat", tuple(flat))

    def outcomes(self, ctx: EvalContext) -> tuple[Outcome, ...]:
        flat = self.flat
        if len(flat) == 1:  # most rules: no list to build and copy
            return (flat[0].outcome(ctx),)
        return tuple([leaf.outcome(ctx) for leaf in flat])

    def leaves(self) -> list[CompiledCondition]:
        return list(self.flat)


def compile_rule(rule: Rule) -> CompiledRule:
    children = tuple(
        compile_rule(child) if isinstance(child, Rule) else compile_condition(child) for child in rule.conditions
    )
    match_all = rule.match == "all"
    return CompiledRule(match_all, children, _combine(match_all, [child.matches for child in children]))


def compile_condition(spec: Condition) -> CompiledCondition:
    metric = spec.metric
    read: Callable[[EvalContext], Any]
    matches: Matcher
    if metric is Metric.BOUGHT_ANY:
        read, test = _read_products, _set_test(spec)
        matches = _products_matcher(spec)
    elif metric is Metric.HAS_TAG:
        read, test = _read_tags, _tag_test(spec)
        matches = _tags_matcher(spec)
    else:
        test = _number_test(spec.op, spec.value)
        if spec.window is not None:
            read = _window_reader(spec)
            matches = _window_matcher(spec, read, test)
        elif metric in (Metric.DAYS_SINCE_LAST_ORDER, Metric.DAYS_SINCE_FIRST_ORDER):
            read = _days_since_reader(metric)
            matches = _matcher(read, test)
        else:
            read = _SCALAR_READERS[metric]
            matches = _present_matcher(read, test)
    return CompiledCondition(spec, read, test, matches)


def referenced_tags(spec: Condition) -> list[tuple[str, str]]:
    """The (group, tag) pairs a has_tag condition looks at."""
    return [_split(ref) for ref in _listed(spec.value)]


def _matcher(read: Callable[[EvalContext], Any], test: Callable[[Any], bool]) -> Matcher:
    def matches(ctx: EvalContext) -> bool:
        observed = read(ctx)
        return observed is not None and test(observed)

    return matches


def _present_matcher(read: Callable[[EvalContext], Any], test: Callable[[Any], bool]) -> Matcher:
    """For metrics that are never absent (counts and totals): no None check."""
    return lambda ctx: test(read(ctx))


def _window_matcher(spec: Condition, read: Callable[[EvalContext], int], test: Callable[[Any], bool]) -> Matcher:
    """A relative window reads its count from the evaluation cache inline (one frame, not three)."""
    assert spec.window is not None
    span = spec.window.last_days
    if span is None:
        return _present_matcher(read, test)
    key = _window_key(spec.metric, span)
    count_now = _window_count(spec.metric, span)

    def matches(ctx: EvalContext) -> bool:
        count: int | None = ctx.cache.get(key)
        if count is None:
            count = count_now(ctx)
        return test(count)

    return matches


def _products_matcher(spec: Condition) -> Matcher:
    wanted = frozenset(_listed(spec.value))
    if spec.op in (Op.EQ, Op.IN):
        return lambda ctx: not wanted.isdisjoint(ctx.agg.products)
    return lambda ctx: wanted.isdisjoint(ctx.agg.products)


def _tags_matcher(spec: Condition) -> Matcher:
    """`_tag_test` on the context's tags, without a generator per test (has_tag groups are
    re-evaluated whole whenever a group they depend on changes)."""
    refs = tuple(_split(ref) for ref in _listed(spec.value))
    holds_wanted = spec.op in (Op.EQ, Op.IN)
    if len(refs) == 1:
        ((group, tag),) = refs

        def holds_one(ctx: EvalContext) -> bool:
            held = ctx.tags.get(group)
            return (held is not None and tag in held) is holds_wanted

        return holds_one

    def holds_any(ctx: EvalContext) -> bool:
        tags = ctx.tags
        for group, tag in refs:
            held = tags.get(group)
            if held is not None and tag in held:
                return holds_wanted
        return not holds_wanted

    return holds_any


def _combine(match_all: bool, matchers: list[Matcher]) -> Matcher:
    # Unrolled for the common short rules: a closure call per condition and nothing else.
    if len(matchers) == 1:
        return matchers[0]
    if len(matchers) == 2:
        first, second = matchers
        if match_all:
            return lambda ctx: first(ctx) and second(ctx)
        return lambda ctx: first(ctx) or second(ctx)
    if len(matchers) == 3:
        first, second, third = matchers
        if match_all:
            return lambda ctx: first(ctx) and second(ctx) and third(ctx)
        return lambda ctx: first(ctx) or second(ctx) or third(ctx)
    if len(matchers) == 4:
        first, second, third, fourth = matchers
        if match_all:
            return lambda ctx: first(ctx) and second(ctx) and third(ctx) and fourth(ctx)
        return lambda ctx: first(ctx) or second(ctx) or third(ctx) or fourth(ctx)
    chosen = tuple(matchers)
    if match_all:

        def every(ctx: EvalContext) -> bool:
            for matcher in chosen:  # noqa: SIM110 - all() over a generator costs a frame per item
                if not matcher(ctx):
                    return False
            return True

        return every

    def some(ctx: EvalContext) -> bool:
        for matcher in chosen:  # noqa: SIM110 - as above
            if matcher(ctx):
                return True
        return False

    return some


_SCALAR_READERS: dict[Metric, Callable[[EvalContext], Any]] = {
    Metric.ORDER_COUNT: attrgetter("agg.order_count"),
    Metric.TOTAL_SPENT: attrgetter("agg.total_spent"),
    Metric.AVG_ORDER_VALUE: attrgetter("agg.avg_order_value"),
    Metric.POINTS_TOTAL: attrgetter("agg.points_total"),
}


def _read_products(ctx: EvalContext) -> set[str]:
    return ctx.agg.products


def _read_tags(ctx: EvalContext) -> Held:
    return ctx.tags


def _number_test(op: Op, value: Any) -> Callable[[Any], bool]:
    if op is Op.BETWEEN:
        low, high = value
        return lambda observed: low <= observed <= high
    if op is Op.IN:
        return frozenset(value).__contains__
    if op is Op.NOT_IN:
        members = frozenset(value)
        return lambda observed: observed not in members
    # `observed OP value` as `MIRROR(value, observed)`: a C-level partial, no Python frame per test.
    return partial(_MIRRORED[op], value)


_MIRRORED: dict[Op, Callable[[Any, Any], bool]] = {
    Op.EQ: operator.eq,
    Op.NE: operator.ne,
    Op.LT: operator.gt,
    Op.LTE: operator.ge,
    Op.GT: operator.lt,
    Op.GTE: operator.le,
}


def _set_test(spec: Condition) -> Callable[[Any], bool]:
    wanted = frozenset(_listed(spec.value))
    if spec.op in (Op.EQ, Op.IN):
        return lambda products: not wanted.isdisjoint(products)
    return lambda products: wanted.isdisjoint(products)


def _tag_test(spec: Condition) -> Callable[[Any], bool]:
    refs = tuple(_split(ref) for ref in _listed(spec.value))
    if spec.op in (Op.EQ, Op.IN):
        return lambda tags: any(_holds(tags, ref) for ref in refs)
    return lambda tags: not any(_holds(tags, ref) for ref in refs)


def _holds(tags: Held, ref: tuple[str, str]) -> bool:
    held = tags.get(ref[0])
    return held is not None and ref[1] in held


def _days_since_reader(metric: Metric) -> Callable[[EvalContext], int | None]:
    moment: Callable[[Aggregates], int | None] = (
        (lambda agg: agg.last_order_us) if metric is Metric.DAYS_SINCE_LAST_ORDER else (lambda agg: agg.first_order_us)
    )

    def read(ctx: EvalContext) -> int | None:
        since = moment(ctx.agg)
        if since is None:
            return None
        return max(0, (ctx.now_us - since) // DAY_US)

    return read


def _window_reader(spec: Condition) -> Callable[[EvalContext], int]:
    assert spec.window is not None
    metric = spec.metric
    span = spec.window.last_days
    series_of = series_reader(metric)
    if span is None:
        assert spec.window.from_ is not None
        assert spec.window.to is not None
        first_day, last_day = date_to_day(spec.window.from_), date_to_day(spec.window.to) - 1

        def read_fixed(ctx: EvalContext) -> int:
            return count_between(series_of(ctx), first_day, last_day)

        return read_fixed

    key = _window_key(metric, span)
    count_now = _window_count(metric, span)

    def read(ctx: EvalContext) -> int:
        count: int | None = ctx.cache.get(key)
        if count is None:
            count = count_now(ctx)
        return count

    return read


def _window_count(metric: Metric, span: int) -> Callable[[EvalContext], int]:
    """Count a relative window and cache the count for the evaluation; the callers have just looked
    in the cache (`count_between`, inline: this runs for every window an evaluation reads)."""
    series_of = series_reader(metric)
    key = _window_key(metric, span)

    def count_now(ctx: EvalContext) -> int:
        days, prefix = series_of(ctx)
        today = ctx.today
        count: int = prefix[bisect_right(days, today)] - prefix[bisect_left(days, today - span + 1)]
        ctx.cache[key] = count
        return count

    return count_now


def _window_key(metric: Metric, span: int) -> str:
    return f"{metric.value}/{span}d"


Series = tuple[list[int], list[int]]
"""A customer's buckets for one metric: sorted days and prefix sums (prefix[i] = events before days[i])."""

BUCKETS: dict[Metric, Callable[[Aggregates], dict[int, int]]] = {
    Metric.ORDER_COUNT: Aggregates.order_days,
    Metric.BROWSE_COUNT: attrgetter("browse"),
    Metric.CLICK_COUNT: attrgetter("click"),
}
"""Window metric -> the customer's day buckets for it (day -> count, every count >= 1)."""


def series_reader(metric: Metric) -> Callable[[EvalContext], Series]:
    """The series of one window metric, built at most once per evaluation, as a function of the
    context (no per-call dispatch on the metric)."""
    buckets_of = BUCKETS[metric]
    key = metric.value

    def read(ctx: EvalContext) -> Series:
        cached: Series | None = ctx.cache.get(key)
        if cached is None:
            buckets = buckets_of(ctx.agg)
            if len(buckets) > 1:
                days = sorted(buckets)
                cached = (days, list(accumulate(map(buckets.__getitem__, days), initial=0)))
            elif buckets:  # most customers have one day of a kind, or none: no sort, no accumulate
                ((day, count),) = buckets.items()
                cached = ([day], [0, count])
            else:
                cached = _NO_SERIES
            ctx.cache[key] = cached
        return cached

    return read


_NO_SERIES: Series = ([], [0])
"""The series of no buckets, shared: series are only ever read."""
_SERIES = {metric: series_reader(metric) for metric in BUCKETS}


def series(ctx: EvalContext, metric: Metric) -> Series:
    return _SERIES[metric](ctx)


def count_between(days_and_prefix: Series, first_day: int, last_day: int) -> int:
    """Events in days [first_day, last_day], both inclusive."""
    days, prefix = days_and_prefix
    return prefix[bisect_right(days, last_day)] - prefix[bisect_left(days, first_day)]


def change_points(spec: Condition) -> list[int]:
    """The whole-day values at which `days op value` changes truth as the days go up."""
    values = spec.value if isinstance(spec.value, list) else [spec.value]
    numbers = [int(value) if not isinstance(value, Decimal) else int(value.to_integral_value()) for value in values]
    points: set[int] = set()
    if spec.op in (Op.LT, Op.GTE):
        points.update(numbers)  # true below / from the value
    elif spec.op in (Op.LTE, Op.GT):
        points.update(number + 1 for number in numbers)
    elif spec.op is Op.BETWEEN:
        points.update({numbers[0], numbers[1] + 1})
    else:  # eq, ne, in, not_in: the day it is reached and the day after
        for number in numbers:
            points.update({number, number + 1})
    return sorted(points)


def _listed(value: Any) -> set[str]:
    return set(value) if isinstance(value, list) else {value}


def _split(ref: str) -> tuple[str, str]:
    group, _, tag = ref.partition("/")
    return group, tag
