"""The benchmark's comparison with `tagstream replay`, and the workload's arrival stamps (no I/O; here, not
in tests/unit, because the compiled-engine test runs tests/unit without the benchmarks package)."""

from __future__ import annotations

from datetime import datetime

import orjson

from benchmarks.replay_check import Expected, check
from benchmarks.workload import arrivals


def change(customer: str, seq: int, tag: str, kind: str = "added", **fields: object) -> dict[str, object]:
    return {"customer_id": customer, "seq": seq, "group_id": "value", "tag_id": tag, "change": kind, **fields}


def expected(*changes: dict[str, object]) -> Expected:
    by_customer: dict[str, list[dict[str, object]]] = {}
    tags: dict[str, dict[str, list[str]]] = {}
    for found in changes:
        customer = str(found["customer_id"])
        by_customer.setdefault(customer, []).append(found)
        held = tags.setdefault(customer, {}).setdefault("value", [])
        (held.append if found["change"] == "added" else held.remove)(found["tag_id"])
    return Expected({c: {g: t for g, t in groups.items() if t} for c, groups in tags.items()}, by_customer)


def records(*changes: dict[str, object]) -> list[bytes]:
    return [orjson.dumps(found) for found in changes]


REPLAY = expected(
    change("c1", 1, "mid"), change("c1", 2, "mid", "removed"), change("c1", 3, "high"), change("c2", 1, "mid")
)


def test_a_row_with_the_replays_changes_in_any_interleaving_and_with_repeats_is_equal() -> None:
    stream = [change("c2", 1, "mid"), change("c1", 1, "mid"), change("c1", 2, "mid", "removed"), change("c1", 1, "mid")]
    found = check(records(*stream, change("c1", 3, "high")), REPLAY)
    assert found.ok, found.problems
    assert (found.customers, found.changes, found.repeats) == (2, 4, 1)


def test_a_missing_change_names_the_customer() -> None:
    found = check(records(change("c1", 1, "mid"), change("c1", 2, "mid", "removed"), change("c2", 1, "mid")), REPLAY)
    assert not found.ok
    assert found.wrong_customers == 1
    assert found.problems == ["c1: 2 changes but replay has 3"]


def test_a_change_evaluated_at_another_instant_is_a_difference() -> None:
    replay = expected(change("c1", 1, "mid", occurred_at="2026-05-01T00:00:00Z"))
    found = check(records(change("c1", 1, "mid", occurred_at="2026-12-06T01:00:00Z")), replay)
    assert not found.ok
    assert "occurred_at" in found.problems[0]
    assert "2026-12-06" in found.problems[0]


def test_two_different_changes_under_one_seq_are_a_difference() -> None:
    found = check(records(change("c2", 1, "mid"), change("c2", 1, "high")), expected(change("c2", 1, "mid")))
    assert not found.ok
    assert "two different changes under seq 1" in found.problems[0]


def test_a_customer_only_the_replay_knows_is_a_difference() -> None:
    found = check(records(change("c2", 1, "mid")), REPLAY)
    assert found.problems == ["c1: 0 changes but replay has 3"]


def test_arrivals_never_run_backwards_so_a_late_event_arrives_at_the_latest_time_seen() -> None:
    dates = ["2026-05-01T08:00:00Z", "2026-05-01T09:00:00Z", "2026-04-20T23:59:59+08:00", "2026-05-01T09:00:01Z"]
    stamps = [stamp for _, stamp in arrivals({"occurred_at": date} for date in dates)]
    instants = [int(datetime.fromisoformat(date).timestamp() * 1000) for date in dates]
    assert stamps == [instants[0], instants[1], instants[1], instants[3]]
