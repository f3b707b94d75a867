"""Behaviour scores (`schemas.scores`) compiled: what an action is worth, and the `metric: score` conditions.

A customer's points are kept per score and per local day of the action (`score_state.py`), as
integers, folded from the actions the aggregates count.

A score without decay is read as the sum of its days in a rule's window (`last: 14d`): it changes at
the local midnight a day leaves the window, like the window counts.

A decaying score (with a half-life) is every point ever earned, each halving every half-life from
the end of its day; its arithmetic, exact to the last rounded digit, is `decay.py`'s. A condition on
it flips at the first microsecond at which the rounded score compares differently with its level:
the engine schedules that instant through the customer's `due` (family SCORE_TIME).

When time moves them, and which tags read them, is `score_plan.py`'s.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

from schemas.events import Browse, Click, OrderPaid, OrderRefunded
from schemas.scores import Score
from schemas.tags import Condition, Op
from services.engine.comparisons import Comparison
from services.engine.conditions import CompiledCondition
from services.engine.decay import UNIT, approx_split, decide, exact, rounded
from services.engine.score_state import BROWSE, CLICK, ORDER, REFUND, Derived, Reading, split_of
from services.engine.windows import EvalContext

SCORE_TIME: Final = "score"
"""The `due` family of decaying scores: one crossing a level."""
SCORE_WINDOW: Final = "score_window"
"""The `due` family of windowed scores: a day leaving (or a future day entering) a window."""

_ZERO: Final = Decimal(0)
_KINDS: Final[dict[type, int]] = {Click: CLICK, Browse: BROWSE, OrderPaid: ORDER, OrderRefunded: REFUND}


class CompiledScore:
    """One score as the fold and the conditions use it."""

    def __init__(self, key: str, spec: Score) -> None:
        self.id = spec.id
        self.spec = spec
        self.key = key
        """What the customer's points are kept under (`compile_scores`): a change of what the score
        counts (points, products, links) starts it afresh; a change of its decay reads the same points."""
        points = spec.points
        self.click = points.click
        self.browse = points.browse
        self.order = points.order
        self.refund = points.refund
        self.products = dict(spec.products)
        self.links = tuple(sorted(spec.links.items(), key=_longest_first))
        self.half_life_us = spec.decay.half_life_us if spec.decay is not None else 0
        self.spans: tuple[int, ...] = ()
        """The windows its conditions read, ascending (set by `ScorePlan`)."""
        self.levels: tuple[tuple[int, ...], ...] = ()
        """Per window of `spans`, the sums n at which a condition on that window reads differently
        from n - 1: the fold routes an action to the score's tags only when it crosses one."""
        self.first_slot = 0
        """Where its windows start in `ScorePlan.slots` (set by `ScorePlan`)."""
        self.decay_levels: tuple[float, ...] = ()
        """A decaying score's levels (`levels_of`) its conditions read, as floats (set by `ScorePlan`):
        the fold routes an action to its tags only when the score may have crossed one."""

    def feeds_kind(self, kind: int) -> bool:
        """Whether an action of `kind` (`score_state.CLICK`...) can be worth points in this score."""
        if kind == CLICK:
            return bool(self.click or self.links)
        if kind == BROWSE:
            return bool(self.browse or self.products)
        if kind == ORDER:
            return bool(self.order)
        return bool(self.refund)

    def points(self, kind: int, name: str) -> int:
        """What an action of `kind` (`score_state.CLICK`...) is worth; `name`: a click's target or a
        browsed product's id."""
        if kind == CLICK:
            for prefix, points in self.links:
                if name.startswith(prefix):
                    return points
            return self.click
        if kind == BROWSE:
            return self.products.get(name, self.browse) if self.products else self.browse
        return self.order if kind == ORDER else self.refund

    def condition(self, spec: Condition, comparison: Comparison) -> CompiledCondition:
        if self.half_life_us:
            return DecayingScore(spec, comparison, self)
        span = spec.window.last_days if spec.window is not None else None
        if span is None:  # schemas.tags refuses it: a score without decay is read over a window
            raise ValueError(f"score {self.id!r} does not decay: a condition on it needs a window")
        return WindowedScore(spec, comparison, self, span)

    def approximate(self, ctx: EvalContext) -> Reading | None:
        """This decaying score at ctx.now_us in floats (`decay.approx`), read once per instant; None:
        no points."""
        state = ctx.agg.scores
        if state is None:
            return None
        key = self.key
        days = state.days.get(key)
        if days is None:
            return None
        return self.approximate_in(state.decay_of(key, self.half_life_us), days, ctx)

    def approximate_in(self, derived: Derived, days: dict[int, int], ctx: EvalContext) -> Reading:
        """`approximate`, given the score's days and what is derived from them."""
        reading = derived.reading
        if reading.at_us != ctx.now_us:
            split = split_of(derived, days, ctx.today)
            reading.value, reading.error = approx_split(
                days, ctx.now_us, self.half_life_us, ctx.zone, derived.approx, split.pending, split.last, split.found
            )
            reading.at_us = ctx.now_us
        return reading

    def value(self, ctx: EvalContext) -> Decimal:
        """This decaying score at ctx.now_us, rounded down to SCORE_PLACES places (what reasons show)."""
        reading = self.approximate(ctx)
        if reading is None:
            return _ZERO
        settled = rounded((reading.value, reading.error))
        if settled is not None:
            return settled
        state = ctx.agg.scores
        assert state is not None
        decaying = state.decaying(self.key, self.half_life_us, ctx.zone)
        assert decaying is not None
        return exact(decaying.days, ctx.now_us, self.half_life_us, ctx.zone, decaying.masses)


