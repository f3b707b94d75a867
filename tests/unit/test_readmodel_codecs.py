"""The read model's compact forms: packed history entries, held-tag values and bitmap bytes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.tags import TagChanged
from services.runtime.bitmaps import bits_in, snapshot_commands
from services.runtime.history_codec import HistoryEntryInvalid, pack_change, unpack_change
from services.runtime.readmodel import HeldTag


def _change(**overrides: object) -> TagChanged:
    document = {
        "customer_id": "顾客-上海-001",
        "group_id": "lifecycle",
        "tag_id": "churn_risk",
        "change": "removed",
        "source": "time",
        "reason": {
            "summary": "可能流失: 60 天未下单",
            "conditions": [
                {"metric": "total_spent", "op": "gte", "value": "0", "observed": "0.00", "matched": True},
                {
                    "metric": "order_count",
                    "op": "gte",
                    "value": 2,
                    "window": {"last": "30d"},
                    "observed": None,
                    "matched": False,
                },
            ],
        },
        "group_version": 12,
        "caused_by": None,
        "occurred_at": datetime(2026, 12, 31, 16, 0, 0, 1, tzinfo=UTC),
        "seq": 99_999,
    }
    return TagChanged.model_validate(document | overrides)


def test_a_packed_change_unpacks_to_the_same_change_under_its_customer() -> None:
    change = _change()
    packed = pack_change(change)

    assert unpack_change("顾客-上海-001", packed) == change
    assert len(packed) < len(change.model_dump_json().encode()) / 2


def test_an_entry_of_another_format_or_damaged_is_refused_with_a_short_excerpt() -> None:
    packed = pack_change(_change())

    with pytest.raises(HistoryEntryInvalid, match="unknown format"):
        unpack_change("c1", b'{"seq": 1, "change": "added"' + b"x" * 500)
    with pytest.raises(HistoryEntryInvalid, match="c1") as damaged:
        unpack_change("c1", packed[:1] + b"\xff" * 40)
    assert len(str(damaged.value)) < 200


def test_a_held_tag_value_round_trips_at_microseconds() -> None:
    held = HeldTag(added_at=datetime(2026, 2, 28, 16, 0, 0, 123456, tzinfo=UTC), source="import", group_version=7)

    assert HeldTag.unpacked(held.packed()) == held
    assert HeldTag.unpacked(held.packed().encode()) == held


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
