"""A decaying score's arithmetic (`scores.py`): its value, whether it reaches a level, and the instant
it next crosses one.

A decaying score with half-life h, read at instant t, is

    S(t) = sum over days d of  points(d) * 2 ** (-max(0, t - end(d)) / h)

where end(d) is the local midnight that ends day d: an action's points count in full for the rest
of its day, then halve every h. It is the points of the days not ended yet plus M * 2 ** (-(t - e) / h),
where e is the end of the latest ended day and M the ended days' mass at e, built day by day in day
order and kept per day (an evaluation costs one power, not one per day). The score as rules and
reasons read it is S rounded down to SCORE_PLACES decimal places; a level L of a condition is on
that grid, so "the rounded score >= L" is "S >= L".

What is decided is the exact S, whichever arithmetic decides it. Floats first: S in floats with a
bound on their error (`approx`: the rounding of each operation, a power's error growing with its
exponent), which decides a comparison or the rounded value whenever S is further than the bound from
the level or the grid line, as it is almost always (a float is within ~1e-15 of S, a flip's instant
within a microsecond of S's crossing). Only within the bound is S computed in `decimal` at 28
significant digits (`exact`): the same digits on every platform, where a float's pow comes from the
C library, so live and replay agree exactly. (Exact to those 28 digits: S is a sum of powers of
two, and when whole points sit on a level at a microsecond while a day dozens of half-lives old
still adds ~1e-29, the tie is decided at those digits, as any finite precision would decide some.)

Between two day ends the decaying part is one exponential, monotonic, so the instant S crosses L
(L = C + E * 2 ** (-x / h), C the points not yet decaying, E the decaying part at the start e of the
piece) is x = h * log2(E / (L - C)) after e: a float candidate, settled on the first whole
microsecond at which the comparison with L decided as above differs (`next_flip`). A flip is solved
once, when the score or time moves it, and scheduled at its own microsecond.
"""

from __future__ import annotations

import math
from decimal import ROUND_FLOOR, Decimal
from typing import Final

from schemas.limits import SCORE_PLACES
from services.engine.decay_mass import MATH, ULP, Approx, approx_mass, halved, mass_of, split
from services.engine.zone import DayZone

UNIT: Final = Decimal(1).scaleb(-SCORE_PLACES)
_SCALE: Final = 10.0**SCORE_PLACES
_UNDERFLOW: Final = 2.0**-1000
"""Above what a power and a product lose to underflow, relative to the mass they scale (< 2 ** -1021)."""


def exact(days: dict[int, int], at_us: int, half_life_us: int, zone: DayZone, masses: dict[int, Decimal]) -> Decimal:
    """S at `at_us` in decimals, rounded down to SCORE_PLACES places. `masses`: the score's kept
    masses of ended days, read and extended."""
    current = zone.day(at_us)
    pending, last, found = split(days, current)
    if not found:
        return Decimal(pending).quantize(UNIT, rounding=ROUND_FLOOR)
    mass = mass_of(days, last, half_life_us, zone, masses)
    ended = MATH.multiply(mass, halved(at_us - zone.start(last + 1), half_life_us))
    return MATH.add(ended, Decimal(pending)).quantize(UNIT, rounding=ROUND_FLOOR)


def approx(days: dict[int, int], at_us: int, half_life_us: int, zone: DayZone, masses: dict[int, Approx]) -> Approx:
    """S at `at_us` in floats, with its error bound. `masses`: the float twins of `exact`'s."""
    pending, last, found = split(days, zone.day(at_us))
    return approx_split(days, at_us, half_life_us, zone, masses, pending, last, found)


def approx_split(
    days: dict[int, int],
    at_us: int,
    half_life_us: int,
    zone: DayZone,
    masses: dict[int, Approx],
    pending: int,
    last: int,
    found: bool,
) -> Approx:
    """`approx` given the days split at the local day of `at_us` (`decay_mass.split`'s three values)."""
    if not found:
        return float(pending), 0.0  # whole points: exact
    mass, error = approx_mass(days, last, half_life_us, zone, masses)
    return _decayed(mass, error, pending, at_us - zone.start(last + 1), half_life_us)


def _decayed(mass: float, error: float, pending: int, age_us: int, half_life_us: int) -> Approx:
    """pending + mass * 2 ** (-age / h), and its error bound: `error` scaled, the power's own error
    (growing with its exponent), the sum's rounding. A bound of 0 means exact: whole points at age 0."""
    if not age_us:
        value = mass + pending
        if not error and mass.is_integer():
            return value, 0.0  # whole numbers far below 2 ** 53: the sum is exact
        return value, error + abs(value) * ULP
    exponent = age_us / half_life_us
    factor = 2.0**-exponent
    part = mass * factor
    value = part + pending
    # the relative bounds fail where the power underflows (to a subnormal or to 0: -18 points two
    # months on at a one-hour half-life read exactly 0.0): an absolute term covers what is lost there,
    # far below any other term elsewhere
    return value, error * factor + (abs(part) * (exponent + 6.0) + abs(value)) * ULP + abs(mass) * _UNDERFLOW


