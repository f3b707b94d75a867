"""Absolute windows that have not ended: a count that may still grow cannot be known to stay low."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.engine.timeutil import from_us
from tests.support.builders import browse, click, cond, engine, group, paid

SHANGHAI = ZoneInfo("Asia/Shanghai")
D1, D2, D3 = "2026-01-05", "2026-01-20", "2026-02-04"
WINDOW_B_ENDS = datetime(2026, 2, 4, tzinfo=SHANGHAI)


def within(metric: str, op: str, value: object, first: str, end: str) -> dict[str, object]:
    return cond(metric, op, value) | {"window": {"from": first, "to": end}}


def churn():
    """The seed's churn tag with absolute dates: active in window A, silent in window B after it."""
    return group(
        "churn",
        [
            (
                "likely_to_churn",
                {
                    "match": "all",
                    "conditions": [
                        {
                            "match": "any",
                            "conditions": [
                                within("order_count", "gte", 1, D1, D2),
                                within("browse_count", "gte", 3, D1, D2),
                            ],
                        },
                        within("order_count", "eq", 0, D2, D3),
                        within("browse_count", "eq", 0, D2, D3),
                        within("click_count", "eq", 0, D2, D3),
                    ],
                },
            )
        ],
        mode="multi",
    )


def local(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=SHANGHAI)  # type: ignore[misc]


def test_the_churn_tag_appears_when_window_b_ends_not_before():
    eng = engine(churn(), zone="Asia/Shanghai")
    state = eng.new_state("c1")
    assert eng.on_event(state, paid("99", when=local(2026, 1, 8, 12)), local(2026, 1, 8, 12)) == []
    assert eng.advance(state, local(2026, 1, 21)) == []  # window B has begun, nothing in it yet
    assert eng.advance(state, WINDOW_B_ENDS - timedelta(microseconds=1)) == []
    assert eng.next_check_at(state) == WINDOW_B_ENDS.astimezone(UTC)
    [added] = eng.advance(state, WINDOW_B_ENDS + timedelta(days=3))  # a late timer: applied at the end
    assert (added.tag_id, added.change, added.source) == ("likely_to_churn", "added", "time")
    assert from_us(added.occurred_us) == WINDOW_B_ENDS
    assert eng.next_check_at(state) is None  # no window left to wait for


def test_the_churn_tag_never_appears_for_a_customer_active_in_window_b():
    eng = engine(churn(), zone="Asia/Shanghai")
    state = eng.new_state("c1")
    eng.on_event(state, paid("99", when=local(2026, 1, 8, 12)), local(2026, 1, 8, 12))
    eng.on_event(state, click(when=local(2026, 2, 3, 23, 59)), local(2026, 2, 3, 23, 59))
    assert eng.advance(state, WINDOW_B_ENDS + timedelta(days=30)) == []
    assert state.tag_ids() == {}


def test_an_event_before_window_b_ends_does_not_decide_it():
    """An evaluation by an event (not a timer) inside window B still sees it pending."""
    eng = engine(churn(), zone="Asia/Shanghai")
    state = eng.new_state("c1")
    eng.on_event(state, paid("99", when=local(2026, 1, 8, 12)), local(2026, 1, 8, 12))
    late_order_of_a = paid("10", when=local(2026, 1, 19, 23))  # arrives late, dated in window A
    assert eng.on_event(state, late_order_of_a, local(2026, 2, 1)) == []
    assert state.tag_ids() == {}


@pytest.mark.parametrize(
    ("op", "value", "early"),
    [
        ("eq", 0, False),
        ("lt", 1, False),
        ("lte", 0, False),
        ("between", [0, 1], False),
        ("ne", 5, False),
        ("in", [0], False),
        ("not_in", [5], False),
        ("gte", 1, True),
        ("gt", 0, True),
    ],
)
def test_only_a_condition_more_events_cannot_make_false_holds_before_its_window_ends(op, value, early):
    spec = group("g", [("t", [within("browse_count", op, value, D2, D3)])], mode="multi")
    eng = engine(spec, zone="Asia/Shanghai")
    state = eng.new_state("c1")
    seen = local(2026, 1, 25, 10) if early else local(2026, 1, 2, 10)  # inside window B, or before it
    eng.on_event(state, browse(when=seen), seen)
    assert state.tag_ids() == ({"g": ["t"]} if early else {})
    if not early:
        [added] = eng.advance(state, WINDOW_B_ENDS)
        assert (added.change, from_us(added.occurred_us)) == ("added", WINDOW_B_ENDS)


def test_a_pending_condition_explains_itself_with_the_count_so_far_as_not_holding():
    conditions = [within("browse_count", "eq", 0, D2, D3), cond("order_count", "gte", 1)]
    eng = engine(group("g", [("t", conditions)], mode="multi", match="any"), zone="Asia/Shanghai")
    state = eng.new_state("c1")
    [added] = eng.on_event(state, paid("10", when=local(2026, 1, 25)), local(2026, 1, 25))
    window, orders = added.outcomes
    assert (window[1], window[2]) == (0, False)  # 0 so far, but window B is not over
    assert (orders[1], orders[2]) == (1, True)
