import orjson

from schemas.tags import TagChanged
from services.tagger.engine.timeutil import from_us
from tests.unit.builders import at, browse, cond, engine, group, paid, value_tiers


def test_the_fast_json_of_a_change_is_exactly_the_tag_changed_contract():
    windows = group(
        "activity",
        [
            ("busy", [cond("browse_count", "gte", 1, "7d"), cond("days_since_last_order", "lte", 3)]),
            ("bought", [cond("bought_any", "in", ["sku-1", "sku-2"])]),
        ],
        mode="multi",
    )
    eng = engine(value_tiers(), windows)
    state = eng.new_state("c1")
    changes = []
    for event in (browse(when=at(0, hours=0.5)), paid("320.50", when=at(0, hours=1), products=("sku-2",))):
        changes += eng.on_event(state, event, event.occurred_at)
    changes += eng.advance(state, at(30))
    assert len(changes) >= 5
    for change in changes:
        message = change.to_message()
        assert isinstance(message, TagChanged)
        assert orjson.loads(change.to_json()) == orjson.loads(message.model_dump_json())
        assert message.occurred_at == from_us(change.occurred_us)
        assert message.seq == change.seq