def compile_scores(defined: Iterable[tuple[str, Sequence[Score]]]) -> dict[str, dict[str, CompiledScore]]:
    """Per group id (of `defined`: each group's id and scores), its compiled scores by id.

    Groups that define a score alike (id, points, products, links and decay) share one, kept under
    `id:signature` (`score_signature`): its points are folded once, and every group's rules read
    them. Where groups give one id and counting different decays, each keeps its own, under
    `group/id:signature` (as every score was kept before they were shared: `score_state.adopt`
    moves stored points between the two forms)."""
    listed = [(group_id, spec, f"{spec.id}:{score_signature(spec)}") for group_id, specs in defined for spec in specs]
    decays: dict[str, set[int]] = {}
    for _, spec, base in listed:
        decays.setdefault(base, set()).add(spec.decay.half_life_us if spec.decay is not None else 0)
    shared: dict[str, CompiledScore] = {}
    compiled: dict[str, dict[str, CompiledScore]] = {}
    for group_id, spec, base in listed:
        key = base if len(decays[base]) == 1 else f"{group_id}/{base}"
        score = shared.get(key)
        if score is None:
            score = shared[key] = CompiledScore(key, spec)
        compiled.setdefault(group_id, {})[spec.id] = score
    return compiled


def compile_score_condition(
    spec: Condition, comparison: Comparison, scores: Mapping[str, CompiledScore] | None
) -> CompiledCondition:
    """A `metric: score` condition on one of its group's `scores` (by id)."""
    score = scores.get(str(spec.name)) if scores is not None else None
    if score is None:
        raise ValueError(f"no score {spec.name!r} defined in the condition's group")
    return score.condition(spec, comparison)


class WindowedScore(CompiledCondition):
    """A score without decay: its points in the last `span` local days, today included."""

    def __init__(self, spec: Condition, comparison: Comparison, score: CompiledScore, span: int) -> None:
        super().__init__(spec)
        self.comparison = comparison
        self.score = score
        self.span = span
        self.index = -1
        """Its window's place in `score.spans` (set by `ScorePlan`)."""

    def read(self, ctx: EvalContext) -> int:
        return _windowed_sum(self, ctx)

    def test(self, observed: Any) -> bool:
        return self.comparison.holds(observed)

    def matches(self, ctx: EvalContext) -> bool:
        return self.comparison.holds(_windowed_sum(self, ctx))


def _windowed_sum(condition: WindowedScore, ctx: EvalContext) -> int:
    """The condition's score summed over its window. Every window of the score is summed in one pass
    (`ScorePlan` numbers them) on the first read of a local day, then kept by the fold."""
    state = ctx.agg.scores
    if state is None:
        return 0
    score = condition.score
    days = state.days.get(score.key)
    if days is None:
        return 0
    today = ctx.today
    index = condition.index
    if index < 0:  # a condition no plan numbered: its window alone
        return sum(points for day, points in days.items() if 0 <= today - day < condition.span)
    derived = state.of(score.key)
    sums = derived.sums
    spans = score.spans
    if sums is None or derived.sums_day != today or derived.sums_spans is not spans:
        sums = [0] * len(spans)
        for day, points in days.items():
            age = today - day
            if age >= 0:
                for position in range(len(spans)):
                    if age < spans[position]:
                        sums[position] += points
        derived.sums = sums
        derived.sums_day = today
        derived.sums_spans = spans
    return sums[index]