def decide(found: Approx, level: float) -> int:
    """1 when the approximated S is surely at least `level`, 0 surely below, -1 too close to tell."""
    value, error = found
    margin = 2.0 * error + abs(level) * ULP
    if value - level > margin:
        return 1
    if level - value > margin:
        return 0
    return -1


def rounded(found: Approx) -> Decimal | None:
    """The rounded score when the approximation settles it (None: S is too close to a grid line)."""
    value, error = found
    if not error:  # the float is S itself
        return Decimal(value).quantize(UNIT, rounding=ROUND_FLOOR)
    scaled = value * _SCALE
    floor = math.floor(scaled)
    margin = (2.0 * error + abs(value) * ULP) * _SCALE + (abs(scaled) + 1.0) * ULP
    if scaled - margin >= floor and scaled + margin < floor + 1:
        return Decimal(floor).scaleb(-SCORE_PLACES)
    return None


class Decaying:
    """One customer's decaying score as `next_flip` reads it: its days, half-life and kept masses."""

    __slots__ = ("approx_masses", "days", "half_life_us", "masses", "zone")

    def __init__(
        self,
        days: dict[int, int],
        half_life_us: int,
        zone: DayZone,
        masses: dict[int, Decimal],
        approx_masses: dict[int, Approx],
    ) -> None:
        self.days = days
        self.half_life_us = half_life_us
        self.zone = zone
        self.masses = masses
        self.approx_masses = approx_masses

    def at_least(self, at_us: int, level: Decimal, level_f: float) -> bool:
        """Whether S >= level at `at_us`, exactly: floats when they tell, else decimals."""
        found = approx(self.days, at_us, self.half_life_us, self.zone, self.approx_masses)
        return self.compare(found, at_us, level, level_f)

    def compare(self, found: Approx, at_us: int, level: Decimal, level_f: float) -> bool:
        """`at_least` from S approximated at `at_us` already."""
        decided = decide(found, level_f)
        if decided >= 0:
            return decided == 1
        if not found[1]:
            return Decimal(found[0]) >= level  # the float is S itself
        return exact(self.days, at_us, self.half_life_us, self.zone, self.masses) >= level


def next_flip(score: Decaying, now_us: int, levels: tuple[Decimal, ...], floats: tuple[float, ...]) -> int | None:
    """The first whole microsecond after `now_us` at which S compares differently with one of
    `levels` (`floats`: the same as floats); None: never, without a new action."""
    days = score.days
    current = score.zone.day(now_us)
    pending, last, found = split(days, current)
    coming = sorted([day for day in days if day >= current])
    return flip_split(score, now_us, levels, floats, pending, last, found, coming)


def flip_split(
    score: Decaying,
    now_us: int,
    levels: tuple[Decimal, ...],
    floats: tuple[float, ...],
    pending: int,
    last: int,
    found: bool,
    coming: list[int],
) -> int | None:
    """`next_flip` given the days split at the local day of `now_us` (`decay_mass.split`'s three values) and
    the days not ended yet, ascending."""
    days = score.days
    zone = score.zone
    piece = _Piece(score)
    piece.pending = pending
    if found:
        piece.mass, piece.error = approx_mass(days, last, score.half_life_us, zone, score.approx_masses)
        piece.start = zone.start(last + 1)
    for index in range(len(coming) + 1):
        stop = zone.start(coming[index] + 1) if index < len(coming) else None
        if found:  # a piece [start, stop) in which S = pending + mass * 2 ** (-(t - start) / h)
            best = piece.first_flip(now_us, stop, levels, floats)
            if best is not None:
                return best
        if stop is None:
            return None
        piece.extend(stop, days[coming[index]], found)
        found = True
    return None


