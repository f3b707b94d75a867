"""Attribute, age and source metrics: worked examples (docs/tagger.md "Profile and source tags")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from services.engine.codec import decode, encode
from services.engine.profile import age_on, birthday
from services.engine.timeutil import date_to_day
from tests.support.builders import cond, engine, group, paid, profile, sourced

SHANGHAI_NOON = datetime(2026, 3, 1, 4, tzinfo=UTC)  # 12:00 in Shanghai


def age_bands():
    return group(
        "age",
        [
            ("minor", [cond("age", "lt", 18)]),
            ("adult", [cond("age", "gte", 18)]),
        ],
    )


def regions():
    return group("region", [("east", [cond("attribute", "in", ["上海", "杭州"], name="region")])], mode="multi")


def changes_of(changes):
    return [(change.group_id, change.tag_id, change.change, change.source) for change in changes]


def test_a_region_in_the_list_tags_the_customer_and_a_move_away_untags_them():
    eng = engine(regions(), zone="Asia/Shanghai")
    state = eng.new_state("c1")
    added = eng.on_event(state, profile(region="上海", when=SHANGHAI_NOON), SHANGHAI_NOON)
    assert changes_of(added) == [("region", "east", "added", "rule")]
    later = SHANGHAI_NOON + timedelta(days=3)
    removed = eng.on_event(state, profile(region="北京", when=later), later)
    assert changes_of(removed) == [("region", "east", "removed", "rule")]


def test_the_latest_update_wins_whatever_order_they_arrive_in():
    eng = engine(regions())
    newer = profile(region="杭州", when=SHANGHAI_NOON + timedelta(days=1))
    older = profile(region="北京", when=SHANGHAI_NOON)
    state = eng.new_state("c1")
    eng.on_event(state, newer, newer.occurred_at)
    assert eng.on_event(state, older, newer.occurred_at) == []  # history loaded late: the newer value stays
    assert state.tag_ids() == {"region": ["east"]}


def test_a_cleared_attribute_stays_cleared_when_an_older_value_arrives_later():
    eng = engine(regions())
    state = eng.new_state("c1")
    eng.on_event(state, profile(region="上海", when=SHANGHAI_NOON), SHANGHAI_NOON)
    cleared_at = SHANGHAI_NOON + timedelta(days=2)
    eng.on_event(state, profile(clear=["region"], when=cleared_at), cleared_at)
    assert state.tag_ids() == {}
    eng.on_event(state, profile(region="杭州", when=SHANGHAI_NOON + timedelta(days=1)), cleared_at)
    assert state.tag_ids() == {}


def test_a_resent_profile_update_is_a_duplicate():
    eng = engine(regions())
    state = eng.new_state("c1")
    update = profile(region="上海")
    eng.on_event(state, update, update.occurred_at)
    assert eng.on_event(state, update, update.occurred_at) == []
    assert eng.duplicates == 1


def test_attributes_no_rule_reads_are_not_kept():
    eng = engine(regions())
    state = eng.new_state("c1")
    eng.on_event(state, profile(gender="female", family="married_kids", custom={"vip_card": "gold"}), SHANGHAI_NOON)
    assert state.agg.profile is None  # nothing a rule reads: nothing kept, stored state as before
    assert b"married_kids" not in encode(state)
    eng.on_event(state, profile(region="上海", gender="female"), SHANGHAI_NOON)
    assert state.agg.profile is not None
    assert set(state.agg.profile.attributes) == {"region"}


def test_a_rule_reading_a_new_attribute_counts_values_that_arrive_after_it():
    eng = engine(regions())
    state = eng.new_state("c1")
    eng.on_event(state, profile(custom={"vip_card": "gold"}, region="上海"), SHANGHAI_NOON)
    cards = group("card", [("gold", [cond("attribute", "eq", "gold", name="vip_card")])], mode="multi")
    later = SHANGHAI_NOON + timedelta(hours=1)
    change = eng.load(type(eng.rulebook).compile([regions(), cards]))
    assert eng.backfill(state, change, later) == []  # the earlier card was never kept
    resent_at = later + timedelta(hours=1)
    eng.on_event(state, profile(custom={"vip_card": "gold"}, when=resent_at), resent_at)
    assert state.tag_ids() == {"card": ["gold"], "region": ["east"]}


def test_a_definition_change_forgets_attributes_no_rule_reads_any_more():
    eng = engine(regions())
    state = eng.new_state("c1")
    eng.on_event(state, profile(region="上海"), SHANGHAI_NOON)
    other = group("orders", [("some", [cond("order_count", "gte", 1)])])
    change = eng.load(type(eng.rulebook).compile([regions().model_copy(update={"disabled": True}), other]))
    eng.backfill(state, change, SHANGHAI_NOON)
    assert state.agg.profile is not None
    assert "region" in state.agg.profile.attributes
    change = eng.load(type(eng.rulebook).compile([other]))
    eng.backfill(state, change, SHANGHAI_NOON)
    assert state.agg.profile is not None
    assert state.agg.profile.attributes == {}


def test_an_explanation_quotes_an_attribute_only_as_far_as_the_rule_lists_it():
    not_east = group("region", [("elsewhere", [cond("attribute", "not_in", ["上海", "杭州"], name="region")])])
    eng = engine(not_east)
    state = eng.new_state("c1")
    [change] = eng.on_event(state, profile(region="乌鲁木齐"), SHANGHAI_NOON)
    [condition] = orjson.loads(change.to_json())["reason"]["conditions"]
    assert condition["name"] == "region"
    assert condition["observed"] == "(other)"
    assert "乌鲁木齐" not in change.to_json().decode()


# -- age --------------------------------------------------------------------------------------------


def test_age_flips_at_the_shops_midnight_that_starts_the_birthday_in_shanghai():
    eng = engine(age_bands(), zone="Asia/Shanghai")
    state = eng.new_state("c1")
    born = profile(birth_date="2008-03-10", when=SHANGHAI_NOON)
    assert changes_of(eng.on_event(state, born, SHANGHAI_NOON)) == [("age", "minor", "added", "rule")]
    shanghai_midnight = datetime(2026, 3, 9, 16, tzinfo=UTC)  # 2026-03-10 00:00 +08:00
    assert eng.next_check_at(state) == shanghai_midnight
    assert eng.advance(state, shanghai_midnight - timedelta(microseconds=1)) == []
    flipped = eng.advance(state, shanghai_midnight + timedelta(hours=5))
    assert changes_of(flipped) == [("age", "minor", "removed", "time"), ("age", "adult", "added", "time")]
    assert {change.occurred_us for change in flipped} == {int(shanghai_midnight.timestamp()) * 1_000_000}
    assert eng.next_check_at(state) is None  # no age a rule compares with lies ahead


def test_someone_born_on_29_february_comes_of_age_on_1_march_in_a_common_year():
    eng = engine(age_bands(), zone="Asia/Shanghai")
    state = eng.new_state("c1")
    eng.on_event(state, profile(birth_date="2008-02-29", when=SHANGHAI_NOON - timedelta(days=5)), SHANGHAI_NOON)
    assert state.tag_ids() == {"age": ["adult"]}  # 2026-03-01 12:00 in Shanghai: 18 since midnight
    state = eng.new_state("c2")
    eve = datetime(2026, 2, 28, 15, 59, tzinfo=UTC)  # 23:59 on 28 February in Shanghai
    eng.on_event(state, profile(birth_date="2008-02-29", when=eve, customer="c2"), eve)
    assert state.tag_ids() == {"age": ["minor"]}
    assert eng.next_check_at(state) == datetime(2026, 2, 28, 16, tzinfo=UTC)


def test_in_a_leap_year_the_birthday_is_29_february_itself():
    assert birthday(datetime(2004, 2, 29).date(), 20) == date_to_day(datetime(2024, 2, 29).date())
    assert birthday(datetime(2004, 2, 29).date(), 22) == date_to_day(datetime(2026, 3, 1).date())
    assert age_on(datetime(2004, 2, 29).date(), date_to_day(datetime(2025, 2, 28).date())) == 20
    assert age_on(datetime(2004, 2, 29).date(), date_to_day(datetime(2025, 3, 1).date())) == 21


def test_a_birth_date_given_later_moves_the_next_age_check():
    eng = engine(age_bands(), zone="Asia/Shanghai")
    state = eng.new_state("c1")
    eng.on_event(state, paid(100, when=SHANGHAI_NOON), SHANGHAI_NOON)
    assert eng.next_check_at(state) is None
    eng.on_event(state, profile(birth_date="2010-06-01", when=SHANGHAI_NOON), SHANGHAI_NOON)
    assert eng.next_check_at(state) == datetime(2028, 5, 31, 16, tzinfo=UTC)


def test_age_conditions_on_a_customer_without_a_birth_date_are_false_whatever_the_operator():
    eng = engine(age_bands())
    state = eng.new_state("c1")
    eng.on_event(state, paid(100), SHANGHAI_NOON)
    assert state.tag_ids() == {}


# -- sources ----------------------------------------------------------------------------------------


def channels():
    return group(
        "channel",
        [
            ("douyin", [cond("first_source", "eq", "douyin")]),
            ("jingan_store", [cond("first_source", "eq", "own_store/静安店")]),
            ("store", [cond("first_source", "in", ["own_store", "franchise_store"])]),
        ],
    )


def test_the_first_touch_decides_even_when_it_arrives_after_a_later_one():
    eng = engine(channels(), zone="Asia/Shanghai")
    state = eng.new_state("c1")
    eng.on_event(state, sourced("douyin", "live-3", when=SHANGHAI_NOON), SHANGHAI_NOON)
    assert state.tag_ids() == {"channel": ["douyin"]}
    earlier = SHANGHAI_NOON - timedelta(days=30)
    moved = eng.on_event(state, sourced("own_store", "静安店", code_id="qr-88", when=earlier), SHANGHAI_NOON)
    assert changes_of(moved) == [("channel", "douyin", "removed", "rule"), ("channel", "jingan_store", "added", "rule")]
    assert state.agg.profile is not None
    assert state.agg.profile.last is not None
    assert state.agg.profile.last.path == "douyin/live-3"


def test_last_source_and_sources_any_read_every_touch():
    rules = group(
        "touches",
        [
            ("back_in_store", [cond("last_source", "eq", "own_store")]),
            ("marketplaces", [cond("sources_any", "in", ["taobao", "tmall", "jd"])]),
            ("never_jd", [cond("sources_any", "not_in", ["jd"])]),
        ],
        mode="multi",
    )
    eng = engine(rules)
    state = eng.new_state("c1")
    eng.on_event(state, sourced("tmall", when=SHANGHAI_NOON), SHANGHAI_NOON)
    assert state.tag_ids() == {"touches": ["marketplaces", "never_jd"]}
    later = SHANGHAI_NOON + timedelta(days=1)
    eng.on_event(state, sourced("own_store", "徐汇店", when=later), later)
    assert state.tag_ids() == {"touches": ["back_in_store", "marketplaces", "never_jd"]}
    eng.on_event(state, sourced("jd", when=later + timedelta(hours=1)), later + timedelta(hours=1))
    assert state.tag_ids() == {"touches": ["marketplaces"]}


def test_a_resent_source_event_is_a_duplicate():
    eng = engine(channels())
    state = eng.new_state("c1")
    touch = sourced("douyin")
    eng.on_event(state, touch, SHANGHAI_NOON)
    assert eng.on_event(state, touch, SHANGHAI_NOON) == []
    assert eng.duplicates == 1


# -- stored state -----------------------------------------------------------------------------------

OLD_STATE = (
    b'[2,"c1",1,1772409600000000,{"orders":{"some":[0,null]}},{},[1,"100",0,1772409600000000,'
    b'1772409600000000,1772409600000000,20514,[],{"o1":["100",1772409600000000,0,"0",null]},[],[],[]],null]'
)
"""A customer's state as stored before profiles existed (format 2, eight sections)."""


