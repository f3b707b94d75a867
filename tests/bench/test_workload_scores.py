"""The benchmark's comparison workloads (`benchmarks/workload.py`; here, not in tests/unit, which the
compiled-engine test runs without the benchmarks package): the ten tags that stand in for the score
tags keep their groups, modes and windows, so the comparison differs only in what they read."""

from __future__ import annotations

from typing import Any

from benchmarks.workload import rules, score_rules, score_shaped_count_rules
from schemas.tags import TagGroupSet


def _shape(groups: list[dict[str, Any]]) -> list[tuple[str, str, list[tuple[str, list[str]]]]]:
    return [
        (
            group["id"],
            group["mode"],
            [(tag["id"], [str(c.get("window")) for c in tag["rule"]["conditions"]]) for tag in group["tags"]],
        )
        for group in groups
    ]


def _metrics(groups: list[dict[str, Any]]) -> set[str]:
    return {c["metric"] for group in groups for tag in group["tags"] for c in tag["rule"]["conditions"]}


def test_the_count_tags_standing_in_for_score_tags_keep_their_groups_modes_and_windows() -> None:
    scored = [group for group in score_rules() if group["id"] != "intent_tiers"]  # the template's tiers have no window
    counted = [group for group in score_shaped_count_rules() if group["id"] != "intent_tiers"]
    assert _shape(counted) == _shape(scored)
    assert [len(group["tags"]) for group in score_shaped_count_rules()] == [len(g["tags"]) for g in score_rules()]
    assert "score" not in _metrics(score_shaped_count_rules())
    assert all("scores" not in group for group in score_shaped_count_rules())


def test_unread_scores_are_the_score_workloads_own_definitions() -> None:
    kept = {group["id"]: group["scores"] for group in score_shaped_count_rules(keep_scores=True)}
    assert kept == {group["id"]: group["scores"] for group in score_rules()}
    assert "score" not in _metrics(score_shaped_count_rules(keep_scores=True))


def test_every_comparison_workload_is_valid_definitions_of_110_tags() -> None:
    for options in ({"scores": True}, {"counts_for_scores": True}, {"counts_for_scores": True, "unread_scores": True}):
        groups = TagGroupSet.model_validate(rules(**options)).groups
        assert sum(len(group.tags) for group in groups) == 110
