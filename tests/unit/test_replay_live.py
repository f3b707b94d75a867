"""Replay as the embedded tagger: parsed events, manual commands, new definitions, time passing."""

from __future__ import annotations

import pytest

from schemas.tags import TagGroup
from services.engine import CommandRefused, RuleBook
from services.engine.changes import TagChange
from services.tagger.replay import Replay
from tests.support.builders import at, command, cond, engine, group, paid, summary, value_tiers


def _run(*groups: TagGroup) -> tuple[Replay, list[TagChange]]:
    changes: list[TagChange] = []
    return Replay(engine(*groups), on_change=changes.append), changes


def test_a_manual_tag_applies_at_the_clock_and_pins_an_exclusive_group() -> None:
    replay, changes = _run(
        group(
            "tier",
            [("gold", [cond("total_spent", "gte", 1000)]), ("basic", [cond("total_spent", "lt", 1000)])],
            tagging="both",
        )
    )
    replay.apply(paid(50, when=at(0)))
    replay.apply_command(command("tier", "gold", when=at(1)))
    assert summary(changes) == [
        ("tier", "basic", "added", "rule"),
        ("tier", "basic", "removed", "manual"),
        ("tier", "gold", "added", "manual"),
    ]
    assert replay.states["c1"].tag_ids() == {"tier": ["gold"]}


def test_a_refused_command_changes_nothing_and_creates_no_customer() -> None:
    replay, changes = _run(value_tiers())
    with pytest.raises(CommandRefused):
        replay.apply_command(command("value", "high", customer="c9"))
    assert changes == []
    assert "c9" not in replay.states


def test_new_definitions_backfill_existing_customers_with_source_rule_change() -> None:
    replay, changes = _run()
    replay.apply(paid(2500, when=at(0), customer="c1"))
    replay.apply(paid(100, when=at(0, hours=1), customer="c2"))
    replay.load(RuleBook.compile([value_tiers()]), at(1))
    assert sorted(summary(changes)) == [
        ("value", "high", "added", "rule_change"),
        ("value", "low", "added", "rule_change"),
    ]


def test_time_passing_without_events_fires_flips_at_their_instants() -> None:
    recent = group("recent", [("buyer", [cond("order_count", "gte", 1, last="7d")])], mode="multi")
    replay, changes = _run(recent)
    replay.apply(paid(10, when=at(0)))
    replay.advance_to(at(6))
    assert summary(changes) == [("recent", "buyer", "added", "rule")]
    replay.advance_to(at(30))
    assert summary(changes)[-1] == ("recent", "buyer", "removed", "time")
    # windows count whole days: the order leaves the 7-day window at the start of the 8th day
    assert changes[-1].to_message().occurred_at == at(7).replace(hour=0, minute=0)


def test_customers_due_at_one_instant_wake_in_customer_id_order_and_instants_in_time_order() -> None:
    recent = group("recent", [("buyer", [cond("order_count", "gte", 1, last="7d")])], mode="multi")
    replay, changes = _run(recent)
    # c3 and c1 fall due at the same midnight (scheduled in that order), c2 at the one before.
    replay.apply(paid(10, when=at(0, hours=1), customer="c2"))
    replay.apply(paid(10, when=at(1, hours=1), customer="c3"))
    replay.apply(paid(10, when=at(1, hours=2), customer="c1"))
    replay.advance_to(at(20))
    removals = [(change.customer_id, change.occurred_us) for change in changes if change.change == "removed"]
    assert [customer for customer, _ in removals] == ["c2", "c1", "c3"]
    assert removals[0][1] < removals[1][1] == removals[2][1]
    assert replay.summary.timer_wakeups == 3