def test_a_state_stored_before_profiles_existed_decodes_and_encodes_to_the_same_bytes():
    state = decode(OLD_STATE)
    assert state.agg.profile is None
    assert state.agg.order_count == 1
    assert encode(state) == OLD_STATE


def test_a_profile_survives_storage():
    eng = engine(regions(), age_bands(), channels())
    state = eng.new_state("c1")
    eng.on_event(state, profile(region="上海", birth_date="1990-05-04", clear=["gender"]), SHANGHAI_NOON)
    eng.on_event(state, sourced("own_store", "静安店", code_id="qr-1"), SHANGHAI_NOON)
    twin = decode(encode(state))
    assert twin.agg.profile is not None
    assert state.agg.profile is not None
    assert twin.agg.profile.attributes == state.agg.profile.attributes
    assert twin.agg.profile.channels == {"own_store"}
    assert twin.agg.profile.first is not None
    assert twin.agg.profile.first.code_id == "qr-1"
    assert encode(twin) == encode(state)
    assert eng.evaluate(twin, SHANGHAI_NOON) == []


@pytest.mark.parametrize("channel", ["taobao", "official_account", "franchise_store", "event"])
def test_every_channel_can_be_a_first_touch(channel):
    eng = engine(group("first", [("it", [cond("first_source", "eq", channel)])]))
    state = eng.new_state("c1")
    eng.on_event(state, sourced(channel), SHANGHAI_NOON)
    assert state.tag_ids() == {"first": ["it"]}
