"""What the tagger's crash and rebalance tests check on the tag-change stream, and their rule set."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
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


@dataclass
class StreamFold:
    """A tag-change stream folded per customer: what it ends with and what is wrong with it."""

    final: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    """customer -> group -> tag ids held at the end (customers holding nothing left out)"""
    repeats: int = 0
    """identical changes under one seq: at-least-once redeliveries, which consumers drop by seq"""
    gaps: list[str] = field(default_factory=list)
    """`customer: seqs` for every customer whose seqs are not 1..n"""
    conflicts: list[str] = field(default_factory=list)
    """`customer seq n` for every seq holding two different changes"""


def fold_tag_changes(stream: list[dict[str, Any]]) -> StreamFold:
    """Fold a tag-change stream by (customer, seq), as a consumer dropping repeats by seq would."""
    by_customer: dict[str, dict[int, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for change in stream:
        by_customer[change["customer_id"]][change["seq"]].append(change)
    fold = StreamFold()
    for customer, by_seq in by_customer.items():
        if sorted(by_seq) != list(range(1, max(by_seq) + 1)):
            fold.gaps.append(f"{customer}: {sorted(by_seq)}")
        held: dict[str, set[str]] = defaultdict(set)
        for seq in sorted(by_seq):
            versions = by_seq[seq]
            if len({json.dumps(v, sort_keys=True) for v in versions}) > 1:
                fold.conflicts.append(f"{customer} seq {seq}")
            fold.repeats += len(versions) - 1
            change = versions[0]
            (held[change["group_id"]].add if change["change"] == "added" else held[change["group_id"]].discard)(
                change["tag_id"]
            )
        if tags := {g: sorted(t) for g, t in sorted(held.items()) if t}:
            fold.final[customer] = tags
    return fold


def replay_tags(lines: list[bytes], groups: list[Any]) -> dict[str, dict[str, list[str]]]:
    """What `tagstream replay` ends with for these event lines: customer -> group -> tag ids (holders only)."""
    replay = Replay(Engine(RuleBook.compile(groups)))
    replay.feed(lines)
    replay.finish()
    return {customer: tags for customer, state in replay.states.items() if (tags := state.tag_ids())}


def check_tag_changes(
    stream: list[dict[str, Any]], lines: list[bytes], groups: list[Any]
) -> tuple[int, dict[str, Any]]:
    """Assert the stream is gapless per customer, never holds two different changes under one seq, and
    ends with the tags `tagstream replay` gives for the same events. Returns (identical repeats, final tags)."""
    fold = fold_tag_changes(stream)
    assert not fold.gaps, f"gaps: {fold.gaps[:5]}"
    assert not fold.conflicts, f"different changes under one seq: {fold.conflicts[:5]}"
    assert fold.final == replay_tags(lines, groups)
    return fold.repeats, fold.final
