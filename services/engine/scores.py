"""Behaviour scores (`schemas.scores`): points folded per local day, read by `metric: score` conditions.

A customer's points are kept per score and per local day of the action (`ScoreState`), as integers:
the fold is a sum, so the state depends only on the set of distinct actions, whatever their order
(de-duplication is the aggregates' own: a score counts an action exactly when the aggregates count
it). Days are kept for `horizon_days` back from the latest scored day, like browse and click buckets.

A score without decay is read as the sum of its days in a rule's window (`last: 14d`): it changes at
the local midnight a day leaves the window, like the window counts.

A decaying score with half-life h, read at instant t, is

    S(t) = sum over days d of  points(d) * 2 ** (-max(0, t - end(d)) / h)

where end(d) is the local midnight that ends day d: an action's points count in full for the rest
of its day, then halve every h. It is computed as the points of the days not ended yet plus
M * 2 ** (-(t - e) / h), where e is the end of the latest ended day and M the ended days' mass at e,
built day by day in day order (`_mass`: kept per day until those days' points change, so an
evaluation costs one power, not one per day), in `decimal` at 28 significant digits (round half even; a power of 2
as 2 ** -q for its whole half-lives times exp(-(r / h) * ln 2) for the rest), and the score
is that rounded down to SCORE_PLACES decimal places. `decimal` computes the same digits on every
platform (`float`'s pow and log come from the C library), so live and replay agree exactly.

Between two day ends the points of the ended days decay as one exponential, so the instant a
decaying score crosses a level L is solved exactly (L = C + E * 2 ** (-x / h), C the points not
yet decaying, E the decaying part at the start of the piece): x = h * log2(E / (L - C)). That gives a
candidate microsecond, and the score itself (the rounded S above) settles it: a condition on the
score flips at the first whole microsecond at which the rounded score compares differently with its
level. The engine schedules that instant through the customer's `due` (family SCORE_TIME).

Floats only filter: a condition whose float score is clearly on one side of its level (a margin of
1e-9, a float being within 1e-15) is decided on it, and a flip is solved exactly at a wake-up
EARLY_US before a float estimate of it; everything near a level is decided by the decimals above.

Over 400 lines: the fold, the exact arithmetic and its float filter are one contract; the decimal and
float halves are next to move into a module of their own.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Context, Decimal
from typing import Any, Final

from schemas.events import Browse, Click, OrderPaid, OrderRefunded
from schemas.limits import SCORE_PLACES
from schemas.scores import Score
from schemas.tags import Condition, Op
from services.engine.aggregates import Aggregates, CustomerEvent
from services.engine.comparisons import Comparison
from services.engine.conditions import CompiledCondition, ScoreSource
from services.engine.windows import EvalContext, next_window_change
from services.engine.zone import DayZone

SCORE_TIME: Final = "score"
"""The `due` family of scores: a day leaving a window, or a decaying score crossing a level."""

_MATH: Final = Context(prec=28, rounding=ROUND_HALF_EVEN)
"""The one context every score computation uses (never the thread's current context)."""
_ZERO: Final = Decimal(0)
_ONE: Final = Decimal(1)
_TWO: Final = Decimal(2)
_LN2: Final = _MATH.ln(_TWO)
UNIT: Final = Decimal(1).scaleb(-SCORE_PLACES)
_REFINE_STEPS: Final = 16
"""Microseconds the solved flip instant is moved by, at most, to land on the first one at which the
rounded score compares differently (in practice it moves by 0 or 1)."""


class ScoreState:
    """A customer's points per score (`CompiledScore.key`) and local day, and the latest scored day.
    The aggregates' one slot for scores: None for customers of a shop that defines none."""

    __slots__ = ("approx", "days", "masses", "memo", "memo_us", "top_day")

    def __init__(self, days: dict[str, dict[int, int]] | None = None, top_day: int = 0) -> None:
        self.days: dict[str, dict[int, int]] = {} if days is None else days
        self.top_day = top_day
        """The latest local day of an action while scores were defined: days up to `horizon_days`
        before it are kept."""
        self.memo: dict[str, Decimal] = {}
        self.memo_us = -1
        """Decaying scores as read at `memo_us` (never stored: derived; cleared by the fold)."""
        self.masses: dict[str, dict[int, Decimal]] = {}
        """Score key -> latest ended day -> the decayed points of the days up to it, as of that day's
        end (`_mass`): derived, kept while those days' points stay as they are (most actions are
        today's, which has not ended)."""

        self.approx: dict[str, dict[int, float]] = {}
        """The same masses as floats (`_approx_mass`): what decides a condition far from its level."""

    def masses_of(self, key: str) -> dict[int, Decimal]:
        found = self.masses.get(key)
        if found is None:
            found = self.masses[key] = {}
        return found

    def approx_of(self, key: str) -> dict[int, float]:
        found = self.approx.get(key)
        if found is None:
            found = self.approx[key] = {}
        return found

    def forget(self, key: str, day: int) -> None:
        """The masses that hold `day` (kept for days from it on), whose points just changed."""
        for kept in (self.masses.get(key), self.approx.get(key)):
            if kept:
                for last in [last for last in kept if last >= day]:
                    del kept[last]


class CompiledScore(ScoreSource):
    """One score as the fold and the conditions use it."""

    def __init__(self, group_id: str, spec: Score) -> None:
        self.id = spec.id
        self.spec = spec
        self.key = f"{group_id}/{spec.id}:{score_signature(spec)}"
        """What the customer's points are kept under: a change of what the score counts (points,
        products, links) starts it afresh; a change of its decay reads the same points."""
        points = spec.points
        self.click = points.click
        self.browse = points.browse
        self.order = points.order
        self.refund = points.refund
        self.products = dict(spec.products)
        self.links = tuple(sorted(spec.links.items(), key=_longest_first))
        self.half_life_us = spec.decay.half_life_us if spec.decay is not None else 0

    def points_for(self, event: CustomerEvent) -> int:
        if isinstance(event, Click):
            target = event.target
            for prefix, points in self.links:
                if target.startswith(prefix):
                    return points
            return self.click
        if isinstance(event, Browse):
            return self.products.get(event.product_id, self.browse)
        if isinstance(event, OrderPaid):
            return self.order
        if isinstance(event, OrderRefunded):
            return self.refund
        return 0  # a profile event: no action (the engine does not fold them into scores)

    def condition(self, spec: Condition, comparison: Comparison) -> CompiledCondition:
        if self.half_life_us:
            return DecayingScore(spec, comparison, self)
        span = spec.window.last_days if spec.window is not None else None
        if span is None:  # schemas.tags refuses it: a score without decay is read over a window
            raise ValueError(f"score {self.id!r} does not decay: a condition on it needs a window")
        return WindowedScore(spec, comparison, self, span)

    def value(self, ctx: EvalContext) -> Decimal:
        """This decaying score at ctx.now_us, read once per instant."""
        state = ctx.agg.scores
        if state is None:
            return _ZERO
        days = state.days.get(self.key)
        if days is None:
            return _ZERO
        if state.memo_us != ctx.now_us:
            state.memo.clear()
            state.memo_us = ctx.now_us
        found = state.memo.get(self.key)
        if found is None:
            masses = state.masses_of(self.key)
            found = state.memo[self.key] = decayed(days, ctx.now_us, self.half_life_us, ctx.zone, masses)
        return found


class WindowedScore(CompiledCondition):
    """A score without decay: its points in the last `span` local days, today included."""

    def __init__(self, spec: Condition, comparison: Comparison, score: CompiledScore, span: int) -> None:
        super().__init__(spec)
        self.comparison = comparison
        self.score = score
        self.span = span

    def read(self, ctx: EvalContext) -> int:
        state = ctx.agg.scores
        if state is None:
            return 0
        days = state.days.get(self.score.key)
        if days is None:
            return 0
        first = ctx.today - self.span
        today = ctx.today
        total = 0
        for day, points in days.items():
            if first < day <= today:
                total += points
        return total

    def test(self, observed: Any) -> bool:
        return self.comparison.holds(observed)

    def matches(self, ctx: EvalContext) -> bool:
        return self.comparison.holds(self.read(ctx))


class DecayingScore(CompiledCondition):
    def __init__(self, spec: Condition, comparison: Comparison, score: CompiledScore) -> None:
        super().__init__(spec)
        self.comparison = comparison
        self.score = score
        levels = levels_of(spec)
        op = spec.op
        self.below = float(levels[0]) if op in (Op.GTE, Op.GT, Op.BETWEEN) else _NO_LEVEL
        """The condition holds from this level up (nan: no lower bound)."""
        self.above = float(levels[-1]) if op in (Op.LT, Op.LTE, Op.BETWEEN) else _NO_LEVEL
        """... and below this one (nan: no upper bound)."""

    def read(self, ctx: EvalContext) -> Decimal:
        return self.score.value(ctx)

    def test(self, observed: Any) -> bool:
        return self.comparison.holds(observed)

    def matches(self, ctx: EvalContext) -> bool:
        """Decided on a float approximation when the score is clearly on one side of every level (a
        float is within 1e-15 of the exact score; the margin is 1e-9), else on the exact score."""
        state = ctx.agg.scores
        days = state.days.get(self.score.key) if state is not None else None
        if state is None or days is None:
            return self.comparison.holds(_ZERO)
        approx = _approx(days, ctx.now_us, self.score.half_life_us, ctx.zone, state.approx_of(self.score.key))
        below = self.below
        above = self.above
        if _clear(approx, below) and _clear(approx, above):
            return (below != below or approx >= below) and (above != above or approx < above)
        return self.comparison.holds(self.score.value(ctx))


def _clear(approx: float, level: float) -> bool:
    """Whether `approx` is on the same side of `level` as the exact score (nan: no level)."""
    return level != level or abs(approx - level) > _MARGIN * (abs(approx) + abs(level) + 1.0)


_MARGIN: Final = 1e-9
_NO_LEVEL: Final = float("nan")


class ScoreBook:
    """The rule book's scores: what the fold adds points to."""

    def __init__(self, scores: tuple[CompiledScore, ...]) -> None:
        self.scores = scores
        self.keys = frozenset(score.key for score in scores)


class ScorePlan:
    """When time alone moves the scores that rules read, and which tags read them."""

    def __init__(self, conditions: Iterable[tuple[str, str, CompiledCondition]]) -> None:
        spans: dict[str, set[int]] = {}
        levels: dict[str, set[Decimal]] = {}
        scores: dict[str, CompiledScore] = {}
        tags: dict[str, set[str]] = {}
        for group_id, tag_id, condition in conditions:
            if isinstance(condition, WindowedScore):
                spans.setdefault(condition.score.key, set()).add(condition.span)
                scores[condition.score.key] = condition.score
            elif isinstance(condition, DecayingScore):
                levels.setdefault(condition.score.key, set()).update(levels_of(condition.spec))
                scores[condition.score.key] = condition.score
            else:
                continue
            tags.setdefault(group_id, set()).add(tag_id)
        self.windowed = tuple((scores[key], tuple(sorted(found))) for key, found in sorted(spans.items()))
        self.decaying = tuple((scores[key], tuple(sorted(found))) for key, found in sorted(levels.items()))
        self.tags = {group: frozenset(found) for group, found in tags.items()}
        """Group id -> its tags that read a score time moves."""

    def next_change(self, ctx: EvalContext) -> int | None:
        state = ctx.agg.scores
        if state is None:
            return None
        best: int | None = None
        for score, spans in self.windowed:
            days = state.days.get(score.key)
            at = windowed_next_change(days, ctx, spans) if days is not None else None
            if at is not None and (best is None or at < best):
                best = at
        for score, levels in self.decaying:
            days = state.days.get(score.key)
            if days is None:
                continue
            at = _early(days, ctx.now_us, score.half_life_us, ctx.zone, levels, state.approx_of(score.key))
            if at == EXACT:
                at = next_flip(days, ctx.now_us, score.half_life_us, ctx.zone, levels, state.masses_of(score.key))
            if at is not None and (best is None or at < best):
                best = at
        return best


def fold_scores(agg: Aggregates, book: ScoreBook, event: CustomerEvent, day: int, horizon_days: int) -> bool:
    """Add one counted action (dated on local `day`) to every score it is worth points in; False
    when it is worth none (no score moved). Days more than `horizon_days` before the latest one are
    dropped, as are the points of scores no longer defined (or counting differently now)."""
    state = agg.scores
    if state is None:
        state = agg.scores = ScoreState(top_day=day)
    days_by_key = state.days
    if len(days_by_key) and not book.keys.issuperset(days_by_key):
        for key in [key for key in days_by_key if key not in book.keys]:
            del days_by_key[key]
            state.masses.pop(key, None)
            state.approx.pop(key, None)
    state.memo_us = -1
    if day > state.top_day:
        state.top_day = day
        _prune(state, day - horizon_days + 1)
    elif day <= state.top_day - horizon_days:
        return False  # older than anything kept
    moved = False
    for score in book.scores:
        points = score.points_for(event)
        if points:
            state.forget(score.key, day)
            days = days_by_key.get(score.key)
            if days is None:
                days = days_by_key[score.key] = {}
            left = days.get(day, 0) + points
            if left:
                days[day] = left
            else:
                del days[day]  # a refund that cancels the day's points: nothing left to keep
            moved = True
    return moved


def decayed(
    days: dict[int, int], at_us: int, half_life_us: int, zone: DayZone, masses: dict[int, Decimal] | None = None
) -> Decimal:
    """A decaying score at `at_us`: S(t) above, rounded down to SCORE_PLACES places. `masses`: the
    score's `ScoreState.masses` to read and keep the ended days' mass in."""
    ended, pending = _parts(days, at_us, half_life_us, zone, masses)
    return _MATH.add(ended, Decimal(pending)).quantize(UNIT, rounding=ROUND_FLOOR)


def next_flip(
    days: dict[int, int],
    now_us: int,
    half_life_us: int,
    zone: DayZone,
    levels: tuple[Decimal, ...],
    masses: dict[int, Decimal] | None = None,
) -> int | None:
    """The first whole microsecond after `now_us` at which the decaying score compares differently
    with one of `levels` (None: never, with no new action)."""
    now_sign = _signs(decayed(days, now_us, half_life_us, zone, masses), levels)
    ends = sorted(end for end in (zone.start(day + 1) for day in days) if end > now_us)
    start = now_us
    for index in range(len(ends) + 1):
        stop = ends[index] if index < len(ends) else None
        ended, pending = _parts(days, start, half_life_us, zone, masses)
        found = _crossing(ended, Decimal(pending), start, stop, half_life_us, levels)
        if found is not None:
            return _settle(days, now_us, max(found, now_us + 1), half_life_us, zone, levels, now_sign, masses)
        if stop is None:
            return None
        start = stop
    return None


def windowed_next_change(days: dict[int, int], ctx: EvalContext, spans: tuple[int, ...]) -> int | None:
    """When a windowed score next changes: the local midnight a day leaves (or a future day enters)
    one of the rules' windows."""
    day = next_window_change(days, ctx.today, spans)
    return None if day is None else ctx.zone.start(day)


def score_signature(spec: Score) -> str:
    """A short digest of what a score counts: points, products and links."""
    counted = spec.model_dump_json(include={"points", "products", "links"})
    return hashlib.sha256(counted.encode()).hexdigest()[:8]


def _parts(
    days: dict[int, int], at_us: int, half_life_us: int, zone: DayZone, masses: dict[int, Decimal] | None
) -> tuple[Decimal, int]:
    """(the decayed points of the days ended by `at_us`, the points of the days not ended yet). A day
    has ended when the local day of `at_us` is after it (a day ending exactly at `at_us` has, with a
    factor of exactly 1)."""
    current = zone.day(at_us)
    pending = 0
    found = False
    last = 0
    for day, points in days.items():
        if day >= current:
            pending += points
        elif not found or day > last:
            last = day
            found = True
    if not found:
        return _ZERO, pending
    mass = _mass(days, last, half_life_us, zone, masses)
    return _MATH.multiply(mass, _halved(at_us - zone.start(last + 1), half_life_us)), pending


def _mass(
    days: dict[int, int], last: int, half_life_us: int, zone: DayZone, masses: dict[int, Decimal] | None
) -> Decimal:
    """The mass of the days up to `last` as of its end, day by day: the first day's points, then at
    each later day the mass so far halved over the time between the two days' ends, plus that day's
    points. Continued from the latest mass kept in `masses` at or before `last`, and kept there."""
    if masses is not None:
        kept = masses.get(last)
        if kept is not None:
            return kept
    ordered = sorted(day for day in days if day <= last)
    start = 0
    mass = _ZERO
    previous_end = 0
    if masses is not None:
        for index in range(len(ordered) - 1, -1, -1):
            kept = masses.get(ordered[index])
            if kept is not None:
                start = index + 1
                mass = kept
                previous_end = zone.start(ordered[index] + 1)
                break
    for index in range(start, len(ordered)):
        day = ordered[index]
        end = zone.start(day + 1)
        if index:
            mass = _MATH.multiply(mass, _halved(end - previous_end, half_life_us))
        mass = _MATH.add(mass, Decimal(days[day]))
        previous_end = end
        if masses is not None:
            masses[day] = mass
    return mass


def _early(
    days: dict[int, int],
    now_us: int,
    half_life_us: int,
    zone: DayZone,
    levels: tuple[Decimal, ...],
    approx: dict[int, float],
) -> int | None:
    """A wake-up EARLY_US before a float estimate of the first crossing of a level, when that is
    further away (the exact instant is solved at that wake-up: a wake-up per flip, no decimal
    arithmetic per action); None: no crossing; EXACT: the exact solution is needed now (the score
    near a level where a piece starts, or the crossing close)."""
    ends = sorted(zone.start(day + 1) for day in days if zone.start(day + 1) > now_us)
    start = now_us
    for index in range(len(ends) + 1):
        stop = ends[index] if index < len(ends) else None
        ended, pending = _approx_parts(days, start, half_life_us, zone, approx)
        best = -1.0
        for level in levels:
            target = float(level)
            if not _clear(ended + pending, target):
                return EXACT
            gap = target - pending
            if ended and gap and (gap > 0) == (ended > 0) and abs(gap) < abs(ended):
                at = start + half_life_us * math.log2(ended / gap)
                if (stop is None or at < stop) and (best < 0 or at < best):
                    best = at
        if best >= 0:
            early = int(best) - EARLY_US
            return early if early > now_us else EXACT
        if stop is None:
            return None
        start = stop
    return None


EXACT: Final = -1
EARLY_US: Final = 1_000_000
"""How long before a float estimate of a flip the exact instant is solved: far more than a float's
error in it (under a microsecond for the longest half-life)."""


def _approx_parts(
    days: dict[int, int], at_us: int, half_life_us: int, zone: DayZone, approx: dict[int, float]
) -> tuple[float, int]:
    """`_parts` in floats."""
    current = zone.day(at_us)
    pending = 0
    found = False
    last = 0
    for day, points in days.items():
        if day >= current:
            pending += points
        elif not found or day > last:
            last = day
            found = True
    if not found:
        return 0.0, pending
    mass = approx.get(last)
    if mass is None:
        mass = 0.0
        previous_end = 0
        for index, day in enumerate(sorted(day for day in days if day <= last)):
            end = zone.start(day + 1)
            mass = (mass * 2.0 ** (-(end - previous_end) / half_life_us) if index else 0.0) + days[day]
            previous_end = end
        approx[last] = mass
    return mass * 2.0 ** (-(at_us - zone.start(last + 1)) / half_life_us), pending


def _approx(days: dict[int, int], at_us: int, half_life_us: int, zone: DayZone, approx: dict[int, float]) -> float:
    ended, pending = _approx_parts(days, at_us, half_life_us, zone, approx)
    return ended + pending


def _halved(age_us: int, half_life_us: int) -> Decimal:
    """2 ** (-age / h) for age >= 0: 2 ** -q exactly for the whole half-lives q in it, times
    exp(-(r / h) * ln 2) for the rest r, if any (exp is far cheaper than a fractional power, and
    whole half-lives stay exact: 10 points are exactly 5 one half-life later)."""
    whole, rest = divmod(age_us, half_life_us)
    factor = _MATH.power(_TWO, -whole) if whole else _ONE
    if rest:
        fraction = _MATH.exp(_MATH.divide(_MATH.multiply(Decimal(-rest), _LN2), Decimal(half_life_us)))
        factor = _MATH.multiply(factor, fraction)
    return factor


def _crossing(
    ended: Decimal, pending: Decimal, start: int, stop: int | None, half_life_us: int, levels: tuple[Decimal, ...]
) -> int | None:
    """The earliest instant in [start, stop) at which `pending + ended * 2 ** (-(t - start) / h)`
    reaches one of `levels` (`levels_of`). Rounded up to a microsecond."""
    if not ended:
        return None
    best: int | None = None
    for level in levels:
        gap = _MATH.subtract(level, pending)
        if not gap or (gap > 0) != (ended > 0) or abs(gap) > abs(ended):
            continue  # the decaying part never reaches it: it only shrinks towards 0
        elapsed = _MATH.divide(_MATH.multiply(Decimal(half_life_us), _MATH.ln(_MATH.divide(ended, gap))), _LN2)
        at = start + int(elapsed.to_integral_value(rounding=ROUND_CEILING))
        if (stop is None or at < stop) and (best is None or at < best):
            best = at
    return best


def _settle(
    days: dict[int, int],
    now_us: int,
    at: int,
    half_life_us: int,
    zone: DayZone,
    levels: tuple[Decimal, ...],
    now_sign: tuple[bool, ...],
    masses: dict[int, Decimal] | None,
) -> int:
    """The solved instant `at`, moved to the first microsecond after `now_us` at which the rounded
    score compares differently with a level: the rounded score decides, not the solution."""
    steps = 0
    while steps < _REFINE_STEPS and _signs(decayed(days, at, half_life_us, zone, masses), levels) == now_sign:
        at += 1
        steps += 1
    while (
        steps < 2 * _REFINE_STEPS
        and at - 1 > now_us
        and _signs(decayed(days, at - 1, half_life_us, zone, masses), levels) != now_sign
    ):
        at -= 1
        steps += 1
    return at


def _signs(value: Decimal, levels: tuple[Decimal, ...]) -> tuple[bool, ...]:
    return tuple([value >= level for level in levels])


def _prune(state: ScoreState, first_kept_day: int) -> None:
    state.masses.clear()
    state.approx.clear()
    for key in list(state.days):
        days = state.days[key]
        for day in [day for day in days if day < first_kept_day]:
            del days[day]
        if not days:
            del state.days[key]


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
