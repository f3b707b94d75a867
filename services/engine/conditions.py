"""Compiled conditions and rules: read a metric, test it, explain it, and tell when it may next flip.

Conditions are compiled once per definition change into small objects, one class per kind of metric,
so that evaluating one costs a couple of attribute reads and a comparison. An absent metric (days
since the last order of a customer who never ordered) makes every condition on it false, whatever
the operator.

Window counts come from `windows.py` (on the `EvalContext`), comparisons from `comparisons.py`.

Evaluation is the engine's hot loop (tens of condition tests per event). The engine ships compiled
with mypyc (pure Python is the fallback), and mypyc turns a method call on a known class into a
direct C call while every closure, lambda or `functools.partial` stays a generic Python call: so a
condition is a class with a typed `matches`, a rule calls its children's `matches` in a plain loop,
and a comparison is a class too, not an `operator` function. Cache keys are plain strings or small
ints (an Enum's `__hash__` is a Python function).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from schemas.tags import CYCLE_METRICS, Condition, Metric, Op, Rule
from services.engine.changes import ConditionOutcome
from services.engine.comparisons import Comparison, comparison_for
from services.engine.state import Held
from services.engine.timeutil import date_to_day, to_us
from services.engine.windows import WINDOW_KINDS, EvalContext
from services.engine.zone import UTC_ZONE, DayZone

if TYPE_CHECKING:
    from services.engine.scores import CompiledScore

    Scores = Mapping[str, CompiledScore]  # a group's scores by id: what `metric: score` conditions read


class Matcher:
    """Anything a tag's rule evaluates: a condition, or a rule of conditions."""

    def matches(self, ctx: EvalContext) -> bool:
        raise NotImplementedError


class CompiledCondition(Matcher):
    """One condition: `read` gives what the customer has (None: absent), `test` says whether that
    satisfies the condition, and `matches` is the two together, as directly as each kind allows."""

    def __init__(self, spec: Condition) -> None:
        self.spec = spec
        self.plain = spec.metric not in (Metric.BOUGHT_ANY, Metric.HAS_TAG)
        """Whether the observed value is shown as read (numbers), not narrowed to the listed items."""

    def read(self, ctx: EvalContext) -> Any:
        raise NotImplementedError

    def test(self, observed: Any) -> bool:
        raise NotImplementedError

    def outcome(self, ctx: EvalContext) -> ConditionOutcome:
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


class CompiledRule(Matcher):
    flat: tuple[CompiledCondition, ...]

    def __init__(self, match_all: bool, children: tuple[CompiledCondition | CompiledRule, ...]) -> None:
        self.match_all = match_all
        self.children = children
        flat: list[CompiledCondition] = []
        for child in children:
            flat.extend(child.flat if isinstance(child, CompiledRule) else (child,))
        self.flat = tuple(flat)
        """Every leaf condition, depth first: explaining a change walks this instead of the tree."""
        self.matcher: Matcher = children[0] if len(children) == 1 else self
        """What to call to evaluate the rule: its only child when it has one (most rules), so that
        no call is spent on the rule itself."""

    def matches(self, ctx: EvalContext) -> bool:
        children: tuple[Matcher, ...] = self.children  # compiled: one method call, no per-kind dispatch
        if self.match_all:
            for child in children:  # noqa: SIM110 - all() over a generator costs a frame per item
                if not child.matches(ctx):
                    return False
            return True
        for child in children:  # noqa: SIM110 - any() over a generator costs a frame per item
            if child.matches(ctx):
                return True
        return False

    def outcomes(self, ctx: EvalContext) -> tuple[ConditionOutcome, ...]:
        flat = self.flat
        if len(flat) == 1:  # most rules: no list to build and copy
            return (flat[0].outcome(ctx),)
        return tuple([leaf.outcome(ctx) for leaf in flat])

    def leaves(self) -> list[CompiledCondition]:
        return list(self.flat)


def compile_rule(rule: Rule, zone: DayZone = UTC_ZONE, scores: Scores | None = None) -> CompiledRule:
    children = tuple(
        compile_rule(child, zone, scores) if isinstance(child, Rule) else compile_condition(child, zone, scores)
        for child in rule.conditions
    )
    return CompiledRule(rule.match == "all", children)


