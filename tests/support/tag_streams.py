"""What the tagger's crash and rebalance tests check on the tag-change stream, and their rule set."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from services.engine import Engine, RuleBook
from services.tagger.replay import Replay
from tests.support.builders import cond, group, order_bands, value_tiers


def definitions() -> list[Any]:
    lifecycle = group(
        "lifecycle",
        [
            ("never", [cond("order_count", "eq", 0)]),
            ("repeat", [cond("order_count", "gte", 2)]),
            ("first", [cond("order_count", "gte", 1)]),
        ],
    )
    points = group("points", [("p100", [cond("points_total", "gte", 100)]), ("p10", [cond("points_total", "gte", 10)])])
    interests = group(
        "interests",
        [
            ("cheap", [cond("bought_any", "in", [f"p{n:04d}" for n in range(0, 400)])]),
            ("premium", [cond("bought_any", "in", [f"p{n:04d}" for n in range(1600, 2000)])]),
        ],
        mode="multi",
    )
    vip = group(
        "vip",
        [("important", [cond("has_tag", "eq", "value/high"), cond("has_tag", "eq", "lifecycle/repeat")])],
        mode="multi",
    )
    return [value_tiers(), order_bands(), lifecycle, points, interests, vip]


def check_tag_changes(
    stream: list[dict[str, Any]], lines: list[bytes], groups: list[Any]
) -> tuple[int, dict[str, Any]]:
    """Assert the stream is gapless per customer, never holds two different changes under one seq, and
    ends with the tags `tagstream replay` gives for the same events. Returns (identical repeats, final tags)."""
    by_customer: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for change in stream:
        by_customer[change["customer_id"]][change["seq"]].append(change)
    repeats = 0
    final: dict[str, dict[str, list[str]]] = {}
    for customer, by_seq in by_customer.items():
        assert sorted(by_seq) == list(range(1, max(by_seq) + 1)), f"{customer} has a gap: {sorted(by_seq)}"
        held: dict[str, set[str]] = defaultdict(set)
        for seq in sorted(by_seq):
            versions = by_seq[seq]
            distinct = {json.dumps(v, sort_keys=True) for v in versions}
            assert len(distinct) == 1, f"{customer} seq {seq} has different changes: {distinct}"
            repeats += len(versions) - 1
            change = versions[0]
            (held[change["group_id"]].add if change["change"] == "added" else held[change["group_id"]].discard)(
                change["tag_id"]
            )
        final[customer] = {g: sorted(t) for g, t in sorted(held.items()) if t}

    replay = Replay(Engine(RuleBook.compile(groups)))
    replay.feed(lines)
    replay.finish()
    expected = {customer: state.tag_ids() for customer, state in replay.states.items()}
    assert dict(final.items()) == {c: t for c, t in expected.items() if t}
    return repeats, final
