"""How the Kafka benchmark times a row's drain (benchmarks/kafka_rows.py): to its last tag change, not to
the moment its committed offsets were seen."""

from __future__ import annotations

from benchmarks.kafka_rows import drained_within

STARTED = 1_800_000_000.0


def test_a_drain_ends_at_the_last_change_sent_before_the_group_was_seen_caught_up() -> None:
    # the tagger commits once a second: seen caught up 0.9 s after its last change
    stamps = [int((STARTED + offset) * 1000) for offset in (0.1, 1.0, 2.1)]
    assert abs(drained_within(STARTED, STARTED + 3.0, stamps) - 2.1) < 1e-3


def test_the_changes_of_the_timers_woken_after_the_drain_are_not_part_of_it() -> None:
    stamps = [int((STARTED + offset) * 1000) for offset in (0.5, 1.5, 4.0, 9.0)]
    assert abs(drained_within(STARTED, STARTED + 2.0, stamps) - 1.5) < 1e-3


def test_a_drain_without_changes_ends_when_the_group_was_seen_caught_up() -> None:
    assert abs(drained_within(STARTED, STARTED + 2.5, []) - 2.5) < 1e-9
    assert drained_within(STARTED, STARTED, []) > 0  # never a zero divisor
