"""Conditions on profile attributes, age and sources (`{metric: attribute, name: region, op: in, value:
[上海, 杭州]}`, `{metric: age, op: between, value: [25, 34]}`, `{metric: first_source, op: eq, value:
douyin}`), compiled like the others (conditions.py): an absent attribute, birth date or touch makes
every condition on it false; `sources_any` reads the set of channels, empty when none.

Explanations (a tag change's observed values) quote an attribute only as far as the rule lists it: a
value the condition does not name shows as OTHER, so no attribute a rule did not spell out reaches
the tag-change stream. Age shows as years, a touch as `channel/sub_channel`.
"""

from __future__ import annotations

from typing import Any, Final

from schemas.tags import Condition, Metric, Op
from services.engine.changes import ConditionOutcome
from services.engine.comparisons import Comparison, comparison_for
from services.engine.conditions import CompiledCondition
from services.engine.profile import age_on, birth_date
from services.engine.windows import EvalContext

OTHER: Final = "(other)"
"""An attribute's observed value in an explanation when the condition does not list it."""


def compile_profile_condition(spec: Condition) -> CompiledCondition:
    metric = spec.metric
    if metric is Metric.ATTRIBUTE:
        return _Attribute(spec)
    if metric is Metric.AGE:
        return _Age(spec, comparison_for(spec.op, spec.value))
    if metric is Metric.SOURCES_ANY:
        return _SourcesAny(spec)
    return _Touched(spec, first=metric is Metric.FIRST_SOURCE)


class _Listed(CompiledCondition):
    """eq/in: the customer's value is one of the listed; ne/not_in: it is none of them."""

    def __init__(self, spec: Condition) -> None:
        super().__init__(spec)
        self.wanted = frozenset(spec.value if isinstance(spec.value, list) else [spec.value])
        self.holds_wanted = spec.op in (Op.EQ, Op.IN)


class _Attribute(_Listed):
    def __init__(self, spec: Condition) -> None:
        super().__init__(spec)
        assert spec.name is not None  # Condition requires it for `attribute`
        self.name = spec.name

    def read(self, ctx: EvalContext) -> str | None:
        profile = ctx.agg.profile
        return None if profile is None else profile.value(self.name)

    def test(self, observed: Any) -> bool:
        return (observed in self.wanted) is self.holds_wanted

    def matches(self, ctx: EvalContext) -> bool:
        observed = self.read(ctx)
        return observed is not None and (observed in self.wanted) is self.holds_wanted

    def outcome(self, ctx: EvalContext) -> ConditionOutcome:
        observed = self.read(ctx)
        matched = observed is not None and self.test(observed)
        shown = observed if observed is None or observed in self.wanted else OTHER
        return (self.spec, shown, matched)


class _Age(CompiledCondition):
    """Whole years from the birth date to the shop's local today: it moves at the local midnight that
    starts the birthday (the time plan's AGE family schedules it)."""

    def __init__(self, spec: Condition, comparison: Comparison) -> None:
        super().__init__(spec)
        self.comparison = comparison

    def read(self, ctx: EvalContext) -> int | None:
        born = birth_date(ctx.agg.profile)
        if born is None:
            return None
        age = age_on(born, ctx.today)
        return age if age >= 0 else None  # not born yet (a birth date a day ahead, across zones)

    def test(self, observed: Any) -> bool:
        return self.comparison.holds(observed)

    def matches(self, ctx: EvalContext) -> bool:
        age = self.read(ctx)
        return age is not None and self.comparison.holds_int(age)


class _Touched(_Listed):
    """The first or last touch: a listed channel matches any of its sub-channels, a listed
    `channel/sub_channel` that one only."""

    def __init__(self, spec: Condition, *, first: bool) -> None:
        super().__init__(spec)
        self.first = first

    def read(self, ctx: EvalContext) -> str | None:
        profile = ctx.agg.profile
        if profile is None:
            return None
        touch = profile.first if self.first else profile.last
        return None if touch is None else touch.path

    def test(self, observed: Any) -> bool:
        path: str = observed
        found = path in self.wanted or path.partition("/")[0] in self.wanted
        return found is self.holds_wanted

    def matches(self, ctx: EvalContext) -> bool:
        observed = self.read(ctx)
        return observed is not None and self.test(observed)


class _SourcesAny(_Listed):
    def read(self, ctx: EvalContext) -> set[str]:
        profile = ctx.agg.profile
        return set() if profile is None else profile.channels

    def test(self, observed: Any) -> bool:
        return self.wanted.isdisjoint(observed) is not self.holds_wanted

    def matches(self, ctx: EvalContext) -> bool:
        return self.test(self.read(ctx))

    def outcome(self, ctx: EvalContext) -> ConditionOutcome:
        channels = self.read(ctx)
        return (self.spec, sorted(self.wanted & channels), self.test(channels))
