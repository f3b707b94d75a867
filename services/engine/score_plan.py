"""When time alone moves the behaviour scores that rules read (`scores.py`), and which tags read them.

Two `due` families, so that a wake-up evaluates only what moved:
- SCORE_WINDOW: a windowed score changes at the local midnight a day leaves one of its windows (or a
  future-dated day enters them). Which windows change is known at that midnight from the score's
  days, and only the tags reading those windows are evaluated. An action moves this instant only by
  adding a day: the earlier of the instant kept and the new day's own (`next_change_for_day`).
- SCORE_TIME: a decaying score crosses one of the levels its conditions compare it with, at an instant
  solved exactly (`decay.next_flip`), solved again whenever its points change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import ROUND_FLOOR, Decimal
from typing import Final

from services.engine.conditions import CompiledCondition
from services.engine.decay import Decaying, flip_split
from services.engine.score_state import DECAY_MOVED, WINDOW_DAY, WINDOW_GONE, split_of
from services.engine.scores import SCORE_TIME, SCORE_WINDOW, CompiledScore, DecayingScore, WindowedScore, levels_of
from services.engine.state import CustomerState, earliest
from services.engine.windows import EvalContext, next_window_change

Fired = tuple[str, tuple[int, ...], bool]
"""`schedule.Fired` for the scores: (family, the windows that change as indexes into `ScorePlan.slots`,
whether a day enters them)."""

_DECAY_FIRED: Final[Fired] = (SCORE_TIME, (), False)

Readers = Mapping[str, frozenset[str]]
"""Group id -> ids of its tags that read a given input."""


class ScorePlan:
    """The scores the rules read, their windows and levels, and the tags reading each."""

    def __init__(self, read: Iterable[tuple[str, str, CompiledCondition]]) -> None:
        conditions = list(read)
        spans: dict[str, set[int]] = {}
        points: dict[tuple[str, int], set[int]] = {}
        levels: dict[str, set[Decimal]] = {}
        scores: dict[str, CompiledScore] = {}
        window_readers: dict[tuple[str, int], dict[str, set[str]]] = {}
        decay_readers: dict[str, set[str]] = {}
        for group_id, tag_id, condition in conditions:
            if isinstance(condition, WindowedScore):
                key = condition.score.key
                spans.setdefault(key, set()).add(condition.span)
                points.setdefault((key, condition.span), set()).update(sum_change_points(condition))
                window_readers.setdefault((key, condition.span), {}).setdefault(group_id, set()).add(tag_id)
            elif isinstance(condition, DecayingScore):
                levels.setdefault(condition.score.key, set()).update(levels_of(condition.spec))
                decay_readers.setdefault(group_id, set()).add(tag_id)
            else:
                continue
            scores[condition.score.key] = condition.score
        self.windowed = tuple((scores[key], tuple(sorted(found))) for key, found in sorted(spans.items()))
        slots: list[tuple[str, int]] = []
        for score, ordered in self.windowed:
            score.spans = ordered
            score.levels = tuple(tuple(sorted(points[(score.key, span)])) for span in ordered)
            score.first_slot = len(slots)
            slots.extend((score.key, span) for span in ordered)
        for _, _, condition in conditions:
            if isinstance(condition, WindowedScore):
                condition.index = condition.score.spans.index(condition.span)
        self.slots = tuple(slots)
        """Every (score key, window) some condition reads: what a window wake-up names by index."""
        self.slot_readers: tuple[Readers, ...] = tuple(_frozen(window_readers[slot]) for slot in slots)
        self.decaying = tuple(
            (scores[key], tuple(sorted(found)), tuple(float(level) for level in sorted(found)))
            for key, found in sorted(levels.items())
        )
        """(score, its levels ascending, the same as floats)."""
        for score, _, floats in self.decaying:
            score.decay_levels = floats
        self.singles = tuple(
            tuple(((level,), (level_f,)) for level, level_f in zip(ordered, floats, strict=True))
            for _, ordered, floats in self.decaying
        )
        """Per decaying score, each level alone: what `next_flip` solves for a score that only falls."""
        self.decay_readers: Readers = _frozen(decay_readers)
        """Group id -> its tags that read a decaying score."""

    def families(self) -> tuple[str, ...]:
        return ((SCORE_WINDOW,) if self.windowed else ()) + ((SCORE_TIME,) if self.decaying else ())

    def reschedule(self, state: CustomerState, ctx: EvalContext, rescheduled: int, day: int) -> None:
        """After an action moved scores (`fold_scores`' `rescheduled`; `day`: the action's). A decaying
        score's next crossing moves with its points only: solved again. A windowed score's next change
        moves earlier only by a new day: the earlier of the change kept and the day's own; a day removed
        (its points cancelled) may move it later: found again over all days."""
        due = state.due
        if rescheduled & DECAY_MOVED and self.decaying:
            before = due.get(SCORE_TIME)
            at = self.next_flip(ctx)
            if at is None:
                if before is not None:
                    del due[SCORE_TIME]
                    state.next_at = earliest(due)
            else:
                due[SCORE_TIME] = at
                if state.next_at is None or at <= state.next_at:
                    state.next_at = at
                elif before == state.next_at:  # the earliest instant moved later: find the new one
                    state.next_at = earliest(due)
        if rescheduled & WINDOW_GONE and self.windowed:
            # rare (a refund cancelling a day's points): found again over every day, so that no wake-up
            # is kept for a change that will not come
            at = self.next_window_change(ctx)
            if at is None:
                due.pop(SCORE_WINDOW, None)
            else:
                due[SCORE_WINDOW] = at
            state.next_at = earliest(due)
        elif rescheduled & WINDOW_DAY and self.windowed:
            at = self.next_change_for_day(day, ctx)
            if at is not None:
                current = due.get(SCORE_WINDOW)
                if current is None or at < current:
                    due[SCORE_WINDOW] = at
                    if state.next_at is None or at < state.next_at:
                        state.next_at = at

    def next_window_change(self, ctx: EvalContext) -> int | None:
        """The first local midnight after ctx.now_us at which a windowed score's window sum changes."""
        state = ctx.agg.scores
        if state is None:
            return None
        best: int | None = None
        for score, spans in self.windowed:
            days = state.days.get(score.key)
            day = next_window_change(days, ctx.today, spans) if days is not None else None
            if day is not None and (best is None or day < best):
                best = day
        return None if best is None else ctx.zone.start(best)

    def next_change_for_day(self, day: int, ctx: EvalContext) -> int | None:
        """`next_window_change` as far as the points of local `day` alone go: the windowed scores'
        next change is the earliest of their days' own, so a new day moves it at most to this."""
        state = ctx.agg.scores
        if state is None:
            return None
        best: int | None = None
        single = {day: 1}
        for score, spans in self.windowed:
            days = state.days.get(score.key)
            if days is not None and day in days:
                found = next_window_change(single, ctx.today, spans)
                if found is not None and (best is None or found < best):
                    best = found
        return None if best is None else ctx.zone.start(best)

    def next_flip(self, ctx: EvalContext) -> int | None:
        """The first instant after ctx.now_us at which a decaying score crosses a level some condition
        compares it with."""
        state = ctx.agg.scores
        if state is None:
            return None
        best: int | None = None
        now_us = ctx.now_us
        today = ctx.today
        for position, (score, levels, floats) in enumerate(self.decaying):
            days = state.days.get(score.key)
            if days is None:
                continue
            derived = state.decay_of(score.key, score.half_life_us)
            decaying = Decaying(days, score.half_life_us, ctx.zone, derived.masses, derived.approx)
            split = split_of(derived, days, today)
            if split.monotonic:
                # S only falls until the next action: its next flip is the fall below the highest
                # level it reaches now (it never reaches those above again, and meets the others later)
                reading = score.approximate_in(derived, days, ctx)
                found = (reading.value, reading.error)
                top = len(levels) - 1
                while top >= 0 and not decaying.compare(found, now_us, levels[top], floats[top]):
                    top -= 1
                if top < 0:
                    continue  # below every level: no flip without an action
                coming = [today] if split.pending else []
                level, level_f = self.singles[position][top]
                at = flip_split(decaying, now_us, level, level_f, split.pending, split.last, split.found, coming)
            else:
                coming = sorted([day for day in days if day >= today])
                at = flip_split(decaying, now_us, levels, floats, split.pending, split.last, split.found, coming)
            if at is not None and (best is None or at < best):
                best = at
        return best

    def window_fired(self, ctx: EvalContext) -> Fired | None:
        """The windows whose sums change exactly at ctx.now_us (None: none): at a local midnight, a
        window loses the day `span` days back and every window gains today's, if the score has them."""
        state = ctx.agg.scores
        today = ctx.today
        if state is None or ctx.zone.start(today) != ctx.now_us:
            return None
        hits: list[int] = []
        entering = False
        for score, spans in self.windowed:
            days = state.days.get(score.key)
            if days is None:
                continue
            enters = today in days
            entering = entering or enters
            for position in range(len(spans)):
                if enters or today - spans[position] in days:
                    hits.append(score.first_slot + position)
        return (SCORE_WINDOW, tuple(hits), entering) if hits else None

    def decay_fired(self) -> Fired:
        """A decaying score's wake-up: it is scheduled at a crossing, the scores are read anew."""
        return _DECAY_FIRED


def sum_change_points(condition: WindowedScore) -> set[int]:
    """The whole sums n at which the condition reads differently from n - 1 (a windowed score is a
    sum of whole points): found with the condition's own comparison around each of its values."""
    value = condition.spec.value
    values = value if isinstance(value, list) else [value]
    found: set[int] = set()
    for number in values:
        low = int(Decimal(number).to_integral_value(rounding=ROUND_FLOOR))
        for candidate in (low - 1, low, low + 1, low + 2):
            if condition.comparison.holds(candidate - 1) != condition.comparison.holds(candidate):
                found.add(candidate)
    return found


def _frozen(readers: dict[str, set[str]]) -> Readers:
    return {group: frozenset(tags) for group, tags in readers.items()}
