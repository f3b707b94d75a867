"""The embedded tagger: the engine's changes reach the read model and listeners, in order."""

from __future__ import annotations

from schemas.tags import TagChanged
from services.embedded.pipeline import EmbeddedTagger
from tests.support.builders import at, browse, command, cond, group, paid, value_tiers


async def test_an_order_tags_the_customer_in_the_read_model_and_tells_listeners() -> None:
    heard: list[TagChanged] = []
    tagger = EmbeddedTagger([value_tiers()])

    async def listener(changes: list[TagChanged]) -> None:
        heard.extend(changes)

    tagger.listen(listener)
    await tagger.event(paid(350, when=at(0)), at(0))
    await tagger.event(browse(when=at(1)), at(1))

    assert [(c.tag_id, c.change, c.seq) for c in heard] == [("mid", "added", 1)]
    assert await tagger.readmodel.current_tags("c1") == {"value": ["mid"]}
    activity = await tagger.readmodel.activity("c1")
    assert activity is not None
    assert (activity.last_order_at, activity.last_seen_at) == (at(0), at(1))


async def test_a_new_group_backfills_customers_and_a_manual_command_lands_in_history() -> None:
    tagger = EmbeddedTagger()
    await tagger.event(paid(2500, when=at(0)), at(0))
    vip = group("vip", [("star", [cond("order_count", "gte", 5)])], mode="multi", tagging="both")
    await tagger.define({"value": value_tiers(), "vip": vip}, at(1))
    await tagger.command(command("vip", "star", when=at(2)))

    assert await tagger.readmodel.current_tags("c1") == {"value": ["high"], "vip": ["star"]}
    history = await tagger.readmodel.history("c1")
    assert [(c.tag_id, c.source) for c in history] == [("star", "manual"), ("high", "rule_change")]
    assert tagger.changes == 2
