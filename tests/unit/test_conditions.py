"""Window series: sorted days and prefix sums, whatever the number of day buckets."""

from itertools import accumulate

from schemas.tags import Condition, Metric
from services.tagger.engine.aggregates import Aggregates
from services.tagger.engine.conditions import EvalContext, compile_condition, series
from services.tagger.engine.timeutil import DAY_US


def _reference(buckets: dict[int, int]) -> tuple[list[int], list[int]]:
    days = sorted(buckets)
    return days, list(accumulate((buckets[day] for day in days), initial=0))


def test_series_of_none_one_and_many_buckets_count_like_the_sorted_prefix_sums():
    cases: list[dict[int, int]] = [{}, {20_500: 3}, {20_510: 1, 20_500: 2, 20_505: 4}]
    for buckets in cases:
        agg = Aggregates()
        agg.browse = dict(buckets)
        ctx = EvalContext(agg, {}, 20_512 * DAY_US)
        built = series(ctx, Metric.BROWSE_COUNT)
        assert (built.days, built.prefix) == _reference(buckets)
        assert series(ctx, Metric.BROWSE_COUNT) is built  # once per evaluation (an object, not a tuple: compiled too)
        for first, last in [(20_400, 20_600), (20_500, 20_500), (20_501, 20_509), (20_511, 20_520), (0, 0)]:
            expected = sum(count for day, count in buckets.items() if first <= day <= last)
            assert built.count(first, last) == expected
    # the shared empty series is never written to
    empty = series(EvalContext(Aggregates(), {}, 0), Metric.CLICK_COUNT)
    assert (empty.days, empty.prefix) == ([], [0])


def test_a_relative_window_condition_counts_the_last_days_once_per_evaluation():
    spec = Condition(metric="browse_count", op="gte", value=3, window={"last": "7d"})
    compiled = compile_condition(spec)
    buckets = {20_500: 1, 20_505: 2, 20_506: 1, 20_513: 5}
    for today, expected in [(20_506, 4), (20_511, 3), (20_512, 1), (20_513, 5), (20_520, 0)]:
        agg = Aggregates()
        agg.browse = dict(buckets)
        ctx = EvalContext(agg, {}, today * DAY_US + 123)
        assert compiled.matches(ctx) is (expected >= 3)
        assert ctx.cache["browse_count/7d"] == expected
        agg.browse.clear()  # cached: the same evaluation keeps its count
        assert compiled.read(ctx) == expected
        assert compiled.outcome(ctx) == (spec, expected, expected >= 3)
        fresh = EvalContext(agg, {}, today * DAY_US)
        assert compiled.read(fresh) == 0
