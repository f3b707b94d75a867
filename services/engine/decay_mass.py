"""A decaying score's masses (`decay.py`): the points of its ended days folded day by day, each day's
halved over the time to the next day's end, exactly in `decimal` and in floats with an error bound.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Final

from services.engine.zone import DayZone

MATH: Final = Context(prec=28, rounding=ROUND_HALF_EVEN)
"""The one context every exact score computation uses (never the thread's current context)."""
_ZERO: Final = Decimal(0)
_ONE: Final = Decimal(1)
_TWO: Final = Decimal(2)
_LN2: Final = MATH.ln(_TWO)
ULP: Final = 2.0**-52
"""Twice a double's unit roundoff: every error bound counts each rounding twice over."""
_BETWEEN_ENDS: Final[dict[tuple[int, int], Decimal]] = {}
"""(time between two day ends, half-life) -> `halved`: a pure function of them, and they are few
(whole days, or a day and an hour at a daylight-saving change): a mass built over a month of days
costs one `exp` per distinct gap instead of one per day."""
_BETWEEN_ENDS_MAX: Final = 4096
"""Entries kept before the memo starts afresh (definitions with many half-lives, zones with odd
transitions): it stays small whatever the input."""

Approx = tuple[float, float]
"""A float and a bound on its distance from the exact value."""


def split(days: dict[int, int], current: int) -> tuple[int, int, bool]:
    """(the points of the days not ended by local day `current`, the latest ended day, whether any)."""
    pending = 0
    found = False
    last = 0
    for day, points in days.items():
        if day >= current:
            pending += points
        elif not found or day > last:
            last = day
            found = True
    return pending, last, found


def mass_of(days: dict[int, int], last: int, half_life_us: int, zone: DayZone, masses: dict[int, Decimal]) -> Decimal:
    """The mass of the days up to `last` as of its end, day by day: the first day's points, then at
    each later day the mass so far halved over the time between the two days' ends, plus that day's
    points. Continued from the latest mass kept in `masses` at or before `last`, and kept there."""
    kept = masses.get(last)
    if kept is not None:
        return kept
    ordered = sorted(day for day in days if day <= last)
    start = 0
    mass = _ZERO
    previous_end = 0
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
            mass = MATH.multiply(mass, _halved_between_ends(end - previous_end, half_life_us))
        mass = MATH.add(mass, Decimal(days[day]))
        previous_end = end
        masses[day] = mass
    return mass


def approx_mass(days: dict[int, int], last: int, half_life_us: int, zone: DayZone, masses: dict[int, Approx]) -> Approx:
    """`mass_of` in floats, with its error bound: each step's product and sum rounded, its power off by
    a few units in the last place plus its exponent's own rounding, scaled by the exponent. Continued
    from the latest mass kept in `masses` before `last`, as `mass_of` is: the same steps from the same
    values, so the same bits as from the first day."""
    kept = masses.get(last)
    if kept is not None:
        return kept
    ordered = sorted([day for day in days if day <= last])
    start = 0
    mass = 0.0
    error = 0.0
    previous_end = 0
    for index in range(len(ordered) - 1, -1, -1):
        found = masses.get(ordered[index])
        if found is not None:
            start = index + 1
            mass, error = found
            previous_end = zone.start(ordered[index] + 1)
            break
    for index in range(start, len(ordered)):
        day = ordered[index]
        end = zone.start(day + 1)
        if index:
            exponent = (end - previous_end) / half_life_us
            factor = 2.0**-exponent
            moved = mass * factor
            mass = moved + days[day]
            error = error * factor + (abs(moved) * (exponent + 6.0) + abs(mass)) * ULP
        else:
            mass = float(days[day])
        previous_end = end
        masses[day] = (mass, error)
    return (mass, error)


def remembered_day_gaps() -> int:
    """How many day gaps `mass_of` remembers (bounded by `_BETWEEN_ENDS_MAX`)."""
    return len(_BETWEEN_ENDS)


def _halved_between_ends(age_us: int, half_life_us: int) -> Decimal:
    """`halved` over the time between two day ends, remembered (`_BETWEEN_ENDS`)."""
    key = (age_us, half_life_us)
    found = _BETWEEN_ENDS.get(key)
    if found is None:
        if len(_BETWEEN_ENDS) >= _BETWEEN_ENDS_MAX:
            _BETWEEN_ENDS.clear()
        found = _BETWEEN_ENDS[key] = halved(age_us, half_life_us)
    return found


def halved(age_us: int, half_life_us: int) -> Decimal:
    """2 ** (-age / h) for age >= 0: 2 ** -q exactly for the whole half-lives q in it, times
    exp(-(r / h) * ln 2) for the rest r, if any (exp is far cheaper than a fractional power, and
    whole half-lives stay exact: 10 points are exactly 5 one half-life later)."""
    whole, rest = divmod(age_us, half_life_us)
    factor = MATH.power(_TWO, -whole) if whole else _ONE
    if rest:
        fraction = MATH.exp(MATH.divide(MATH.multiply(Decimal(-rest), _LN2), Decimal(half_life_us)))
        factor = MATH.multiply(factor, fraction)
    return factor
