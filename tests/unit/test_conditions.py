"""Window series (sorted days and prefix sums, whatever the number of day buckets) and the relative
window counts every window condition of a metric shares."""

import random
from datetime import timedelta
from itertools import accumulate

from schemas.tags import Condition, Metric
from services.engine.aggregates import Aggregates, fold, initial
from services.engine.conditions import compile_condition, share_spans
from services.engine.timeutil import DAY_US, to_us
from services.engine.windows import EvalContext, series
from tests.support.builders import T0, browse, click


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
        assert ctx.windows(1, compiled.spans) == [expected]  # type: ignore[attr-defined]
        agg.browse.clear()  # behind the fold's back: the counts kept for the day still answer
        assert compiled.read(ctx) == expected
        assert compiled.outcome(ctx) == (spec, expected, expected >= 3)
        assert compiled.read(EvalContext(agg, {}, today * DAY_US)) == expected  # same day
        assert compiled.read(EvalContext(agg, {}, (today + 1) * DAY_US)) == 0  # a new day: counted again


def test_relative_windows_of_a_metric_are_counted_together_once_per_evaluation():
    specs = [
        Condition(metric="browse_count", op="gte", value=1, window={"last": f"{days}d"}) for days in (30, 1, 7, 90, 7)
    ]
    clicks = Condition(metric="click_count", op="gte", value=1, window={"last": "7d"})
    compiled = [compile_condition(spec) for spec in [*specs, clicks]]
    share_spans(compiled)
    # buckets around today (20_513): future-dated, today, the edges of each window, out of all of them
    buckets = {20_514: 100, 20_513: 1, 20_507: 2, 20_506: 4, 20_484: 8, 20_483: 16, 20_424: 32, 20_423: 64}
    agg = Aggregates()
    agg.browse = dict(buckets)
    agg.click = {20_513: 3}
    ctx = EvalContext(agg, {}, 20_513 * DAY_US + 5)

    def reference(days: int) -> int:
        return sum(count for day, count in buckets.items() if 20_513 - days < day <= 20_513)

    assert [leaf.read(ctx) for leaf in compiled] == [reference(30), 1, reference(7), reference(90), reference(7), 3]
    assert [reference(days) for days in (1, 7, 30, 90)] == [1, 3, 15, 63]
    shared = compiled[0].spans  # type: ignore[attr-defined]
    assert shared == (1, 7, 30, 90)
    assert all(leaf.spans is shared for leaf in compiled[:5])  # type: ignore[attr-defined]
    assert ctx.windows(1, shared) == [1, 3, 15, 63]
    agg.browse.clear()  # counted once: the evaluation keeps its counts
    assert compiled[3].read(ctx) == 63


def test_window_counts_kept_for_the_day_follow_the_fold_like_a_fresh_count():
    spans = (1, 7, 30)
    rng = random.Random(3)
    today = to_us(T0) // DAY_US
    state = initial()
    for number in range(400):
        when = T0 + timedelta(days=rng.randint(-40, 10), hours=rng.randint(0, 23))  # late, today, ahead
        fold(state, rng.choice([browse, click])(when=when), horizon_days=35)
        now = today + rng.choice([0, 0, 0, 1, 2])  # mostly the same day, sometimes the next
        for kind in (1, 2):
            kept = list(EvalContext(state, {}, now * DAY_US).windows(kind, spans))
            fresh = initial()
            fresh.browse, fresh.click = state.browse, state.click
            assert kept == EvalContext(fresh, {}, now * DAY_US).windows(kind, spans), number
