"""A decaying score's float arithmetic (`services/engine/decay.py`) against a 60-digit reference: where
the floats decide, they decide as the exact score would, and a flip is the first microsecond at which
the comparison with the level changes."""

from __future__ import annotations

from decimal import ROUND_FLOOR, Context, Decimal

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from services.engine.decay import Decaying, approx, decide, next_flip, rounded
from services.engine.decay_mass import MATH, halved, mass_of, remembered_day_gaps
from services.runtime.zone import day_zone

SHANGHAI = day_zone("Asia/Shanghai")
DAY_US = 86_400_000_000
FIRST_DAY = 20_500  # 2026-02-14
WIDE = Context(prec=60)

POINTS = st.integers(min_value=-30, max_value=60).filter(bool)
DAYS = st.dictionaries(st.integers(min_value=FIRST_DAY, max_value=FIRST_DAY + 40), POINTS, min_size=1, max_size=8)
HALF_LIVES = st.sampled_from([3_600_000_000, 36 * 3_600_000_000, 7 * DAY_US, 40 * DAY_US])
LEVELS = st.sampled_from(["2", "5", "8", "4.9999", "12.5", "0.0001", "-3", "40"])
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reference(days: dict[int, int], at_us: int, half_life_us: int) -> Decimal:
    """S at `at_us` at 60 digits, rounded down to 4 places: every day's points halving from its end."""
    return unrounded(days, at_us, half_life_us).quantize(Decimal("0.0001"), rounding=ROUND_FLOOR)


def unrounded(days: dict[int, int], at_us: int, half_life_us: int) -> Decimal:
    total = Decimal(0)
    for day, points in days.items():
        age_us = max(0, at_us - SHANGHAI.start(day + 1))
        factor = WIDE.power(Decimal(2), WIDE.divide(Decimal(-age_us), Decimal(half_life_us)))
        total = WIDE.add(total, WIDE.multiply(Decimal(points), factor))
    return total


def beyond_the_engines_digits(days: dict[int, int], at_us: int, half_life_us: int, level: Decimal) -> bool:
    """Whether S is within 1e-24 of `level` at `at_us`: where the engine's 28 significant digits
    (decay.py) and this 60-digit reference may disagree. It happens when whole points sit exactly on
    the level at a microsecond while a day dozens of half-lives old still adds ~1e-29 (the sum is
    irrational: no finite precision settles every such tie); the engine decides those at its 28
    digits, the same in live and replay."""
    return abs(unrounded(days, at_us, half_life_us) - level) < Decimal("1e-24")


def scored(days: dict[int, int], half_life_us: int) -> Decaying:
    return Decaying(days, half_life_us, SHANGHAI, {}, {})


@SETTINGS
@given(DAYS, HALF_LIVES, st.integers(min_value=0, max_value=60 * DAY_US), LEVELS)
@example({FIRST_DAY + 9: -18}, 3_600_000_000, 5_165_592_021_621, "0.0001")  # the power underflows to 0.0
def test_floats_decide_a_comparison_or_the_rounded_score_only_as_the_exact_score_does(
    days: dict[int, int], half_life_us: int, offset_us: int, level: str
) -> None:
    at_us = SHANGHAI.start(FIRST_DAY) + offset_us
    exact = reference(days, at_us, half_life_us)
    found = approx(days, at_us, half_life_us, SHANGHAI, {})
    assert abs(found[0] - float(exact)) < 1e-3  # the float is the score, before rounding
    settled = rounded(found)
    assert settled is None or settled == exact
    decided = decide(found, float(level))
    assert decided == -1 or (decided == 1) == (exact >= Decimal(level))
    assert scored(days, half_life_us).at_least(at_us, Decimal(level), float(level)) == (exact >= Decimal(level))


@SETTINGS
@given(DAYS, HALF_LIVES, st.integers(min_value=0, max_value=50 * DAY_US), LEVELS)
def test_a_flip_is_the_first_microsecond_at_which_the_exact_score_compares_differently(
    days: dict[int, int], half_life_us: int, offset_us: int, level: str
) -> None:
    now_us = SHANGHAI.start(FIRST_DAY) + offset_us
    threshold = Decimal(level)
    flip = next_flip(scored(days, half_life_us), now_us, (threshold,), (float(level),))
    before = reference(days, now_us, half_life_us) >= threshold
    if flip is None:  # no change: long after the last day ends the score rests at its last value
        later = max(SHANGHAI.start(day + 1) for day in days) + 60 * half_life_us
        assert (reference(days, later, half_life_us) >= threshold) == before
        return
    assert flip > now_us
    for at in (now_us, flip - 1, flip):
        assume(not beyond_the_engines_digits(days, at, half_life_us, threshold))
    assert (reference(days, flip, half_life_us) >= threshold) != before
    assert (reference(days, flip - 1, half_life_us) >= threshold) == before
    for day in days:  # no earlier change at a day's end, where the score's form changes
        end = SHANGHAI.start(day + 1)
        if now_us < end < flip and not beyond_the_engines_digits(days, end, half_life_us, threshold):
            assert (reference(days, end, half_life_us) >= threshold) == before


@SETTINGS
@given(DAYS, st.lists(HALF_LIVES, min_size=2, max_size=4))
def test_a_mass_built_from_remembered_day_gaps_is_the_mass_built_day_by_day(
    days: dict[int, int], half_lives: list[int]
) -> None:
    # half-lives interleaved: a gap remembered for one half-life must not answer for another
    last = max(days)
    for half_life_us in half_lives:
        built = mass_of(days, last, half_life_us, SHANGHAI, {})
        expected = Decimal(0)
        previous_end = None
        for day in sorted(days):
            end = SHANGHAI.start(day + 1)
            if previous_end is not None:
                expected = MATH.multiply(expected, halved(end - previous_end, half_life_us))
            expected = MATH.add(expected, Decimal(days[day]))
            previous_end = end
        assert built == expected


def test_the_remembered_day_gaps_stay_bounded_whatever_the_half_lives() -> None:
    days = {FIRST_DAY: 5, FIRST_DAY + 1: 3}
    for half_life_us in range(3_600_000_000, 3_600_000_000 + 5_000):
        mass_of(days, FIRST_DAY + 1, half_life_us, SHANGHAI, {})
    assert 0 < remembered_day_gaps() <= 4096