class _Piece:
    """S between two day ends [start, stop), in floats: pending + mass * 2 ** (-(t - start) / h), where
    `mass` (within `error`) is the decayed points of the days ended by `start`, as `approx` has them."""

    __slots__ = ("error", "mass", "pending", "score", "start")

    def __init__(self, score: Decaying) -> None:
        self.score = score
        self.pending = 0
        self.mass = 0.0
        self.error = 0.0
        self.start = 0

    def extend(self, end: int, points: int, decaying: bool) -> None:
        """The next piece: the day ending at `end`, worth `points`, starts decaying."""
        if decaying:
            exponent = (end - self.start) / self.score.half_life_us
            factor = 2.0**-exponent
            moved = self.mass * factor
            self.mass = moved + points
            self.error = self.error * factor + (abs(moved) * (exponent + 6.0) + abs(self.mass)) * ULP
        else:
            self.mass = float(points)
        self.pending -= points
        self.start = end

    def approx(self, at_us: int) -> Approx:
        return _decayed(self.mass, self.error, self.pending, at_us - self.start, self.score.half_life_us)

    def at_least(self, at_us: int, level: Decimal, level_f: float) -> bool:
        return self.score.compare(self.approx(at_us), at_us, level, level_f)

    def first_flip(
        self, now_us: int, stop: int | None, levels: tuple[Decimal, ...], floats: tuple[float, ...]
    ) -> int | None:
        """The first flip after `now_us` within this piece (None: none). A float candidate whose
        microsecond is certain is the flip; the others are searched."""
        best: int | None = None
        unsure: list[tuple[int, int, int]] = []
        for position, level_f in enumerate(floats):
            crossing = self.crossing(level_f)
            if crossing is None:
                continue
            at, slack, sure = crossing
            if sure:  # S is monotonic in the piece: the comparison changes at `at` and only then
                if now_us < at and (stop is None or at <= stop) and (best is None or at < best):
                    best = at  # (at or before now: it has changed already; after stop: a later piece's)
            elif not (at + slack < now_us or (stop is not None and at - slack > stop)):
                unsure.append((at, slack, position))  # else: crossed before now, or in a later piece
        if unsure:
            unsure.sort()
            low = now_us + 1 if now_us >= self.start else self.start
            for at, slack, position in unsure:
                if best is not None and at - slack > best:
                    break  # a later candidate cannot come first
                level = levels[position]
                before = self.score.at_least(now_us, level, floats[position])
                found = _first_change(self, level, floats[position], before, low, stop, at, slack)
                if found is not None and (best is None or found < best):
                    best = found
        return best

    def crossing(self, level: float) -> tuple[int, int, bool] | None:
        """A float candidate for the first microsecond from `start` at which S compares differently
        with `level`, how far off it may be, and whether it is certain (the float solution is further
        than its error from a whole microsecond); None: S never reaches the level in this piece."""
        mass = self.mass
        gap = level - self.pending
        tolerance = 2.0 * self.error + (abs(level) + abs(self.pending) + abs(mass)) * ULP
        if not mass or not gap or (gap > 0) != (mass > 0) or abs(gap) > abs(mass) + tolerance:
            return None  # the decaying part only shrinks towards 0: it never reaches the level
        half_life_us = self.score.half_life_us
        if mass == gap and mass > 0 and not self.error:
            return self.start + 1, 2, True  # whole points exactly at the level as they start to fall
        ratio = mass / gap
        if not self.error and gap.is_integer() and ratio > 1.0:
            fraction, exponent = math.frexp(ratio)
            if fraction == 0.5 and exponent <= 21:
                # whole points (the float is exact) at 2 ** k times the level's distance: S meets the
                # level exactly k half-lives on, in decimals too (whole half-lives halve exactly)
                return self.start + (exponent - 1) * half_life_us + (1 if mass > 0 else 0), 2, True
        elapsed = half_life_us * math.log2(ratio) if ratio > 1.0 else 0.0
        # the solution's error: the ratio's relative error, scaled by h / ln 2, and log2's own
        off = half_life_us * 1.5 * (2.0 * tolerance / abs(gap) + ULP) + elapsed * ULP
        if mass > 0:  # falling: S >= L up to start + x, below from the next microsecond
            at = math.floor(elapsed) + 1
            sure = ratio > 1.0 and off < 0.25 and math.floor(elapsed - off) + 1 == at == math.floor(elapsed + off) + 1
        else:  # rising: S >= L from start + x on
            at = math.ceil(elapsed)
            sure = ratio > 1.0 and off < 0.25 and math.ceil(elapsed - off) == at == math.ceil(elapsed + off)
        return self.start + at, int(off) + 2, sure


def _first_change(
    piece: _Piece,
    level: Decimal,
    level_f: float,
    before: bool,
    low: int,
    high: int | None,
    guess: int,
    slack: int,
) -> int | None:
    """The first microsecond in [low, high] (high None: unbounded) at which `S >= level` is not
    `before` (as it is at low - 1), given a float `guess` of it within `slack`; None: no change
    there (S is monotonic in [low, high]: the comparison changes at most once)."""
    at = guess if guess > low else low
    if high is not None and at > high:
        at = high
    if piece.at_least(at, level, level_f) != before:
        if at == low or piece.at_least(at - 1, level, level_f) == before:
            return at  # the float guess was right, as it nearly always is
        top = at - 1
        below = guess - slack - 1
        if below < low or piece.at_least(below, level, level_f) != before:
            below = low - 1
    else:
        if high is not None and at >= high:
            return None
        if piece.at_least(at + 1, level, level_f) != before:
            return at + 1
        below = at + 1
        top = guess + slack
        if high is not None and top > high:
            top = high
        if top <= below or piece.at_least(top, level, level_f) == before:
            return None  # it changed before low, or not in this piece
    while top - below > 1:  # below: still `before`; top: changed
        middle = (below + top) // 2
        if piece.at_least(middle, level, level_f) == before:
            below = middle
        else:
            top = middle
    return top
