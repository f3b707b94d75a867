"""Finding 5: user YAML cannot expand (aliases and anchors are refused), and no error quotes more than
a short excerpt of what it refuses: CLI messages, rules and playbook errors, HTTP 422 bodies."""

from __future__ import annotations

import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from schemas.limits import EXCERPT_CHARS
from services.notifier.policy import PlaybookError, load_playbooks
from services.runtime.definitions import RulesFileError, parse_groups
from tests.security.node import OPERATOR, count_rule, group, order, running_node


def alias_bomb(root: str) -> str:
    """About 300 bytes that expand to 9**9 strings when aliases are followed."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level, name in enumerate("bcdefghi"):
        previous = "abcdefghi"[level]
        lines.append(f"{name}: &{name} [{','.join([f'*{previous}'] * 9)}]")
    return f"{root}:\n" + "\n".join(f"  {line}" for line in lines) + "\n"


PARSERS: list[tuple[str, Callable[[str], Any], type[Exception]]] = [
    ("groups", lambda text: parse_groups(text, "rules.yaml"), RulesFileError),
    ("playbooks", lambda text: load_playbooks(text, "playbooks.yaml"), PlaybookError),
]


@pytest.mark.parametrize(("root", "parse", "error"), PARSERS, ids=["rules", "playbooks"])
def test_an_alias_bomb_is_refused_quickly_in_little_memory_with_a_short_message(
    root: str, parse: Callable[[str], Any], error: type[Exception]
) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(error) as refused:
            parse(alias_bomb(root))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 1.0
    assert peak < 5 * 1024 * 1024
    assert "aliases" in str(refused.value)
    assert len(str(refused.value)) < 300


@pytest.mark.parametrize(("root", "parse", "error"), PARSERS, ids=["rules", "playbooks"])
def test_a_single_anchor_or_a_deep_document_is_refused_too(
    root: str, parse: Callable[[str], Any], error: type[Exception]
) -> None:
    with pytest.raises(error, match="anchors and aliases"):
        parse(f"{root}: &x []\n")
    with pytest.raises(error, match="nests deeper"):
        parse(f"{root}: " + "[" * 200 + "]" * 200 + "\n")


def test_a_rules_file_error_quotes_an_excerpt_of_a_huge_value() -> None:
    text = f"groups:\n  - id: g\n    name: {'名' * 100_000}\n    mode: multi\n    tagging: manual\n    tags: []\n"
    with pytest.raises(RulesFileError) as refused:
        parse_groups(text, "rules.yaml")
    assert "groups.0.name" in str(refused.value)
    assert len(str(refused.value)) < 600


def test_a_playbook_error_quotes_an_excerpt_of_a_huge_value() -> None:
    delay = "9" * 100_000
    text = "playbooks:\n  - id: p\n    trigger: {group: g, tag: t}\n"
    text += f"    steps: [{{channel: push, delay: '{delay}'}}]\n"
    with pytest.raises(PlaybookError) as refused:
        load_playbooks(text)
    assert "steps[0].delay" in str(refused.value)
    assert len(str(refused.value)) < 600


async def test_422_bodies_quote_only_an_excerpt_of_the_offending_input(tmp_path: Path) -> None:
    async with running_node(tmp_path) as running:
        huge_name = await running.post("/v1/groups", group(count_rule(1)) | {"name": "x" * 500_000})
        huge_list = await running.post(
            "/v1/groups", group({"conditions": [{"metric": "bought_any", "op": "in", "value": ["p"] * 5000}]})
        )
        huge_id = await running.post("/v1/events", order("c" * 500_000, "e1"), key=OPERATOR)
    for answer in (huge_name, huge_list, huge_id):
        assert answer.status_code == 422
        assert len(answer.content) < 1000, answer.text[:2000]
    assert huge_name.json()["detail"][0]["input"] == "'" + "x" * (EXCERPT_CHARS - 2) + "…"
