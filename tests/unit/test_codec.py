from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from services.engine.codec import decode, encode, peek_schedule
from tests.support.builders import (
    at,
    browse,
    click,
    command,
    cond,
    engine,
    group,
    paid,
    profile,
    refunded,
    sourced,
    value_tiers,
)


def test_a_stored_state_decodes_to_the_same_state_and_behaves_the_same():
    manual = group("care", [("vip_care", None)], tagging="manual", mode="multi")
    recent = group("recent", [("week", [cond("browse_count", "gte", 1, "7d")])], mode="multi")
    eng = engine(value_tiers(), manual, recent)
    state = eng.new_state("c1")
    for event in (
        paid("120.5", order="o1", points=3, products=("sku",)),
        refunded("o1", "20"),
        refunded("o9", "5"),
        browse(when=at(1)),
        click(when=at(2)),
    ):
        eng.on_event(state, event, event.occurred_at)
    eng.on_command(state, command("care", "vip_care", when=at(2), expires_at=at(9)), at(2))
    data = encode(state)
    restored = decode(data)
    assert encode(restored) == data
    assert restored.tag_ids() == state.tag_ids()
    assert eng.next_check_at(restored) == eng.next_check_at(state)
    follow_up = paid("900", when=at(3))
    assert [c.to_json() for c in eng.on_event(restored, follow_up, at(3))] == [
        c.to_json() for c in eng.on_event(state, follow_up, at(3))
    ]


def test_a_typical_customer_is_stored_in_well_under_a_kibibyte():
    eng = engine(value_tiers())
    state = eng.new_state("c0001234")
    events = [browse(when=at(day), product=f"sku-{day}") for day in range(8)]
    events += [paid("199.90", when=at(8), products=("sku-1", "sku-2"), points=19), click(when=at(9))]
    for event in events:
        eng.on_event(state, event, event.occurred_at)
    assert len(encode(state)) < 1024


def test_a_stored_blob_decodes_field_for_field_and_encodes_back_byte_for_byte():
    stored = (
        b'[2,"c7",4,1780000000000000,{"value":{"mid":[0,null]},"care":{"vip":[1,1780900000000000]}},'
        b'{"order_window":1782000000000000},[2,"320.50",7,1779000000000000,1779500000000000,1780000000000000,'
        b'20601,["sku-1","sku-2"],{"o1":["300.50",1779000000000000,5,"0",null],'
        b'"o2":["20.00",1779500000000000,2,"0.00",["r1"]],"o3":[null,null,0,"5",["r2"]]},'
        b'[20590,2,20601,1],[20600,3],[20590,"AQAAAAAAAAACAAAAAAAAAA==",20601,"AwAAAAAAAAA="]],'
        b'{"care":["buyer"]}]'
    )
    state = decode(stored)
    assert encode(state) == stored
    agg = state.agg
    assert (state.customer_id, state.seq, state.clock_us) == ("c7", 4, 1780000000000000)
    assert state.tags == {"value": {"mid": (False, None)}, "care": {"vip": (True, 1780900000000000)}}
    assert state.due == {"order_window": 1782000000000000}
    assert (agg.order_count, agg.total_spent, agg.points_total) == (2, Decimal("320.50"), 7)
    assert str(agg.orders["o2"].refunded) == "0.00"  # exact: not the shared zero
    assert agg.orders["o1"].refunded == 0
    assert agg.orders["o1"].refund_ids is None
    assert agg.orders["o3"].paid is None
    assert agg.orders["o3"].refunded == Decimal(5)
    assert agg.browse == {20590: 2, 20601: 1}
    assert agg.click == {20600: 3}
    assert agg.seen == {  # the event digests' bytes, per day
        20590: bytearray((1).to_bytes(8, "little") + (2).to_bytes(8, "little")),
        20601: bytearray((3).to_bytes(8, "little")),
    }
    assert state.blocked == {"care": {"buyer"}}


def test_a_format_1_blob_still_decodes_without_its_day_less_event_digests():
    stored = (
        b'[1,"c7",4,1780000000000000,{"value":{"mid":[0,null]}},{},[1,"300.50",5,1779000000000000,'
        b'1779000000000000,1780000000000000,20601,[],{"o1":["300.50",1779000000000000,5,"0",null]},'
        b'[20590,2,20601,1],[],"AQAAAAAAAAACAAAAAAAAAA==",2]]'
    )
    state = decode(stored)
    assert (state.agg.order_count, state.agg.browse, state.agg.seen, state.blocked) == (
        1,
        {20590: 2, 20601: 1},
        {},
        None,
    )
    assert state.tags == {"value": {"mid": (False, None)}}
    assert encode(state).startswith(b'[2,"c7"')


