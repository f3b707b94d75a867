"""Loyalty and customer status: the worked examples of docs/tagger.md "Loyalty and customer status",
through the engine and the built-in templates, for a shop in Asia/Shanghai."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from schemas.tags import Condition, TagGroup
from services.engine import DefinitionError, Engine, RuleBook
from services.engine.loyalty import bought_periods, loyalty_share, loyalty_trend, next_period_change
from services.engine.timeutil import date_to_day, from_us
from services.runtime.definitions import templates
from services.runtime.zone import day_zone
from tests.support.builders import group, paid, refunded

SHANGHAI = ZoneInfo("Asia/Shanghai")


def local(month: int, day: int, hour: int = 0, minute: int = 0, year: int = 2025) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


def template_engine(name: str, **values: str) -> Engine:
    groups = templates()[name].render(values)
    return Engine(RuleBook.compile(groups, horizon_days=400, zone=day_zone("Asia/Shanghai")))


# -- the loyalty formula ---------------------------------------------------------------------------

# The docs' example: cycle 30 days, 6 periods, today 2025-06-30 in Shanghai. Orders on 01-15, 03-01,
# 04-02 (07:30 local: 23:30 UTC on 04-01) and 05-10 (a free order); one on 06-20 fully refunded.
TODAY = date_to_day(date(2025, 6, 30))
ORDER_DAYS = {date_to_day(date(2025, month, day)): 1 for month, day in ((1, 15), (3, 1), (4, 2), (5, 10))}


def test_the_worked_example_buys_in_four_of_six_periods_newest_first() -> None:
    assert bought_periods(ORDER_DAYS, TODAY, 30, 6) == [False, True, True, False, True, True]
    assert loyalty_share(ORDER_DAYS, TODAY, 30, 6) == 66  # 100 * 4 // 6, rounded down
    assert loyalty_trend(ORDER_DAYS, TODAY, 30, 6) == 0  # 2 of the newest 3, 2 of the oldest 3


def test_the_periods_of_the_worked_example_next_move_when_the_april_order_turns_90_days_old() -> None:
    assert next_period_change(ORDER_DAYS, TODAY, ((30, 6),)) == date_to_day(date(2025, 7, 1))
    july_first = date_to_day(date(2025, 7, 1))
    assert bought_periods(ORDER_DAYS, july_first, 30, 6) == [False, True, False, True, True, True]
    assert loyalty_trend(ORDER_DAYS, july_first, 30, 6) == -2


def test_an_order_dated_ahead_of_today_is_in_no_period_until_its_day() -> None:
    ahead = {TODAY + 3: 1}
    assert loyalty_share(ahead, TODAY, 30, 6) == 0
    assert next_period_change(ahead, TODAY, ((30, 6),)) == TODAY + 3
    assert loyalty_share(ahead, TODAY + 3, 30, 6) == 16


def test_an_odd_number_of_periods_leaves_the_middle_one_out_of_the_trend() -> None:
    middle_only = {TODAY - 30: 1}  # period 1 of 3
    assert bought_periods(middle_only, TODAY, 30, 3) == [False, True, False]
    assert loyalty_trend(middle_only, TODAY, 30, 3) == 0


def test_the_loyalty_template_tags_the_worked_example_regular_and_falling_at_shanghai_midnight() -> None:
    engine = template_engine("loyalty")
    state = engine.new_state("c1")
    now = local(6, 30, 12)
    for when, amount in ((local(1, 15, 10), 199), (local(3, 1, 10), 59), (local(4, 2, 7, 30), 120), (local(5, 10), 0)):
        engine.on_event(state, paid(amount, when=when), now)
    refunded_order = paid(88, when=local(6, 20), order="o-refunded")
    engine.on_event(state, refunded_order, now)
    engine.on_event(state, refunded("o-refunded", 88, when=local(6, 21)), now)
    assert state.tag_ids() == {"loyalty": ["regular"]}  # 66: at least 50, below 80
    assert engine.next_check_at(state) == local(7, 1)

    [falling] = engine.advance(state, local(7, 1, 9))
    assert (falling.group_id, falling.tag_id, falling.change, falling.source) == (
        "loyalty_trend",
        "falling",
        "added",
        "time",
    )
    assert from_us(falling.occurred_us) == local(7, 1)  # the shop's midnight: 16:00 UTC on 06-30
    assert falling.outcomes[0][1] == -2


def test_a_refund_empties_a_period_and_a_free_order_fills_one() -> None:
    engine = template_engine("loyalty", periods="2")
    state = engine.new_state("c1")
    now = local(6, 30, 12)
    order = paid(50, when=local(6, 1), order="o1")
    engine.on_event(state, order, now)
    engine.on_event(state, paid(0, when=local(5, 2)), now)  # free: paid with a coupon
    assert state.tag_ids() == {"loyalty": ["loyal"]}  # both periods
    engine.on_event(state, refunded("o1", 50, when=local(6, 2)), now)
    assert state.tag_ids() == {"loyalty": ["regular"], "loyalty_trend": ["falling"]}


def test_loyalty_looking_back_beyond_the_horizon_is_refused_naming_the_tag() -> None:
    groups = templates()["loyalty"].render({"periods": "20"})
    with pytest.raises(DefinitionError, match=r"loyalty/loyal: loyalty over 20 periods of 30d looks back 600 days"):
        RuleBook.compile(groups, horizon_days=400)


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ({"metric": "loyalty", "op": "gte", "value": 50, "periods": 6}, "needs 'cycle'"),
        ({"metric": "loyalty", "op": "gte", "value": 50, "cycle": "30d"}, "needs 'periods'"),
        ({"metric": "loyalty_trend", "op": "gt", "value": 0, "cycle": "30d", "periods": 1}, "at least 2"),
        ({"metric": "loyalty", "op": "gte", "value": 101, "cycle": "30d", "periods": 6}, "within ±100"),
        ({"metric": "order_count", "op": "gte", "value": 1, "cycle": "30d"}, "takes no 'cycle'"),
        ({"metric": "cycles_since_last_order", "op": "gte", "value": 1, "cycle": "30d", "periods": 2}, "no 'periods'"),
        ({"metric": "cycles_since_last_order", "op": "gte", "value": 2000, "cycle": "30d"}, "value x cycle"),
        ({"metric": "loyalty", "op": "gte", "value": 1, "cycle": "0d", "periods": 6}, "cycle"),
        ({"metric": "loyalty", "op": "gte", "value": 1, "cycle": "30d", "periods": 101}, "periods"),
    ],
)
def test_a_cycle_condition_with_a_missing_or_unbounded_parameter_is_refused_naming_it(
    condition: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        Condition.model_validate(condition)


def test_conditions_without_cycle_parameters_serialise_without_them() -> None:
    spec = Condition.model_validate({"metric": "order_count", "op": "gte", "value": 1})
    assert not {"cycle", "periods"} & set(spec.model_dump(mode="json"))


# -- customer status -------------------------------------------------------------------------------

# The docs' timeline, cycle 30 days: first order 03-01, second 03-20, then silence until a free order
# at 07:30 on 08-01 (23:30 UTC on 07-31).
TIMELINE = [
    (local(3, 1, 10), "new"),
    (local(3, 31), "active"),  # 30 days since the first order: no longer new
    (local(4, 19), "low_active"),  # 1 cycle since the last order (03-20)
    (local(5, 19), "dormant"),  # 2 cycles
    (local(6, 18), "lost"),  # 3 cycles
]


def test_the_status_timeline_moves_down_by_timers_at_shanghai_midnight_and_returns_with_an_order() -> None:
    engine = template_engine("customer_status")
    state = engine.new_state("c1")
    engine.on_event(state, paid(99, when=local(3, 1, 10)), local(3, 1, 10))
    engine.on_event(state, paid(99, when=local(3, 20, 20)), local(3, 20, 20))
    assert state.tag_ids() == {"customer_status": ["new"]}
    seen = []
    for changes in (engine.advance(state, local(month, 28, 12)) for month in (3, 4, 5, 6, 7)):
        seen += [(from_us(change.occurred_us), change.tag_id) for change in changes if change.change == "added"]
    assert seen == TIMELINE[1:]
    assert all(change.source == "time" for change in engine.advance(state, local(7, 31)))

    back = engine.on_event(state, paid(0, when=local(8, 1, 7, 30)), local(8, 1, 7, 30))
    assert [(change.tag_id, change.change) for change in back] == [("lost", "removed"), ("returned", "added")]
    observed = {outcome[0].metric.value: outcome[1] for outcome in back[1].outcomes}
    assert observed == {"cycles_since_last_order": 0, "cycles_between_last_orders": 4}  # 134 days away

    [gone, low] = engine.advance(state, local(8, 31, 1))
    assert (gone.tag_id, low.tag_id, from_us(low.occurred_us)) == ("returned", "low_active", local(8, 31))


def test_a_second_order_within_the_cycle_after_a_return_makes_the_customer_active() -> None:
    engine = template_engine("customer_status")
    state = engine.new_state("c1")
    engine.on_event(state, paid(99, when=local(1, 5)), local(1, 5))
    engine.on_event(state, paid(99, when=local(4, 5)), local(4, 5))
    assert state.tag_ids() == {"customer_status": ["returned"]}
    engine.on_event(state, paid(99, when=local(4, 9)), local(4, 9))
    assert state.tag_ids() == {"customer_status": ["active"]}


def test_history_loaded_late_between_two_orders_takes_returned_back() -> None:
    engine = template_engine("customer_status")
    state = engine.new_state("c1")
    engine.on_event(state, paid(99, when=local(1, 5)), local(4, 5))
    engine.on_event(state, paid(99, when=local(4, 5)), local(4, 5))
    assert state.tag_ids() == {"customer_status": ["returned"]}
    engine.on_event(state, paid(99, when=local(3, 1)), local(4, 6), source="import")
    assert state.tag_ids() == {"customer_status": ["active"]}  # away 35 days: 1 cycle, not 2


def test_a_refunded_last_order_still_counts_as_a_visit_for_the_status() -> None:
    engine = template_engine("customer_status")
    state = engine.new_state("c1")
    engine.on_event(state, paid(99, when=local(1, 5)), local(3, 10))
    engine.on_event(state, paid(99, when=local(3, 10), order="o2"), local(3, 10))
    engine.on_event(state, refunded("o2", 99, when=local(3, 11)), local(3, 11))
    assert state.tag_ids() == {"customer_status": ["returned"]}


def test_the_status_template_renders_with_a_weekly_cycle() -> None:
    weekly = templates()["customer_status"].render({"cycle": "7"})
    conditions = [tag.rule.conditions for tag in weekly[0].tags if tag.rule is not None]
    assert {c.cycle for rule in conditions for c in rule if isinstance(c, Condition)} == {"7d", None}


def test_a_status_group_without_the_template_reads_cycles_too() -> None:
    spec: TagGroup = group(
        "status",
        [("quiet", [{"metric": "cycles_since_last_order", "cycle": "7d", "op": "gte", "value": 2}])],
        mode="multi",
    )
    engine = Engine(RuleBook.compile([spec], zone=day_zone("Asia/Shanghai")))
    state = engine.new_state("c1")
    engine.on_event(state, paid(10, when=local(1, 1, 23)), local(1, 1, 23))
    assert engine.next_check_at(state) == local(1, 15)
    [quiet] = engine.advance(state, local(2, 1))
    assert from_us(quiet.occurred_us) == local(1, 15)
