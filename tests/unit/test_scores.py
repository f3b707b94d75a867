"""Behaviour scores: the worked examples of docs/tagger.md "Behaviour scores", in a Shanghai shop."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Context, Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.tags import Condition, TagGroup
from services.engine import DefinitionError, Engine, RuleBook
from services.engine.codec import decode, encode
from services.engine.scores import decayed
from services.engine.timeutil import from_us, to_us
from services.runtime.definitions import templates
from services.runtime.zone import day_zone
from tests.support.builders import browse, click, engine, group, paid, refunded

SHANGHAI = day_zone("Asia/Shanghai")
MONDAY_10AM = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
MONDAY_ENDS = datetime(2026, 3, 2, 16, 0, tzinfo=UTC)  # Tuesday 00:00 in Shanghai
WEEK_US = 7 * 86_400_000_000

INTENT = {
    "id": "intent",
    "points": {"click": 1, "browse": 1, "order": 10, "refund": -10},
    "links": {"radar:": 3, "radar:vip-": 8},
    "products": {"sofa": 4},
    "decay": {"half_life": "7d"},
}
RECENT = {"id": "recent", "points": {"click": 1, "browse": 1, "order": 5, "refund": -5}}


def score(name: str, op: str, value: Any, last: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"metric": "score", "name": name, "op": op, "value": value}
    if last is not None:
        found["window"] = {"last": last}
    return found


def tiers(*scores: dict[str, Any], tags: list[tuple[str, list[dict[str, Any]]]] | None = None) -> TagGroup:
    return group(
        "intent",
        tags
        or [
            ("high", [score("intent", "gte", 10)]),
            ("medium", [score("intent", "gte", 5)]),
            ("low", [score("intent", "gt", 0)]),
        ],
        scores=list(scores) or [INTENT],
    )


def test_a_decaying_score_halves_every_half_life_from_the_end_of_the_local_day_it_was_earned():
    eng = engine(tiers(), zone="Asia/Shanghai")
    state = eng.new_state("c1")
    added = eng.on_event(state, paid("0", when=MONDAY_10AM), MONDAY_10AM)  # a free order earns its points too
    assert [(change.tag_id, change.change) for change in added] == [("high", "added")]
    # 10 points count in full until Monday ends in Shanghai; a week later they are exactly 5 ...
    ends_us = to_us(MONDAY_ENDS)
    days = state.agg.scores.days[next(iter(state.agg.scores.days))]
    assert decayed(days, ends_us, WEEK_US, SHANGHAI) == Decimal(10)
    assert decayed(days, ends_us + WEEK_US, WEEK_US, SHANGHAI) == Decimal(5)
    # ... so "high" (gte 10) goes the first microsecond after Monday ends, and "medium" (gte 5) a week
    # and one microsecond later: the rounded score 4.9999 is the first below 5.
    first = eng.advance(state, MONDAY_ENDS + timedelta(days=30))
    flips = [(change.tag_id, change.change, change.occurred_us) for change in first]
    assert flips[:3] == [
        ("high", "removed", ends_us + 1),
        ("medium", "added", ends_us + 1),
        ("medium", "removed", ends_us + WEEK_US + 1),
    ]
    assert flips[3][:2] == ("low", "added")
    assert all(change.source == "time" for change in first)


def test_a_decaying_score_flips_at_the_microsecond_solved_from_its_half_life():
    eng = engine(tiers(), zone="Asia/Shanghai")
    state = eng.new_state("c1")
    eng.on_event(state, paid("99", when=MONDAY_10AM), MONDAY_10AM)
    eng.on_event(state, click(when=MONDAY_10AM, target="radar:spring"), MONDAY_10AM)  # 13 points
    # 13 * 2 ** (-x / 7d) = 10  =>  x = 7d * log2(1.3), rounded up to the microsecond
    wide = Context(prec=50)
    solved = wide.multiply(Decimal(WEEK_US), wide.divide(wide.ln(Decimal("1.3")), wide.ln(Decimal(2))))
    flip_us = to_us(MONDAY_ENDS) + int(solved.to_integral_value(rounding=ROUND_CEILING))
    # the tagger schedules the flip at that microsecond, with no wake-up before it
    assert eng.next_check_at(state) == from_us(flip_us)
    assert eng.advance(state, from_us(flip_us - 1)) == []
    days = next(iter(state.agg.scores.days.values()))
    assert decayed(days, flip_us - 1, WEEK_US, SHANGHAI) >= 10 > decayed(days, flip_us, WEEK_US, SHANGHAI)
    changes = eng.advance(state, MONDAY_ENDS + timedelta(days=3))
    assert [(change.tag_id, change.change, change.occurred_us) for change in changes] == [
        ("high", "removed", flip_us),
        ("medium", "added", flip_us),
    ]
    assert changes[1].outcomes[0][1] == Decimal("9.9999")  # the observed, rounded score


def test_a_windowed_score_drops_at_the_local_midnight_its_day_leaves_the_window():
    group_ = tiers(RECENT, tags=[("busy", [score("recent", "gte", 6, "7d")])])
    eng = engine(group_, zone="Asia/Shanghai")
    state = eng.new_state("c1")
    eng.on_event(state, paid("20", when=MONDAY_10AM), MONDAY_10AM)
    later = MONDAY_10AM + timedelta(days=2)
    assert [change.tag_id for change in eng.on_event(state, browse(when=later), later)] == ["busy"]
    # Monday's 5 points leave the last 7 days at the start of next Monday, Shanghai time
    removed = eng.advance(state, MONDAY_10AM + timedelta(days=10))
    assert [(change.tag_id, change.change) for change in removed] == [("busy", "removed")]
    assert removed[0].occurred_us == to_us(MONDAY_ENDS + timedelta(days=6))
    assert removed[0].outcomes[0][1] == 1


def test_a_refund_subtracts_its_points_and_a_resent_payment_or_click_adds_nothing():
    group_ = tiers(RECENT, tags=[("buyer", [score("recent", "gte", 5, "30d")])])
    eng = engine(group_, zone="Asia/Shanghai")
    state = eng.new_state("c1")
    order = paid("199", when=MONDAY_10AM, order="o1")
    assert [change.change for change in eng.on_event(state, order, MONDAY_10AM)] == ["added"]
    resent = paid("199", when=MONDAY_10AM, order="o1")  # the same order under another event id
    assert eng.on_event(state, resent, MONDAY_10AM) == []
    signal = click(when=MONDAY_10AM, event_id="k1")
    eng.on_event(state, signal, MONDAY_10AM)
    eng.on_event(state, signal, MONDAY_10AM)
    assert next(iter(state.agg.scores.days.values())) == {SHANGHAI.day(to_us(MONDAY_10AM)): 6}
    removed = eng.on_event(state, refunded("o1", "199", when=MONDAY_10AM), MONDAY_10AM)
    assert [(change.tag_id, change.change) for change in removed] == [("buyer", "removed")]
    assert removed[0].outcomes[0][1] == 1


def test_a_click_on_a_tracked_link_is_worth_the_points_of_its_longest_listed_prefix():
    tags = [("hot", [score("intent", "gte", 8)]), ("warm", [score("intent", "gte", 3)])]
    eng = engine(tiers(tags=tags), zone="Asia/Shanghai")
    for target, points, tag in (
        ("banner", 1, []),
        ("radar:spring-sale", 3, ["warm"]),
        ("radar:vip-launch", 8, ["hot"]),
    ):
        state = eng.new_state(target)
        changes = eng.on_event(state, click(when=MONDAY_10AM, target=target), MONDAY_10AM)
        assert [change.tag_id for change in changes] == tag
        assert next(iter(state.agg.scores.days.values())) == {SHANGHAI.day(to_us(MONDAY_10AM)): points}
    state = eng.new_state("browser")
    eng.on_event(state, browse(when=MONDAY_10AM, product="sofa"), MONDAY_10AM)
    assert next(iter(state.agg.scores.days.values())) == {SHANGHAI.day(to_us(MONDAY_10AM)): 4}


def test_a_customer_stored_without_scores_decodes_unchanged_and_gains_them_on_the_next_action():
    plain = engine(tiers(), zone="Asia/Shanghai")
    before = plain.new_state("c1")
    stored_before = encode(engine(zone="Asia/Shanghai").new_state("c1"))
    assert decode(stored_before).agg.scores is None
    assert encode(decode(stored_before)) == stored_before
    plain.on_event(before, click(when=MONDAY_10AM, target="radar:x"), MONDAY_10AM)
    data = encode(before)
    twin = decode(data)
    assert encode(twin) == data
    assert twin.agg.scores is not None
    assert twin.agg.scores.days == before.agg.scores.days
    assert plain.next_check_at(twin) == plain.next_check_at(before)


def test_changing_what_a_score_counts_starts_it_afresh_while_a_new_half_life_reads_the_same_points():
    state = engine(tiers(), zone="Asia/Shanghai").new_state("c1")
    first = engine(tiers(), zone="Asia/Shanghai")
    first.on_event(state, paid("10", when=MONDAY_10AM), MONDAY_10AM)
    (key,) = state.agg.scores.days
    slower = engine(tiers(INTENT | {"decay": {"half_life": "14d"}}), zone="Asia/Shanghai")
    slower.on_event(state, click(when=MONDAY_10AM), MONDAY_10AM)
    assert list(state.agg.scores.days) == [key]
    recount = engine(tiers(INTENT | {"points": {"click": 2}}), zone="Asia/Shanghai")
    recount.on_event(state, click(when=MONDAY_10AM), MONDAY_10AM)
    (other,) = state.agg.scores.days
    assert other != key
    assert state.agg.scores.days[other] == {SHANGHAI.day(to_us(MONDAY_10AM)): 2}
    engine(group("other", [("x", [{"metric": "order_count", "op": "gte", "value": 1}])])).on_event(
        state, click(when=MONDAY_10AM), MONDAY_10AM
    )
    assert state.agg.scores is None  # no score defined any more: nothing kept


@pytest.mark.parametrize(
    ("tags", "scores", "message"),
    [
        ([("t", [score("missing", "gte", 1)])], [INTENT], "reads score 'missing', not defined in group"),
        ([("t", [score("intent", "eq", 1)])], [INTENT], "supports ops between, gt, gte, lt, lte, not 'eq'"),
        ([("t", [score("intent", "gte", 1, "7d")])], [INTENT], "decays (half_life 7d): no window"),
        ([("t", [score("recent", "gte", 1)])], [RECENT], "does not decay: give a window"),
        ([("t", [score("intent", "gte", "0.00001")])], [INTENT], "at most 4 decimal places"),
        ([("t", [score("intent", "gte", 1)])], [INTENT, INTENT], "score id 'intent' appears twice"),
        ([("t", [score("intent", "gte", 1)])], [INTENT | {"points": {"click": 1001}}], "less than or equal to 1000"),
        ([("t", [score("intent", "gte", 1)])], [{"id": "intent"}], "gives no points for any action"),
        ([("t", [score("intent", "gte", 1)])], [INTENT | {"decay": {"half_life": "30m"}}], "at least 1:00:00"),
    ],
)
def test_a_score_definition_that_cannot_work_is_refused_naming_what_is_wrong(
    tags: list[Any], scores: list[Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        group("intent", tags, scores=scores)


def test_a_half_life_over_a_tenth_of_the_retained_horizon_is_refused():
    slow = tiers(INTENT | {"decay": {"half_life": "41d"}})
    with pytest.raises(DefinitionError, match="half_life 41d is over a tenth of the 400-day horizon"):
        engine(slow)
    engine(slow, horizon_days=410)


def test_the_intent_template_tiers_a_lead_by_a_decaying_score_of_its_actions():
    [tiers_] = templates()["intent"].render({"high": "15"})
    eng = Engine(RuleBook.compile([tiers_], zone=SHANGHAI))
    state = eng.new_state("c1")
    seen = []
    for event in (
        browse(when=MONDAY_10AM),  # 1: low (gte 2) not yet
        click(when=MONDAY_10AM, target="radar:spring"),  # 4: low
        paid("0", when=MONDAY_10AM),  # 14: medium (gte 8)
        click(when=MONDAY_10AM),  # 15: high (the parameter: gte 15)
    ):
        seen += [(change.tag_id, change.change) for change in eng.on_event(state, event, MONDAY_10AM)]
    assert seen == [
        ("low", "added"),
        ("low", "removed"),
        ("medium", "added"),
        ("medium", "removed"),
        ("high", "added"),
    ]
    # 15 points halve in 7 days: under 15 the microsecond Monday ends, under 8 a little under 6.4 days later
    later = eng.advance(state, MONDAY_ENDS + timedelta(days=7))
    assert [(change.tag_id, change.change) for change in later] == [
        ("high", "removed"),
        ("medium", "added"),
        ("medium", "removed"),
        ("low", "added"),
    ]
    assert later[0].occurred_us == to_us(MONDAY_ENDS) + 1
    assert to_us(MONDAY_ENDS + timedelta(days=6.3)) < later[2].occurred_us < to_us(MONDAY_ENDS + timedelta(days=6.4))


def test_one_name_field_serves_scores_and_attributes_each_validated_as_its_metric_names_them():
    assert Condition(metric="score", name="Intent.v2", op="gte", value=1).name == "Intent.v2"  # a score id
    assert Condition(metric="attribute", name="vip_card", op="eq", value="gold").name == "vip_card"
    with pytest.raises(ValidationError, match="not an attribute name"):
        Condition(metric="attribute", name="Intent.v2", op="eq", value="gold")  # a score id, not an attribute
    with pytest.raises(ValidationError, match=re.escape("needs a name, e.g. name: intent")):
        Condition(metric="score", op="gte", value=1)
    with pytest.raises(ValidationError, match=re.escape("needs a name, e.g. name: region")):
        Condition(metric="attribute", op="eq", value="gold")
    with pytest.raises(ValidationError, match="takes no name"):
        Condition(metric="order_count", name="intent", op="gte", value=1)


def test_groups_defining_a_score_alike_share_its_points_folded_once_and_both_read_them():
    leads = group("leads", [("keen", [score("recent", "gte", 2, "7d")])], mode="multi", scores=[RECENT])
    shared = engine(tiers(), leads, tiers_named("alike", RECENT), zone="Asia/Shanghai")
    assert len(shared.rulebook.scores.scores) == 2  # intent, and recent once for two groups
    state = shared.new_state("c1")
    shared.on_event(state, click(when=MONDAY_10AM), MONDAY_10AM)
    changes = shared.on_event(
        state, browse(when=MONDAY_10AM + timedelta(minutes=1)), MONDAY_10AM + timedelta(minutes=1)
    )
    assert sorted(state.agg.scores.days) == sorted(score.key for score in shared.rulebook.scores.scores)
    assert state.agg.scores.days[key_of(shared, "recent")] == {SHANGHAI.day(to_us(MONDAY_10AM)): 2}
    assert {(change.group_id, change.tag_id) for change in changes if change.change == "added"} == {
        ("leads", "keen"),
        ("alike", "keen"),
    }


def test_a_state_stored_with_a_score_per_group_reads_its_points_under_the_shared_key():
    leads = group("leads", [("keen", [score("recent", "gte", 2, "7d")])], mode="multi", scores=[RECENT])
    shared = engine(tiers(), leads, tiers_named("alike", RECENT), zone="Asia/Shanghai")
    state = shared.new_state("c1")
    for minutes in (0, 1, 2):
        at = MONDAY_10AM + timedelta(minutes=minutes)
        shared.on_event(state, click(when=at), at)
    stored = encode(state)
    # the same customer as the engine kept it before groups shared a score: one key per group
    key = key_of(shared, "recent")
    old = decode(stored)
    points = old.agg.scores.days.pop(key)
    old.agg.scores.days["leads/" + key] = dict(points)
    old.agg.scores.days["alike/" + key] = dict(points)
    old_stored = encode(old)
    assert old_stored != stored
    later = MONDAY_10AM + timedelta(days=3)
    migrated = decode(old_stored)
    fresh = decode(stored)
    assert shared.advance(migrated, later) == shared.advance(fresh, later)
    assert encode(migrated) == encode(fresh)
    assert shared.next_check_at(migrated) == shared.next_check_at(fresh)


def test_groups_giving_one_score_different_decays_keep_it_per_group_and_move_shared_points_there():
    faster = tiers_named("fast", INTENT | {"decay": {"half_life": "3d"}})
    alone = engine(tiers(), zone="Asia/Shanghai")
    state = alone.new_state("c1")
    alone.on_event(state, click(when=MONDAY_10AM), MONDAY_10AM)
    (shared_key,) = state.agg.scores.days
    both = engine(tiers(), faster, zone="Asia/Shanghai")
    keys = sorted(score.key for score in both.rulebook.scores.scores)
    assert keys == ["fast/" + shared_key, "intent/" + shared_key]
    both.advance(state, MONDAY_10AM + timedelta(minutes=1))
    assert sorted(state.agg.scores.days) == keys
    assert all(days == {SHANGHAI.day(to_us(MONDAY_10AM)): 1} for days in state.agg.scores.days.values())
    both.on_event(state, click(when=MONDAY_10AM), MONDAY_10AM + timedelta(minutes=2))
    assert all(days == {SHANGHAI.day(to_us(MONDAY_10AM)): 2} for days in state.agg.scores.days.values())


def tiers_named(group_id: str, defined: dict[str, Any]) -> TagGroup:
    """A group of one tag on score `defined` (read over 7 days, or as it decays)."""
    window = None if "decay" in defined else "7d"
    return group(group_id, [("keen", [score(defined["id"], "gte", 2, window)])], mode="multi", scores=[defined])


def key_of(eng: Engine, score_id: str) -> str:
    (found,) = [score.key for score in eng.rulebook.scores.scores if score.id == score_id]
    return found
