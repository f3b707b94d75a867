import random
from decimal import Decimal

import orjson

from schemas.tags import Condition, TagChanged
from services.engine.changes import TagChange, _default, _instant_json, _outcome
from services.engine.timeutil import DAY_US, from_us, to_us
from tests.support.builders import at, browse, cond, engine, group, paid, value_tiers


def test_the_fast_json_of_a_change_is_exactly_the_tag_changed_contract():
    windows = group(
        "activity",
        [
            ("busy", [cond("browse_count", "gte", 1, "7d"), cond("days_since_last_order", "lte", 3)]),
            ("bought", [cond("bought_any", "in", ["sku-1", "sku-2"])]),
            ("loyal", [{"metric": "loyalty", "cycle": "7d", "periods": 4, "op": "gt", "value": 0}]),
            ("recent", [{"metric": "cycles_since_last_order", "cycle": "7d", "op": "eq", "value": 0}]),
        ],
        mode="multi",
    )
    eng = engine(value_tiers(), windows)
    state = eng.new_state("c1")
    changes = []
    for event in (browse(when=at(0, hours=0.5)), paid("320.50", when=at(0, hours=1), products=("sku-2",))):
        changes += eng.on_event(state, event, event.occurred_at)
    changes += eng.advance(state, at(30))
    assert len(changes) >= 9
    explained = orjson.loads(changes[-1].to_json())["reason"]["conditions"][0]
    assert (explained["metric"], explained["cycle"], explained["periods"]) == ("loyalty", "7d", 4)
    for change in changes:
        message = change.to_message()
        assert isinstance(message, TagChanged)
        assert orjson.loads(change.to_json()) == orjson.loads(message.model_dump_json())
        assert message.occurred_at == from_us(change.occurred_us)
        assert message.seq == change.seq


def _document(change: TagChange) -> bytes:
    """The TagChanged document of a change as one `orjson.dumps`: what `to_json` must equal byte for byte."""
    return orjson.dumps(
        {
            "schema_version": 1,
            "customer_id": change.customer_id,
            "group_id": change.group_id,
            "tag_id": change.tag_id,
            "change": change.change,
            "source": change.source,
            "reason": {
                "summary": change.summary,
                "conditions": [
                    _outcome(condition, observed, matched) for condition, observed, matched in change.outcomes
                ],
            },
            "group_version": change.group_version,
            "caused_by": change.caused_by,
            "occurred_at": from_us(change.occurred_us),
            "seq": change.seq,
        },
        default=_default,
        option=orjson.OPT_UTC_Z,
    )


def test_the_fast_json_is_byte_for_byte_one_orjson_dump_for_every_kind_of_observed_value():
    count = Condition(metric="browse_count", op="gte", value=3, window={"last": "7d"})
    money = Condition(metric="total_spent", op="gte", value="300")
    days = Condition(metric="days_since_last_order", op="lte", value=3)
    products = Condition(metric="bought_any", op="in", value=["sku-1", "sku-2"])
    loyalty = Condition(metric="loyalty", op="gte", value=50, cycle="30d", periods=6)
    cycles = Condition(metric="cycles_between_last_orders", op="gte", value=2, cycle="30d")
    outcomes_cases = [
        ((count, 0, False),),
        ((count, 12345678901, True),),
        ((money, Decimal("320.50"), True),),
        ((money, Decimal("0"), False),),
        ((money, Decimal("1E+3"), True),),
        ((money, Decimal("-0.0001"), False),),
        ((days, None, False),),
        ((products, ["sku-2"], True),),
        ((loyalty, 66, True), (cycles, None, False)),
        ((count, 3, True), (money, Decimal("12.3400"), False), (days, 2, True)),
        (),
    ]
    summaries = ["matches", 'replaced by "vip" (exclusive group) \\ ü 雪', "added by operator@shop"]
    for number, outcomes in enumerate(outcomes_cases):
        for summary_text in summaries:
            for caused_by in (None, f"e{number}", 'odd "id"'):
                change = TagChange(
                    customer_id="c1",
                    group_id="g",
                    tag_id="t",
                    change="added" if number % 2 else "removed",
                    source="rule",
                    summary=summary_text,
                    outcomes=outcomes,
                    group_version=2,
                    caused_by=caused_by,
                    occurred_us=1_780_000_000_123_456 + number * 86_400_000_000,
                    seq=number + 1,
                )
                assert change.to_json() == _document(change)
                assert change.to_json_line() == _document(change) + b"\n"
                twin = TagChange(*change.fields())
                assert twin == change
                assert repr(twin) == repr(change)
                assert twin != TagChange(*change.fields()[:-1], change.seq + 1)


def test_an_instant_is_written_exactly_as_orjson_writes_its_datetime():
    rng = random.Random(7)
    first, last = to_us(from_us(0).replace(year=1)), to_us(from_us(0).replace(year=9999, month=12, day=31))
    moments = [0, -1, 1, DAY_US - 1, DAY_US, first, last + DAY_US - 1, 1_777_593_608_000_000, 1_777_593_608_000_120]
    moments += [rng.randrange(first, last + DAY_US) for _ in range(20_000)]
    moments += [rng.randrange(0, 4_000_000_000) * 1_000_000 for _ in range(5_000)]  # whole seconds
    moments += sorted(moments[-3_000:])  # runs within a day, as a replay writes them
    for us in moments:
        assert _instant_json(us) == orjson.dumps(from_us(us), option=orjson.OPT_UTC_Z), us