class DecayingScore(CompiledCondition):
    def __init__(self, spec: Condition, comparison: Comparison, score: CompiledScore) -> None:
        super().__init__(spec)
        self.comparison = comparison
        self.score = score
        levels = levels_of(spec)
        op = spec.op
        self.below = levels[0] if op in (Op.GTE, Op.GT, Op.BETWEEN) else None
        """The condition holds from this level up (None: no lower bound) ..."""
        self.above = levels[-1] if op in (Op.LT, Op.LTE, Op.BETWEEN) else None
        """... and below this one (None: no upper bound)."""
        self.below_f = float(self.below) if self.below is not None else 0.0
        self.above_f = float(self.above) if self.above is not None else 0.0

    def read(self, ctx: EvalContext) -> Decimal:
        return self.score.value(ctx)

    def test(self, observed: Any) -> bool:
        return self.comparison.holds(observed)

    def matches(self, ctx: EvalContext) -> bool:
        """Whether the exact score is within the levels: floats decide unless too close to tell."""
        reading = self.score.approximate(ctx)
        if reading is None:
            return self.comparison.holds(_ZERO)
        below = self.below
        if below is not None and not self._at_least(reading, ctx, below, self.below_f):
            return False
        above = self.above
        return above is None or not self._at_least(reading, ctx, above, self.above_f)

    def _at_least(self, reading: Reading, ctx: EvalContext, level: Decimal, level_f: float) -> bool:
        decided = decide((reading.value, reading.error), level_f)
        if decided >= 0:
            return decided == 1
        return self.score.value(ctx) >= level


class ScoreBook:
    """The rule book's scores: what the fold adds points to."""

    def __init__(self, scores: tuple[CompiledScore, ...]) -> None:
        self.scores = scores
        self.keys = frozenset(score.key for score in scores)
        self.by_kind: tuple[tuple[tuple[int, CompiledScore], ...], ...] = tuple(
            tuple((position, score) for position, score in enumerate(scores) if score.feeds_kind(kind))
            for kind in (CLICK, BROWSE, ORDER, REFUND)
        )
        """Per kind of action (`score_state.CLICK`...), the scores it can be worth points in, with
        their positions in `scores`."""
        self.links = any(score.links for score in scores)
        """Whether a click's target can matter (some score lists links)."""
        self.products = any(score.products for score in scores)
        """Whether a browsed product can matter (some score lists products)."""

    def kind_of(self, event_type: type) -> int:
        """The kind of action an event of this type is (-1: none, or worth nothing in every score)."""
        kind = _KINDS.get(event_type, -1)
        return kind if kind >= 0 and self.by_kind[kind] else -1


def decayed(days: dict[int, int], at_us: int, half_life_us: int, zone: Any) -> Decimal:
    """A decaying score at `at_us` in decimals (`decay.exact`), nothing kept: what tests compare."""
    return exact(days, at_us, half_life_us, zone, {})


def score_signature(spec: Score) -> str:
    """A short digest of what a score counts: points, products and links."""
    counted = spec.model_dump_json(include={"points", "products", "links"})
    return hashlib.sha256(counted.encode()).hexdigest()[:8]


def _longest_first(item: tuple[str, int]) -> tuple[int, str]:
    return (-len(item[0]), item[0])


def levels_of(condition: Condition) -> tuple[Decimal, ...]:
    """The levels L at which a score condition changes truth, as `score >= L` does: the rounded score
    is a whole number of UNITs, so `score > 5` is `score >= 5.0001` and `score <= 5` is `not score
    >= 5.0001`."""
    value = condition.value
    op = condition.op
    if op is Op.BETWEEN:
        return (Decimal(value[0]), Decimal(value[1]) + UNIT)
    if op is Op.GT or op is Op.LTE:
        return (Decimal(value) + UNIT,)
    return (Decimal(value),)
