"""The embedded mode's journal on a real file: durable appends, torn tails dropped, order kept."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from services.embedded.journal import Journal


def test_entries_come_back_in_order_with_instants_as_utc_text(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j" / "journal.jsonl")
    journal.open()
    at = datetime(2026, 11, 23, 8, 30, tzinfo=UTC)
    journal.append({"k": "events", "at": at, "r": [["c1", "{}"]]}, {"k": "opt_out", "c": "c1", "ch": "sms"})
    journal.append({"k": "definitions", "at": at, "r": [["value", None]]})
    journal.close()

    again = Journal(tmp_path / "j" / "journal.jsonl")
    numbered = list(again.replay())
    assert [number for number, _ in numbered] == [1, 2, 3]
    entries = [entry for _, entry in numbered if isinstance(entry, dict)]
    assert [entry["k"] for entry in entries] == ["events", "opt_out", "definitions"]
    assert entries[0]["at"] == "2026-11-23T08:30:00Z"
    assert entries[2]["r"] == [["value", None]]
    assert again.entries == 3


def test_a_torn_last_entry_is_dropped_and_cut_off_so_new_entries_follow_whole_ones(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"k":"opt_out","c":"c1","ch":"sms"}\n{"k":"opt_in","c":"c1"')
    journal = Journal(path)
    assert [entry["k"] for _, entry in journal.replay() if isinstance(entry, dict)] == ["opt_out"]
    journal.open()
    journal.append({"k": "opt_in", "c": "c2", "ch": "*"})
    journal.close()
    assert [entry["c"] for _, entry in Journal(path).replay() if isinstance(entry, dict)] == ["c1", "c2"]
