"""Finding 1: no accepted write can stop an embedded node from starting again; a line that cannot be
replayed is reported with file and line and set aside only by the operator's flag."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.embedded.journal import JournalError
from services.embedded.node import JOURNAL_FILE
from tests.security.node import count_rule, group, order, running_node


@pytest.mark.parametrize(
    "rule",
    [count_rule(10**40), count_rule("1e5000"), count_rule(1, depth=100)],
    ids=["count-beyond-64-bits", "count-as-huge-exponent", "nested-100-levels"],
)
async def test_definitions_whose_replay_would_fail_are_refused_before_the_journal_and_the_node_restarts(
    tmp_path: Path, rule: dict[str, Any]
) -> None:
    async with running_node(tmp_path) as running:
        refused = await running.post("/v1/groups", group(rule, "bad"))
        assert refused.status_code == 422, refused.text
        assert "rule" in refused.text
        assert (await running.post("/v1/groups", group(count_rule(3), "good"))).status_code == 201
        assert (await running.post("/v1/groups", group(count_rule(5), "later"))).status_code == 201

    async with running_node(tmp_path) as restarted:
        assert sorted(restarted.node.tagger.groups) == ["good", "later"]


async def test_a_damaged_line_in_the_middle_of_the_journal_stops_the_start_naming_file_and_line(
    tmp_path: Path,
) -> None:
    async with running_node(tmp_path) as running:
        assert (await running.post("/v1/groups", group(count_rule(1)))).status_code == 201
        assert (await running.post("/v1/events", order("c1", "e1"))).status_code == 202
        assert (await running.post("/v1/events", order("c2", "e2"))).status_code == 202
    journal = tmp_path / JOURNAL_FILE
    lines = journal.read_bytes().splitlines(keepends=True)
    damaged = [*lines[:2], b'{"k":"events","at":"2026-11-23T08:30:00Z","r":[["c1\n', *lines[2:]]
    journal.write_bytes(b"".join(damaged))

    with pytest.raises(JournalError) as stopped:
        async with running_node(tmp_path):
            pass
    assert f"{journal}:3:" in str(stopped.value)
    assert "--skip-bad-journal-lines" in str(stopped.value)
    assert journal.read_bytes() == b"".join(damaged)  # nothing repaired behind the operator's back

    async with running_node(tmp_path, skip_bad_journal_lines=True) as repaired:
        assert (
            await repaired.node.readmodel.current_tags("c1")
            == await repaired.node.readmodel.current_tags("c2")
            == {"g": ["t"]}
        )
    rejected = [orjson.loads(line) for line in (tmp_path / f"{JOURNAL_FILE}.rejected").read_bytes().splitlines()]
    assert [entry["line"] for entry in rejected] == [3]

    async with running_node(tmp_path) as restarted:  # no flag needed any more: the line is set aside
        assert await restarted.node.readmodel.current_tags("c2") == {"g": ["t"]}


async def test_a_journaled_entry_that_fails_on_replay_is_reported_with_its_line_and_skipped_only_on_request(
    tmp_path: Path,
) -> None:
    async with running_node(tmp_path) as running:
        assert (await running.post("/v1/groups", group(count_rule(1)))).status_code == 201
    journal = tmp_path / JOURNAL_FILE
    poisoned = group(count_rule(10**40), "old") | {"version": 1}  # as a version without bounds journaled it
    entry = {"k": "definitions", "at": "2026-11-23T08:31:00Z", "r": [["old", json.dumps(poisoned)]]}
    with journal.open("ab") as file:
        file.write(orjson.dumps(entry) + b"\n")

    for _ in range(2):  # every start says the same, and says it clearly
        with pytest.raises(JournalError) as stopped:
            async with running_node(tmp_path):
                pass
        assert stopped.value.line == 2
        assert "order_count" in stopped.value.reason
        assert len(str(stopped.value)) < 1000

    async with running_node(tmp_path, skip_bad_journal_lines=True) as repaired:
        assert sorted(repaired.node.tagger.groups) == ["g"]
        assert (await repaired.post("/v1/events", order("c1", "e1"))).status_code == 202
    async with running_node(tmp_path) as restarted:
        assert await restarted.node.readmodel.current_tags("c1") == {"g": ["t"]}
