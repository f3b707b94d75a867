"""The tagger's source positions: skipped messages and stalled partitions are found, positions survive recovery."""

from __future__ import annotations

from faust.types import TP

from services.tagger.offsets import POSITION_PREFIX, STUCK_CHECKS, SourceOffsets, position_record

EVENTS_0 = TP("tagstream.events", 0)
EVENTS_1 = TP("tagstream.events", 1)


def test_a_message_beyond_the_next_expected_offset_asks_for_a_re_read_from_the_first_missing_one() -> None:
    offsets = SourceOffsets()
    assert offsets.skipped(EVENTS_0, 41) is None  # nothing known yet: any start is fine
    offsets.processed(EVENTS_0, 41)
    assert offsets.skipped(EVENTS_0, 42) is None
    offsets.processed(EVENTS_0, 42)
    assert offsets.skipped(EVENTS_0, 45) == 43


def test_a_message_read_again_never_moves_the_position_back() -> None:
    offsets = SourceOffsets()
    offsets.processed(EVENTS_0, 10)
    offsets.processed(EVENTS_0, 7)  # a re-read after a seek back
    assert offsets.skipped(EVENTS_0, 12) == 11


def test_a_recovered_position_counts_for_active_partitions_only() -> None:
    offsets = SourceOffsets()
    for tp, next_offset in ((EVENTS_0, 100), (EVENTS_1, 200)):
        key, value = position_record(tp, next_offset)
        assert key.startswith(POSITION_PREFIX)
        offsets.recover(key, value, active={1})
    assert offsets.skipped(EVENTS_0, 150) is None  # partition 0 is another worker's
    assert offsets.skipped(EVENTS_1, 205) == 200


def test_partitions_given_away_are_forgotten() -> None:
    offsets = SourceOffsets()
    offsets.processed(EVENTS_0, 5)
    offsets.processed(EVENTS_1, 5)
    offsets.keep({1})
    assert dict(offsets.lags(lambda tp: 10)) == {EVENTS_1: 4}


def test_lag_is_the_distance_to_the_end_and_never_negative_or_guessed() -> None:
    offsets = SourceOffsets()
    offsets.processed(EVENTS_0, 9)
    offsets.processed(EVENTS_1, 9)
    ends = {EVENTS_0: 25, EVENTS_1: None}
    assert dict(offsets.lags(ends.__getitem__)) == {EVENTS_0: 15}
    ends[EVENTS_0] = 3  # an end below the position (a stale highwater)
    assert dict(offsets.lags(ends.__getitem__)) == {EVENTS_0: 0}


def test_a_partition_without_progress_below_its_end_is_re_read_after_the_checks_and_only_then() -> None:
    offsets = SourceOffsets()
    offsets.processed(EVENTS_0, 9)
    end = {EVENTS_0: 20}.__getitem__
    for _ in range(STUCK_CHECKS - 1):
        assert offsets.stalled(end) == []
    assert offsets.stalled(end) == [(EVENTS_0, 10)]
    assert offsets.stalled(end) == []  # counting starts again


def test_progress_or_reaching_the_end_clears_the_stall_count() -> None:
    offsets = SourceOffsets()
    offsets.processed(EVENTS_0, 9)
    end = {EVENTS_0: 20}.__getitem__
    for _ in range(STUCK_CHECKS - 1):
        offsets.stalled(end)
    offsets.processed(EVENTS_0, 10)
    assert offsets.stalled(end) == []
    offsets.processed(EVENTS_0, 19)
    for _ in range(STUCK_CHECKS + 1):
        assert offsets.stalled(end) == []  # at the end: nothing to re-read


def test_a_log_that_starts_past_the_position_is_reported_lost_and_the_position_moves_to_its_start() -> None:
    offsets = SourceOffsets()
    offsets.processed(EVENTS_0, 4)  # expects 5
    offsets.processed(EVENTS_1, 99)  # expects 100
    (lost,) = offsets.lost_to_retention({EVENTS_0: 15, EVENTS_1: 100})
    assert (lost.tp, lost.first, lost.end, lost.count) == (EVENTS_0, 5, 15, 10)
    assert offsets.skipped(EVENTS_0, 15) is None  # the log start is what comes next now, not a skip
    assert offsets.lost_to_retention({EVENTS_0: 15}) == []  # counted once


def test_a_log_start_at_or_below_the_position_loses_nothing_and_a_skip_is_still_re_read() -> None:
    offsets = SourceOffsets()
    offsets.processed(EVENTS_0, 4)
    assert offsets.lost_to_retention({EVENTS_0: 5, EVENTS_1: 50}) == []  # partition 1: no position, no claim
    assert offsets.skipped(EVENTS_0, 9) == 5


def test_a_partition_moved_past_lost_records_stalling_there_is_re_read_from_the_log_start() -> None:
    offsets = SourceOffsets()
    offsets.processed(EVENTS_0, 4)
    end = {EVENTS_0: 20}.__getitem__
    for _ in range(STUCK_CHECKS - 1):
        assert offsets.stalled(end) == []
    offsets.lost_to_retention({EVENTS_0: 15})
    for _ in range(STUCK_CHECKS - 1):
        assert offsets.stalled(end) == []  # the checks count afresh at the new position
    assert offsets.stalled(end) == [(EVENTS_0, 15)]


def test_the_partitions_sent_back_or_stalled_are_the_suspects_once_each() -> None:
    offsets = SourceOffsets()
    offsets.processed(EVENTS_0, 4)
    offsets.processed(EVENTS_1, 4)
    assert offsets.suspects(()) == set()  # nothing jumped or stalled: no question for the broker
    assert offsets.skipped(EVENTS_0, 15) == 5  # the read reset to a log start past the position looks like this
    assert offsets.suspects([EVENTS_1]) == {EVENTS_0, EVENTS_1}
    assert offsets.suspects(()) == set()
