"""How a run of one partition's changelog records folds into what a restore writes (services/tagger/restore.py)."""

from __future__ import annotations

from dataclasses import dataclass

from services.tagger.restore import ChangelogBatch, fold


@dataclass(frozen=True)
class Record:
    offset: int
    key: bytes | None
    value: bytes | None


def test_each_key_keeps_its_last_value_and_a_tombstone_deletes_it() -> None:
    records = [
        Record(10, "王小明".encode(), b"first order"),
        Record(11, b"sh-000123", b"state"),
        Record(12, "王小明".encode(), b"second order"),
        Record(13, b"sh-000123", None),
    ]
    assert fold(records, stop=100) == ChangelogBatch({"王小明".encode(): b"second order", b"sh-000123": None}, 13, 4)


def test_a_key_forgotten_then_written_again_holds_the_new_value() -> None:
    records = [Record(0, b"sh-1", b"a"), Record(1, b"sh-1", None), Record(2, b"sh-1", b"back")]
    assert fold(records, stop=3) == ChangelogBatch({b"sh-1": b"back"}, 2, 3)


def test_an_empty_value_is_a_state_not_a_tombstone() -> None:
    assert fold([Record(5, b"sh-1", b"")], stop=6) == ChangelogBatch({b"sh-1": b""}, 5, 1)


def test_records_at_and_after_the_stop_are_left_for_fausts_recovery() -> None:
    records = [Record(7, b"a", b"1"), Record(8, b"b", b"2"), Record(9, b"a", b"3")]
    assert fold(records, stop=9) == ChangelogBatch({b"a": b"1", b"b": b"2"}, 8, 2)
    assert fold(records, stop=7) is None


def test_resent_records_change_nothing_but_the_offset() -> None:
    records = [Record(0, b"sh-1", b"s"), Record(1, b"sh-1", b"s")]
    assert fold(records, stop=10) == ChangelogBatch({b"sh-1": b"s"}, 1, 2)


def test_a_keyless_record_is_counted_and_skipped() -> None:
    # a compacted changelog refuses them; a misconfigured (uncompacted) one could hold one
    records = [Record(0, None, b"junk"), Record(1, b"sh-1", b"s")]
    assert fold(records, stop=10) == ChangelogBatch({b"sh-1": b"s"}, 1, 2, keyless=1)


def test_nothing_before_the_stop_folds_to_nothing() -> None:
    assert fold([], stop=10) is None
