"""The read model's compact forms: packed history entries, held-tag values and bitmap bytes."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from schemas.tags import ChangeSource, TagChanged
from services.runtime.bitmaps import bits_in, snapshot_commands
from services.runtime.history_codec import (
    INLINE,
    HistoryEntryInvalid,
    framed,
    head_number,
    history_entries,
    history_string,
    split_change,
    unpack_change,
)
from services.runtime.readmodel import HeldTag
from tests.support.history_entries import FORMAT_1_ENTRIES, hostile_changes, shop_change


def _tagger_record(change: TagChanged) -> bytes:
    """The change's JSON as the tagger writes it (services/engine/changes.py: orjson's, compact)."""
    return orjson.dumps(change.model_dump(mode="json"), option=orjson.OPT_UTC_Z)


def _round_trip(change: TagChanged, record: bytes | None, number: int = 7) -> tuple[TagChanged, bytes]:
    split = split_change(change, record)
    entry = split.entry(number)
    assert head_number(entry) == (None if number == INLINE else number)
    return unpack_change(change.customer_id, entry, {number: split.head}), entry


def test_a_change_cut_from_the_taggers_record_comes_back_whole_in_about_twenty_bytes() -> None:
    change = shop_change()

    back, entry = _round_trip(change, _tagger_record(change))

    assert back == change
    assert back.reason == change.reason
    assert len(entry) <= 24
    assert split_change(change, _tagger_record(change)) == split_change(change)


def test_changes_of_one_rule_for_different_customers_share_their_head() -> None:
    first = shop_change()
    conditions = [first.reason.conditions[0].model_copy(update={"observed": "17.50"}), first.reason.conditions[1]]
    other = shop_change(
        customer_id="c2",
        seq=3,
        caused_by="e-9",
        occurred_at=datetime(2026, 5, 1, tzinfo=UTC),
        reason=first.reason.model_copy(update={"conditions": conditions}),
    )

    assert split_change(first).head == split_change(other).head
    assert b"17.50" not in split_change(other).head
    assert split_change(first).head != split_change(shop_change(group_version=13)).head


@pytest.mark.parametrize("index", range(3))
def test_hostile_changes_come_back_whole_by_number_inline_and_from_any_record(index: int) -> None:
    change = hostile_changes()[index]
    record = _tagger_record(change)
    spaced = orjson.dumps(orjson.loads(record), option=orjson.OPT_INDENT_2)
    reordered = orjson.dumps(dict(reversed(list(orjson.loads(record).items()))))

    for given in (record, spaced, reordered, None):
        for number in (1, 300, INLINE):
            assert _round_trip(change, given, number)[0] == change


@pytest.mark.parametrize("caused_by", ['e":1', 'ord-9","seq":1', 'cmd,":,"'])
def test_a_cause_holding_the_records_own_markers_splits_from_the_taggers_record(caused_by: str) -> None:
    # An event id is any printable text: `":` in one made every change it caused unsplittable, and
    # the projector stopped on it.
    change = shop_change(caused_by=caused_by)

    back, _ = _round_trip(change, _tagger_record(change))

    assert back == change


def test_entries_of_format_1_written_before_stay_readable() -> None:
    for change, entry in zip([shop_change(), *hostile_changes()], FORMAT_1_ENTRIES, strict=True):
        assert head_number(entry) is None
        assert unpack_change(change.customer_id, entry) == change


def test_an_entry_of_another_format_damaged_or_naming_an_unknown_head_is_refused_with_a_short_excerpt() -> None:
    split = split_change(shop_change())
    entry = split.entry(5)

    with pytest.raises(HistoryEntryInvalid, match="unknown format"):
        unpack_change("c1", b'{"seq": 1, "change": "added"' + b"x" * 500)
    with pytest.raises(HistoryEntryInvalid, match="c1") as damaged:
        unpack_change("c1", FORMAT_1_ENTRIES[0][:1] + b"\xff" * 40)
    assert len(str(damaged.value)) < 200
    with pytest.raises(HistoryEntryInvalid, match="head 5 is not in the head table"):
        unpack_change("c1", entry, {4: split.head})
    with pytest.raises(HistoryEntryInvalid, match="bytes after the change"):
        unpack_change("c1", entry + b"\x00", {5: split.head})
    with pytest.raises(HistoryEntryInvalid, match="c1"):
        unpack_change("c1", entry[:6], {5: split.head})


def test_a_history_string_gives_its_entries_back_newest_first_whatever_their_format_or_length() -> None:
    change = shop_change()
    split = split_change(change, _tagger_record(change))
    entries = [FORMAT_1_ENTRIES[0], split.entry(7), split.entry(INLINE), b"\x02" + b"x" * 300]

    history = history_string(entries)

    assert history_entries("c1", history) == list(reversed(entries))
    assert history == bytes([len(entries)]) + b"".join(framed(entry) for entry in entries)
    assert framed(entries[3])[:2] == bytes([0x80 | 301 & 0x7F, 301 >> 7])  # a length past 127 takes two bytes
    assert unpack_change(change.customer_id, history_entries("c1", history)[1], {}) == change
    assert history_entries("c1", history_string([])) == []


def test_an_entry_of_the_event_of_the_one_before_it_leaves_instant_and_cause_out_and_is_read_with_them() -> None:
    first = shop_change(seq=7, caused_by="7d1e2b0c-41f5-4c1a-9f3e-2a9c0e4b7d15")
    second = first.model_copy(update={"seq": 8, "change": "removed"})
    split, later = split_change(first), split_change(second)
    same = later.entry(3, same_event=True)

    entries = history_entries("c1", history_string([split.entry(INLINE), same, later.entry(4, same_event=True)]))

    assert len(same) == len(later.entry(3)) - 8 - 37  # the instant (at microseconds: 8 bytes), the cause's UUID
    assert entries[1] == later.entry(3)
    assert unpack_change(first.customer_id, entries[2], {}) == first
    assert unpack_change(first.customer_id, entries[1], {3: later.head}) == second
    assert entries[0] == later.entry(4)
    with pytest.raises(HistoryEntryInvalid, match="format 3 follows none of format 2"):
        history_entries("c1", history_string([same]))


@pytest.mark.parametrize(
    ("history", "problem"),
    [
        (history_string([b"\x01abc"])[:-1], "cut short"),
        (history_string([b"\x01abc"]) + b"\x00", "1 bytes after its entries"),
        (b"\x02" + framed(b"\x02abc"), "index out of range"),
    ],
)
def test_a_damaged_history_string_is_refused_naming_the_customer(history: bytes, problem: str) -> None:
    with pytest.raises(HistoryEntryInvalid, match=f"customer 'c9'.*{problem}"):
        history_entries("c9", history)


@pytest.mark.parametrize("source", ["rule", "manual", "rule_change", "time", "import"])
def test_a_held_tag_value_is_one_integer_and_round_trips_at_microseconds(source: ChangeSource) -> None:
    held = HeldTag(added_at=datetime(2026, 2, 28, 16, 0, 0, 123456, tzinfo=UTC), source=source, group_version=255)

    assert int(held.packed()) < 2**63  # Redis keeps it in the listpack as an int64
    assert HeldTag.unpacked(held.packed()) == held
    assert HeldTag.unpacked(held.packed().encode()) == held


@pytest.mark.parametrize(
    ("added_at", "group_version"),
    [(datetime(2026, 2, 28, 16, 0, 0, 1, tzinfo=UTC), 256), (datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), 1)],
)
def test_a_held_tag_value_past_what_one_integer_holds_is_kept_as_text_of_one_word(
    added_at: datetime, group_version: int
) -> None:
    held = HeldTag(added_at=added_at, source="manual", group_version=group_version)

    assert " " not in held.packed()
    assert not held.packed().lstrip("-").isdigit()
    assert HeldTag.unpacked(held.packed()) == held


def test_bits_are_numbered_from_the_most_significant_bit_of_the_first_byte_as_redis_does() -> None:
    assert bits_in(b"\x80\x00\x01", 0) == [0, 23]
    assert bits_in(b"\xff", 131_064) == list(range(131_064, 131_072))
    assert bits_in(b"", 8) == []
    assert bits_in(b"\xff\xff", 8, after=12, limit=2) == [13, 14]


def test_none_of_is_taken_away_without_clearing_ids_beyond_the_none_of_bitmaps() -> None:
    commands = snapshot_commands(["a"], ["b", "c"], ["n"], target="t", work="w")

    assert commands == [
        ("BITOP", "OR", "w", "b", "c"),
        ("BITOP", "AND", "t", "w", "a"),
        ("BITOP", "OR", "w", "n"),
        ("BITOP", "AND", "w", "w", "t"),
        ("BITOP", "XOR", "t", "t", "w"),
        ("DEL", "w"),
    ]
    with pytest.raises(ValueError, match="all_of or any_of"):
        snapshot_commands([], [], ["n"], target="t", work="w")