def compile_condition(spec: Condition, zone: DayZone = UTC_ZONE, scores: Scores | None = None) -> CompiledCondition:
    metric = spec.metric
    if metric in _PROFILE_METRICS:
        from services.engine.profile_rules import compile_profile_condition  # it builds on this module

        return compile_profile_condition(spec)
    if metric is Metric.BOUGHT_ANY:
        return _BoughtAny(spec)
    if metric is Metric.HAS_TAG:
        return _HasTag(spec)
    if metric in CYCLE_METRICS:
        from services.engine.loyalty import compile_cycle_condition  # loyalty.py builds on this module

        return compile_cycle_condition(spec)
    comparison = comparison_for(spec.op, spec.value)
    if metric is Metric.SCORE:
        from services.engine.scores import compile_score_condition  # scores.py builds on this module

        return compile_score_condition(spec, comparison, scores)
    if spec.window is not None:
        kind = WINDOW_KINDS[metric]
        span = spec.window.last_days
        if span is not None:
            return _RelativeWindow(spec, comparison, kind, span)
        assert spec.window.from_ is not None
        assert spec.window.to is not None
        first_day, end_day = window_day(spec.window.from_, zone), window_day(spec.window.to, zone)
        return FixedWindow(spec, comparison, kind, first_day, end_day - 1, zone.start(end_day))
    if metric is Metric.DAYS_SINCE_LAST_ORDER:
        return _DaysSinceLastOrder(spec, comparison)
    if metric is Metric.DAYS_SINCE_FIRST_ORDER:
        return _DaysSinceFirstOrder(spec, comparison)
    if metric is Metric.ORDER_COUNT:
        return _OrderCount(spec, comparison)
    if metric is Metric.TOTAL_SPENT:
        return _TotalSpent(spec, comparison)
    if metric is Metric.AVG_ORDER_VALUE:
        return _AverageOrderValue(spec, comparison)
    if metric is Metric.POINTS_TOTAL:
        return _PointsTotal(spec, comparison)
    raise ValueError(f"no condition on {metric.value!r} without a window")


_PROFILE_METRICS = frozenset(
    {Metric.ATTRIBUTE, Metric.AGE, Metric.FIRST_SOURCE, Metric.LAST_SOURCE, Metric.SOURCES_ANY}
)


def window_day(bound: date, zone: DayZone) -> int:
    """The local day an absolute window's `from` or `to` names: a date is a local date; an instant
    (a datetime with an offset) must be the start of a local day, since windows count whole local
    days (raises ValueError naming the bound otherwise)."""
    if not isinstance(bound, datetime):
        return date_to_day(bound)
    at = to_us(bound)
    day = zone.day(at)
    if zone.start(day) != at:
        raise ValueError(
            f"{bound.isoformat()} is not the start of a day in the shop's time zone {zone.name}: windows count "
            "whole local days; give a date (a local date) or a local midnight"
        )
    return day


def upper_bounding(op: Op) -> bool:
    """Whether a condition with `op` can turn false as its count grows: over an absolute window it
    cannot be known to hold until the window has ended (only gte and gt may hold early)."""
    return op not in (Op.GTE, Op.GT)


def referenced_tags(spec: Condition) -> list[tuple[str, str]]:
    """The (group, tag) pairs a has_tag condition looks at."""
    return [_split(ref) for ref in _listed(spec.value)]


# -- conditions, one class per kind of metric ---------------------------------------------------


class _Number(CompiledCondition):
    def __init__(self, spec: Condition, comparison: Comparison) -> None:
        super().__init__(spec)
        self.comparison = comparison

    def test(self, observed: Any) -> bool:
        return self.comparison.holds(observed)


class _OrderCount(_Number):
    """Counts and totals are never absent: no None check."""

    def read(self, ctx: EvalContext) -> int:
        return ctx.agg.order_count

    def matches(self, ctx: EvalContext) -> bool:
        return self.comparison.holds_int(ctx.agg.order_count)


class _PointsTotal(_Number):
    def read(self, ctx: EvalContext) -> int:
        return ctx.agg.points_total

    def matches(self, ctx: EvalContext) -> bool:
        return self.comparison.holds_int(ctx.agg.points_total)


class _TotalSpent(_Number):
    def read(self, ctx: EvalContext) -> Decimal:
        return ctx.agg.total_spent

    def matches(self, ctx: EvalContext) -> bool:
        return self.comparison.holds(ctx.agg.total_spent)


class _AverageOrderValue(_Number):
    def read(self, ctx: EvalContext) -> Decimal:
        return ctx.agg.avg_order_value

    def matches(self, ctx: EvalContext) -> bool:
        return self.comparison.holds(ctx.agg.avg_order_value)


class _DaysSinceLastOrder(_Number):
    """Local days from the order's day to today: it moves at the shop's midnight."""

    def read(self, ctx: EvalContext) -> int | None:
        since = ctx.agg.last_order_us
        if since is None:
            return None
        return ctx.zone.days_between(since, ctx.now_us)

    def matches(self, ctx: EvalContext) -> bool:
        since = ctx.agg.last_order_us
        return since is not None and self.comparison.holds_int(ctx.zone.days_between(since, ctx.now_us))


