"""What the engine keeps between a customer's actions to score them cheaply (`score_state.Split`, the
scores' `due` instants) equals what reading the customer's points afresh gives, after any actions:
late ones, refunds that cancel a day, actions around Shanghai midnights."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import Browse, Click, OrderPaid, OrderRefunded
from services.engine import Engine, RuleBook
from services.engine.decay import Decaying, next_flip
from services.engine.score_state import Split
from services.engine.scores import SCORE_TIME, SCORE_WINDOW
from services.engine.state import CustomerState
from services.engine.windows import EvalContext
from services.runtime.zone import day_zone
from tests.support.builders import T0, browse, click, cond, engine, group, paid, refunded

INTENT = {
    "id": "intent",
    "points": {"click": 1, "browse": 2, "order": 10, "refund": -10},
    "links": {"radar:": 3},
    "decay": {"half_life": "2d"},
}
RECENT = {"id": "recent", "points": {"click": 1, "browse": 1, "order": 4, "refund": -4}}


def score(name: str, op: str, value: object, last: str | None = None) -> dict[str, object]:
    return cond("score", op, value, last, name=name)


def scored_engine() -> Engine:
    tiers = group(
        "tiers",
        [
            ("hot", [score("intent", "gte", "12.5")]),
            ("warm", [score("intent", "gte", 8)]),
            ("busy", [score("recent", "gte", 6, "3d")]),
            ("mild", [score("intent", "gte", 3)]),
        ],
        scores=[INTENT, RECENT],
    )
    flags = group(
        "flags",
        [
            ("cooling", [score("intent", "between", ["0.5", "2.9999"])]),
            ("negative", [score("intent", "lt", 0)]),
            ("quiet_week", [score("recent", "lte", 1, "7d")]),
        ],
        mode="multi",
        scores=[INTENT, RECENT],
    )
    return engine(tiers, flags, zone="Asia/Shanghai")


# (hours after the previous action, days the action is dated before its arrival, what it is)
ACTIONS = st.lists(
    st.tuples(
        st.sampled_from([0.01, 0.5, 3, 7.9, 16, 30, 70]),
        st.sampled_from([0, 0, 0, 1, 3]),
        st.sampled_from(["browse", "click", "radar", "order", "refund"]),
    ),
    min_size=1,
    max_size=25,
)


def build(kind: str, when: datetime, orders: list[str]) -> Browse | Click | OrderPaid | OrderRefunded:
    if kind == "browse":
        return browse(when=when)
    if kind == "click":
        return click(when=when)
    if kind == "radar":
        return click(when=when, target="radar:spring")
    if kind == "refund" and orders:
        return refunded(orders.pop(), 1, when=when)
    order = paid(0, when=when)  # a free order earns its points too
    orders.append(order.order_id)
    return order


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ACTIONS)
def test_the_kept_splits_and_score_instants_equal_those_read_afresh_after_any_actions(
    actions: list[tuple[float, int, str]],
) -> None:
    eng = scored_engine()
    plan = eng.rulebook.time_plan.scores
    assert plan is not None
    state = eng.new_state("c1")
    now = T0
    orders: list[str] = []
    days_removed = False
    for hours, late_days, kind in actions:
        now += timedelta(hours=hours)
        event = build(kind, now - timedelta(days=late_days), orders)
        days_removed = days_removed or isinstance(event, OrderRefunded)
        eng.on_event(state, event, now)
        scores = state.agg.scores
        assert scores is not None
        for key, derived in scores.derived.items():
            split = derived.split
            if split is None:
                continue
            fresh = Split(scores.days[key], split.day)
            assert (split.pending, split.last, split.found) == (fresh.pending, fresh.last, fresh.found)
            assert fresh.monotonic or not split.monotonic  # kept: never "only falls" when it may rise
        now_us = state.clock_us
        assert now_us is not None
        solved = []
        for compiled, levels, floats in plan.decaying:
            days = scores.days.get(compiled.key)
            if days:
                at = next_flip(Decaying(days, compiled.half_life_us, eng.rulebook.zone, {}, {}), now_us, levels, floats)
                if at is not None:
                    solved.append(at)
        assert state.due.get(SCORE_TIME) == (min(solved) if solved else None)
        ctx = EvalContext(state.agg, state.tags, now_us, eng.rulebook.zone)
        window = plan.next_window_change(ctx)
        if days_removed:  # a day cancelled by a refund can only remove a change: at worst an idle wake-up
            assert window is None or (state.due.get(SCORE_WINDOW) or 0) <= window
        else:
            assert state.due.get(SCORE_WINDOW) == window


def test_a_score_that_only_falls_is_woken_once_per_tier_it_leaves_and_at_no_other_instant() -> None:
    tiers = group(
        "tiers",
        [
            ("hot", [score("intent", "gte", "12.5")]),
            ("warm", [score("intent", "gte", 8)]),
            ("mild", [score("intent", "gte", 3)]),
        ],
        scores=[INTENT],
    )
    eng = engine(tiers, zone="Asia/Shanghai")
    state = eng.new_state("c1")
    for minutes in range(7):  # 7 browses of 2 points: 14, "hot" from 12.5
        when = T0 + timedelta(minutes=minutes)
        eng.on_event(state, browse(when=when), when)
    assert set(state.tags["tiers"]) == {"hot"}
    wakeups = []
    while state.next_at is not None:
        changes = eng.advance_us(state, state.next_at)
        wakeups.append([(change.tag_id, change.change) for change in changes])
    assert wakeups == [
        [("hot", "removed"), ("warm", "added")],
        [("warm", "removed"), ("mild", "added")],
        [("mild", "removed")],
    ]


def test_a_definition_changed_the_same_day_reads_the_scores_with_its_own_windows_and_half_life() -> None:
    def book(window: str, half_life: str) -> RuleBook:
        rules = group(
            "g",
            [("busy", [score("recent", "gte", 3, window)]), ("keen", [score("intent", "gte", 5)])],
            mode="multi",
            scores=[RECENT, INTENT | {"decay": {"half_life": half_life}}],
        )
        return RuleBook.compile([rules], zone=day_zone("Asia/Shanghai"))

    def browsed(eng: Engine) -> CustomerState:
        state = eng.new_state("c1")
        for day in (0, 3, 6):  # a browse every third day: 3 in the last 7 days, 1 in the last 2
            eng.on_event(state, browse(when=T0 + timedelta(days=day)), T0 + timedelta(days=day))
        return state

    eng = Engine(book("7d", "40d"))
    state = browsed(eng)
    assert set(state.tags["g"]) == {"busy", "keen"}  # 6 points hardly decayed over 40 days
    now = T0 + timedelta(days=6, hours=1)
    eng.backfill(state, eng.load(book("2d", "1h")), now)
    fresh = Engine(book("2d", "1h"))
    again = browsed(fresh)
    fresh.advance(again, now)
    assert state.tags.get("g") == again.tags.get("g") is None  # 1 browse in 2 days; 2 points and a little
