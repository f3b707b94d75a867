"""A customer's behaviour scores (`scores.py`): the points kept per score and local day, and the fold
that adds an action's points to them.

The points are integers and the fold is a sum, so the state depends only on the set of distinct
actions, whatever their order (de-duplication is the aggregates' own: a score counts an action
exactly when the aggregates count it). Days are kept for `horizon_days` back from the latest scored
day, like browse and click buckets. What is derived from the points (masses, memos, sums) is kept
beside them while they stay as they are, and never stored.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Final, cast

from schemas.events import Browse, Click
from services.engine.aggregates import Aggregates, CustomerEvent
from services.engine.decay import Decaying, approx_split, decide
from services.engine.decay_mass import ULP, Approx
from services.engine.zone import DayZone

if TYPE_CHECKING:
    from services.engine.scores import ScoreBook

CLICK: Final = 0
BROWSE: Final = 1
ORDER: Final = 2
REFUND: Final = 3
"""The kinds of action a score gives points for (`CompiledScore.points`)."""
DECAY_MOVED: Final = 1
WINDOW_DAY: Final = 2
WINDOW_GONE: Final = 4
"""A windowed score lost a day (a refund cancelled its points): its next change may come later."""
"""What `fold_scores` says to reschedule: a decaying score's crossing, a windowed score's next change."""


class Reading:
    """A decaying score approximated at one instant (`decay.approx`): its value within its error."""

    __slots__ = ("at_us", "error", "value")

    def __init__(self) -> None:
        self.at_us = -1
        """When it was read (-1: not since the points changed)."""
        self.value = 0.0
        self.error = 0.0


class Split:
    """A decaying score's days as seen on one local day `day` (`decay_mass.split`): the points of the
    days not ended by then, the latest ended day, and whether the score can only fall until its next
    action (every day's points positive, none dated after `day`). Kept by the fold while the actions
    are dated `day` or later, so that reading the score costs no pass over its days."""

    __slots__ = ("day", "found", "last", "monotonic", "pending")

    def __init__(self, days: dict[int, int], current: int) -> None:
        self.day = current
        pending = 0
        last = 0
        found = False
        monotonic = True
        for day, points in days.items():
            if points <= 0:
                monotonic = False
            if day >= current:
                pending += points
                if day > current:
                    monotonic = False  # a future day: more pieces than `ScorePlan.next_flip`'s quick path reads
            elif not found or day > last:
                last = day
                found = True
        self.pending = pending
        self.last = last
        self.found = found
        self.monotonic = monotonic


class Derived:
    """What is derived from one score's points, kept beside them while they stay as they are: one
    lookup per score where each would be a dictionary of its own."""

    __slots__ = ("approx", "half_life_us", "masses", "reading", "split", "sums", "sums_day", "sums_spans")

    def __init__(self) -> None:
        self.reading = Reading()
        """A decaying score as last approximated: read once per instant."""
        self.split: Split | None = None
        """A decaying score's days split at the local day last read."""
        self.masses: dict[int, Decimal] = {}
        """Latest ended day -> the decayed points of the days up to it, as of that day's end: kept
        while those days' points stay as they are (most actions are today's, which has not ended)."""
        self.approx: dict[int, Approx] = {}
        """The same masses as floats with their error bounds."""
        self.half_life_us = 0
        """The half-life the reading and masses were computed with (a changed definition may change
        it and keep the points)."""
        self.sums: list[int] | None = None
        self.sums_day = -1
        self.sums_spans: tuple[int, ...] = ()
        """A windowed score summed on local day `sums_day`, one sum per window of `sums_spans` (the
        score's `CompiledScore.spans`, compared by identity: a changed definition reads anew): summed
        in one pass on the first read of a day, then kept by the fold."""


class ScoreState:
    """A customer's points per score (`CompiledScore.key`) and local day, and the latest scored day.
    The aggregates' one slot for scores: None for customers of a shop that defines none. Everything
    but `days` and `top_day` is derived, never stored, and dropped when the points change."""

    __slots__ = ("book", "days", "derived", "top_day")

    def __init__(self, days: dict[str, dict[int, int]] | None = None, top_day: int = 0) -> None:
        self.days: dict[str, dict[int, int]] = {} if days is None else days
        self.top_day = top_day
        """The latest local day of an action while scores were defined: days up to `horizon_days`
        before it are kept."""
        self.derived: dict[str, Derived] = {}
        """By score key: what is derived from its points."""
        self.book: ScoreBook | None = None
        """The score book whose scores alone `days` holds (None: not checked yet)."""

    def of(self, key: str) -> Derived:
        found = self.derived.get(key)
        if found is None:
            found = self.derived[key] = Derived()
        return found

    def decay_of(self, key: str, half_life_us: int) -> Derived:
        """`of` for a decaying score read with `half_life_us`: what was computed with another is dropped."""
        found = self.of(key)
        if found.half_life_us != half_life_us:
            found.half_life_us = half_life_us
            found.reading.at_us = -1
            found.masses = {}
            found.approx = {}
        return found

    def split(self, key: str, days: dict[int, int], current: int) -> Split:
        """The days of score `key` split at local day `current`."""
        return split_of(self.of(key), days, current)

    def decaying(self, key: str, half_life_us: int, zone: DayZone) -> Decaying | None:
        """The score `key` as `decay.py` reads it (None: no points)."""
        days = self.days.get(key)
        if days is None:
            return None
        derived = self.decay_of(key, half_life_us)
        return Decaying(days, half_life_us, zone, derived.masses, derived.approx)

    def changed(self, derived: Derived, day: int, points: int, left: int) -> None:
        """Forget what was derived from a decaying score's points, whose `day` just gained `points`
        (`left` in all): the masses are kept for days before it, the split moved along if `day` is
        not ended."""
        derived.reading.at_us = -1
        split = derived.split
        if split is not None:
            if day < split.day:  # an ended day: the latest ended day may move
                derived.split = None
            else:
                split.pending += points
                if day > split.day or left <= 0:
                    split.monotonic = False
        masses = derived.masses
        if masses:
            if day >= self.top_day:  # kept for days with points, none after the latest: only `day`'s
                masses.pop(day, None)
            else:
                for last in [last for last in masses if last >= day]:
                    del masses[last]
        approx = derived.approx
        if approx:
            if day >= self.top_day:
                approx.pop(day, None)
            else:
                for last in [last for last in approx if last >= day]:
                    del approx[last]


def split_of(derived: Derived, days: dict[int, int], current: int) -> Split:
    """A score's `days` split at local day `current`, kept in `derived`."""
    found = derived.split
    if found is None or found.day != current:
        found = derived.split = Split(days, current)
    return found


def fold_scores(
    agg: Aggregates,
    book: ScoreBook,
    kind: int,
    event: CustomerEvent,
    day: int,
    now_us: int,
    zone: DayZone,
    horizon_days: int,
) -> tuple[int, int]:
    """Add one counted action of `kind` (dated on local `day`, read at `now_us`) to every score it is
    worth points in. Returns (moved, rescheduled).

    `moved`: the scores whose conditions may read differently now: bit 2i when the i-th of
    `book.scores` gained points, 2i + 1 when it lost some. A score is in it only when it may have
    crossed a level some condition reads (a windowed score whose sums are kept for today,
    `CompiledScore.levels`; a decaying score gaining points on a day not ended, `decay_levels`): no
    condition on it can have changed otherwise. `rescheduled`: DECAY_MOVED when a decaying score's points changed
    (its next crossing moved), WINDOW_DAY when a windowed score gained a day (its windows' next change
    may come earlier), WINDOW_GONE when one lost a day (it may come later). Days more than
    `horizon_days` before the latest one are dropped, as are the points of scores no longer defined (or
    counting differently now)."""
    today = zone.day(now_us)
    state = agg.scores
    if state is None:
        state = agg.scores = ScoreState(top_day=day)
    if state.book is not book:
        adopt(state, book)
    moved = 0
    rescheduled = 0
    if day > state.top_day:
        state.top_day = day
        pruned = _prune(state, day - horizon_days + 1)
        if pruned:  # points dropped past the horizon move a decaying score either way (no window holds them)
            for position, score in enumerate(book.scores):
                if score.half_life_us and score.key in pruned:
                    moved |= 3 << (2 * position)
                    rescheduled |= DECAY_MOVED
    elif day <= state.top_day - horizon_days:
        return 0, 0  # older than anything kept
    name = ""
    if kind == CLICK and book.links:
        name = cast(Click, event).target
    elif kind == BROWSE and book.products:
        name = cast(Browse, event).product_id
    days_by_key = state.days
    for position, score in book.by_kind[kind]:
        points = score.points(kind, name)
        if not points:
            continue
        key = score.key
        days = days_by_key.get(key)
        if days is None:
            days = days_by_key[key] = {}
        derived = state.decay_of(key, score.half_life_us) if score.half_life_us else state.of(key)
        found: Approx | None = None
        if score.half_life_us and day >= today and score.decay_levels:
            # points of a day not ended count in full at once: S(now) moves by exactly `points`
            found = _read_now(derived, days, score.half_life_us, now_us, today, zone)
        before = days.get(day, 0)
        left = before + points
        if left:
            days[day] = left
        else:
            del days[day]  # a refund that cancels the day's points: nothing left to keep
        bits = (1 if points > 0 else 2) << (2 * position)
        if score.half_life_us:
            state.changed(derived, day, points, left)
            rescheduled |= DECAY_MOVED
            if found is None or _crossed(derived.reading, found, points, now_us, score.decay_levels):
                moved |= bits
            continue
        if not before:
            rescheduled |= WINDOW_DAY
        elif not left:
            rescheduled |= WINDOW_GONE
        sums = derived.sums
        if sums is not None and derived.sums_spans is not score.spans:
            sums = derived.sums = None  # summed for windows a changed definition no longer reads
        if sums is not None and derived.sums_day == today:
            if add_to_windows(sums, score.spans, score.levels, today - day, points):
                moved |= bits
        else:
            if sums is not None:  # kept for another day: in step, though not what today reads
                add_to_windows(sums, score.spans, score.levels, derived.sums_day - day, points)
            if score.spans:
                moved |= bits  # not summed today: whether it crossed a level is not known
    return moved, rescheduled


def _read_now(
    derived: Derived,
    days: dict[int, int],
    half_life_us: int,
    now_us: int,
    today: int,
    zone: DayZone,
) -> Approx:
    """A decaying score at `now_us` in floats (`decay.approx`), read once per instant."""
    reading = derived.reading
    if reading.at_us == now_us:
        return (reading.value, reading.error)
    split = split_of(derived, days, today)
    return approx_split(days, now_us, half_life_us, zone, derived.approx, split.pending, split.last, split.found)


def _crossed(reading: Reading, before: Approx, points: int, now_us: int, levels: tuple[float, ...]) -> bool:
    """Whether S, `before` at `now_us` and now `points` more, may have crossed one of `levels`; the new
    value is kept as the score's `reading` at `now_us` (what the evaluation and the next flip read)."""
    value = before[0] + points
    after = (value, before[1] + abs(value) * ULP)  # the sum's own rounding
    reading.value, reading.error = after
    reading.at_us = now_us
    for level in levels:
        was = decide(before, level)
        if was < 0 or was != decide(after, level):
            return True
    return False


def add_to_windows(
    sums: list[int], spans: tuple[int, ...], levels: tuple[tuple[int, ...], ...], age: int, points: int
) -> bool:
    """Add points earned `age` days before the sums' day to the windows (`spans`) that hold it.
    Whether a sum crossed one of its window's `levels` (a sum n at which a condition reads
    differently from n - 1)."""
    crossed = False
    if age >= 0:
        for position in range(len(spans)):
            if age < spans[position]:
                before = sums[position]
                after = before + points
                sums[position] = after
                if not crossed:
                    low, high = (before, after) if points > 0 else (after, before)
                    for level in levels[position]:
                        if low < level <= high:
                            crossed = True
                            break
    return crossed


def adopt(state: ScoreState, book: ScoreBook) -> None:
    """Keep only the points of the scores `book` defines (once per state and book). A score kept
    under another key while it counts alike (`scores.key_base`: per group, as every score was before
    groups defining one alike shared it, or shared until a second decay set them apart) takes the
    points of that key: of the one with most days, if several (the same actions folded since the
    earliest of their definitions)."""
    days_by_key = state.days
    keys = book.keys
    if len(days_by_key) and not keys.issuperset(days_by_key):
        stale = sorted([key for key in days_by_key if key not in keys], key=lambda key: (-len(days_by_key[key]), key))
        for key in sorted(keys.difference(days_by_key)):
            base = key_base(key)
            for old in stale:
                if key_base(old) == base:
                    days_by_key[key] = dict(days_by_key[old])
                    state.derived.pop(key, None)
                    break
        for key in stale:
            del days_by_key[key]
            state.derived.pop(key, None)
    state.book = book


def key_base(key: str) -> str:
    """A score key without its group, if it has one: what the score counts, whichever groups read it."""
    return key.partition("/")[2] or key


def _prune(state: ScoreState, first_kept_day: int) -> set[str]:
    """Drop the days before `first_kept_day`; the keys of the scores that lost some."""
    pruned: set[str] = set()
    for key in list(state.days):
        days = state.days[key]
        old = [day for day in days if day < first_kept_day]
        if not old:
            continue
        pruned.add(key)
        for day in old:
            del days[day]
        state.derived.pop(key, None)
        if not days:
            del state.days[key]
    return pruned