class _DaysSinceFirstOrder(_Number):
    def read(self, ctx: EvalContext) -> int | None:
        since = ctx.agg.first_order_us
        if since is None:
            return None
        return ctx.zone.days_between(since, ctx.now_us)

    def matches(self, ctx: EvalContext) -> bool:
        since = ctx.agg.first_order_us
        return since is not None and self.comparison.holds_int(ctx.zone.days_between(since, ctx.now_us))


class _RelativeWindow(_Number):
    """The last `span` days including today, read from the counts of every relative window of its
    metric (`EvalContext.windows`): the rule book makes the conditions of one metric share one
    `spans` tuple (`share_spans`), so an evaluation counts each metric's windows once."""

    def __init__(self, spec: Condition, comparison: Comparison, kind: int, span: int) -> None:
        super().__init__(spec, comparison)
        self.kind = kind
        self.span = span
        self.spans: tuple[int, ...] = (span,)
        self.index = 0

    def read(self, ctx: EvalContext) -> int:
        return ctx.windows(self.kind, self.spans)[self.index]

    def matches(self, ctx: EvalContext) -> bool:
        return self.comparison.holds_int(ctx.windows(self.kind, self.spans)[self.index])

    def share(self, spans: tuple[int, ...]) -> None:
        self.spans = spans
        self.index = spans.index(self.span)


def share_spans(leaves: Iterable[CompiledCondition]) -> None:
    """Make every relative window condition among `leaves` read its metric's windows through one
    `spans` tuple per metric (every span of that metric, ascending)."""
    windows = [leaf for leaf in leaves if isinstance(leaf, _RelativeWindow)]
    spans: dict[int, set[int]] = {}
    for leaf in windows:
        spans.setdefault(leaf.kind, set()).add(leaf.span)
    shared = {kind: tuple(sorted(values)) for kind, values in spans.items()}
    for leaf in windows:
        leaf.share(shared[leaf.kind])


class FixedWindow(_Number):
    """Local days [first_day, last_day] (the rule's `to` is exclusive); the window ends at `end_us`.

    Before its end a window's count can still grow, so a condition that more events could make false
    (`upper_bounding`: eq, lt, lte, between, ne, in, not_in) does not hold yet: "browsed 0 times in
    [01-05, 01-20)" is false on 01-02 and on 01-19, and may become true at the window's end, when the
    engine evaluates it again (the time plan's WINDOW_END family). gte and gt may hold early."""

    def __init__(
        self, spec: Condition, comparison: Comparison, kind: int, first_day: int, last_day: int, end_us: int
    ) -> None:
        super().__init__(spec, comparison)
        self.kind = kind
        self.first_day = first_day
        self.last_day = last_day
        self.end_us = end_us
        self.waits = upper_bounding(spec.op)
        """Whether the condition is false until the window has ended."""

    def read(self, ctx: EvalContext) -> int:
        return ctx.count(self.kind, self.first_day, self.last_day)

    def matches(self, ctx: EvalContext) -> bool:
        if self.waits and ctx.now_us < self.end_us:
            return False
        return self.comparison.holds_int(ctx.count(self.kind, self.first_day, self.last_day))

    def outcome(self, ctx: EvalContext) -> ConditionOutcome:
        return (self.spec, self.read(ctx), self.matches(ctx))


class _BoughtAny(CompiledCondition):
    def __init__(self, spec: Condition) -> None:
        super().__init__(spec)
        self.wanted = frozenset(_listed(spec.value))
        self.holds_wanted = spec.op in (Op.EQ, Op.IN)

    def read(self, ctx: EvalContext) -> set[str]:
        return ctx.agg.products

    def test(self, observed: Any) -> bool:
        return self.wanted.isdisjoint(observed) is not self.holds_wanted

    def matches(self, ctx: EvalContext) -> bool:
        return self.wanted.isdisjoint(ctx.agg.products) is not self.holds_wanted


class _HasTag(CompiledCondition):
    """Holds any of the listed tags (eq/in), or none of them (ne/not_in)."""

    def __init__(self, spec: Condition) -> None:
        super().__init__(spec)
        self.refs = tuple(_split(ref) for ref in _listed(spec.value))
        self.holds_wanted = spec.op in (Op.EQ, Op.IN)

    def read(self, ctx: EvalContext) -> Held:
        return ctx.tags

    def test(self, observed: Any) -> bool:
        tags: Held = observed
        for group, tag in self.refs:
            held = tags.get(group)
            if held is not None and tag in held:
                return self.holds_wanted
        return not self.holds_wanted

    def matches(self, ctx: EvalContext) -> bool:
        return self.test(ctx.tags)


def _holds(tags: Held, ref: tuple[str, str]) -> bool:
    held = tags.get(ref[0])
    return held is not None and ref[1] in held


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