NOON = datetime(2026, 3, 1, 4, tzinfo=UTC)  # 12:00 in Shanghai
REGIONS = group("region", [("east", [cond("attribute", "in", ["上海", "杭州"], name="region")])], mode="multi")
INTENT = group(
    "intent",
    [("keen", [{"metric": "score", "name": "intent", "op": "gte", "value": 2}])],
    scores=[{"id": "intent", "points": {"click": 1, "order": 10}, "decay": {"half_life": "7d"}}],
)
MAIN_PROFILE_STATE = (
    '[2,"c1",1,1772337600000000,{"region":{"east":[0,null]}},{},[0,"0",0,null,null,1772337600000000,null,[],'
    '{},[],[],[]],null,[["region","上海",1772337600000000,"e1"],["own_store"],'
    '[1772337600000000,"e2","own_store","静安店","qr-1"],[1772337600000000,"e2","own_store","静安店","qr-1"]]]'
).encode()
"""A customer with a profile as stored before scores existed (format 2, the profile as a ninth section)."""


@pytest.mark.parametrize(
    ("with_profile", "with_scores", "sections"),
    [(False, False, 8), (True, False, 9), (False, True, 10), (True, True, 10)],
)
def test_the_optional_profile_and_scores_sections_round_trip_alone_together_or_neither(
    with_profile: bool, with_scores: bool, sections: int
):
    eng = engine(value_tiers(), REGIONS, *([INTENT] if with_scores else []), zone="Asia/Shanghai")
    state = eng.new_state("c1")
    events: list[Any] = [paid("120", when=NOON), click(when=NOON)]
    if with_profile:
        events += [profile(region="上海", when=NOON), sourced("own_store", "静安店", code_id="qr-1", when=NOON)]
    for event in events:
        eng.on_event(state, event, NOON)
    assert (state.agg.profile is not None, state.agg.scores is not None) == (with_profile, with_scores)
    data = encode(state)
    stored = orjson.loads(data)
    assert len(stored) == sections  # neither: the bytes as before both; scores alone: a null profile first
    if with_scores and not with_profile:
        assert stored[8] is None
    twin = decode(data)
    assert encode(twin) == data
    assert (twin.agg.profile is not None, twin.agg.scores is not None) == (with_profile, with_scores)
    if with_profile:
        assert twin.agg.profile is not None
        assert state.agg.profile is not None
        assert twin.agg.profile.attributes == state.agg.profile.attributes
        assert twin.agg.profile.channels == state.agg.profile.channels == {"own_store"}
        assert twin.agg.profile.first is not None
        assert twin.agg.profile.first.code_id == "qr-1"
    if with_scores:
        assert twin.agg.scores is not None
        assert state.agg.scores is not None
        assert twin.agg.scores.days == state.agg.scores.days
        assert twin.agg.scores.top_day == state.agg.scores.top_day
    assert twin.tag_ids() == state.tag_ids()
    assert eng.next_check_at(twin) == eng.next_check_at(state)
    later = click(when=NOON + timedelta(days=1))
    assert [c.to_json() for c in eng.on_event(twin, later, later.occurred_at)] == [
        c.to_json() for c in eng.on_event(state, later, later.occurred_at)
    ]


def test_a_state_stored_with_a_profile_before_scores_existed_decodes_and_encodes_to_the_same_bytes():
    state = decode(MAIN_PROFILE_STATE)
    assert state.agg.profile is not None
    assert state.agg.profile.channels == {"own_store"}
    assert state.agg.scores is None
    assert encode(state) == MAIN_PROFILE_STATE


def test_a_peek_at_a_stored_state_reads_its_customer_and_next_wake_up_as_decoding_does():
    recent = group("recent", [("week", [cond("browse_count", "gte", 1, "7d")])], mode="multi")
    eng = engine(value_tiers(), recent)
    timed, untimed = eng.new_state("c-timed"), eng.new_state("c-untimed")
    eng.on_event(timed, browse(when=at(1)), at(1))  # the 7-day window makes it due later
    eng.on_event(untimed, paid("10", when=at(1)), at(1))
    format_1 = (
        b'[1,"c7",4,1780000000000000,{"value":{"mid":[0,null]}},{"w":1781000000000000,"v":1780500000000000},'
        b'[1,"300.50",5,1779000000000000,1779000000000000,1780000000000000,20601,[],'
        b'{"o1":["300.50",1779000000000000,5,"0",null]},[20590,2,20601,1],[],"AQAAAAAAAAACAAAAAAAAAA==",2]]'
    )
    blobs = [encode(timed), encode(untimed), MAIN_PROFILE_STATE, format_1]
    peeked = [peek_schedule(blob) for blob in blobs]
    assert peeked == [(decode(blob).customer_id, decode(blob).next_at) for blob in blobs]
    assert peeked[0][1] is not None
    assert peeked[1][1] is None
    assert peeked[3] == ("c7", 1780500000000000)
    with pytest.raises(ValueError, match="format 3 is not supported"):
        peek_schedule(b'[3,"c1"]')
