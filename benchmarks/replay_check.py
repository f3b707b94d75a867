"""A benchmark row's output held against `tagstream replay` of the same events.

The replay is run once per benchmark through the command line (`tagstream replay --changes`); every
row's tag-change topic must then hold, per customer, exactly the replay's changes in `seq` order
(identical repeats allowed: at-least-once), and end in the replay's tags.
"""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from schemas.excerpt import excerpt


@dataclass(frozen=True)
class Expected:
    tags: dict[str, dict[str, list[str]]]
    changes: dict[str, list[dict[str, Any]]]

    @property
    def change_count(self) -> int:
        return sum(len(changes) for changes in self.changes.values())


@dataclass
class Check:
    customers: int = 0
    changes: int = 0
    repeats: int = 0
    """Identical re-sends of a change under its seq (at-least-once after a redelivery)."""
    problems: list[str] = field(default_factory=list)
    """The first few differences, each naming the customer."""
    wrong_customers: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def describe(self) -> str:
        if self.ok:
            return f"equal to replay ({self.customers:,} customers, {self.changes:,} changes)"
        return f"{self.wrong_customers:,} customers differ from replay, e.g. {self.problems[0]}"


def replay(events: Path, rules: Path, workdir: Path, *, timezone: str, currency: str) -> Expected:
    """`tagstream replay` of the events file: every customer's tags and changes."""
    tags_file, changes_file = workdir / "replay-tags.jsonl", workdir / "replay-changes.jsonl"
    tagstream = Path(sys.executable).parent / "tagstream"
    command = [str(tagstream), "replay", str(events), "--rules", str(rules), "--out", str(tags_file)]
    command += ["--changes", str(changes_file), "--timezone", timezone, "--currency", currency]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tags = {}
    for line in tags_file.read_bytes().splitlines():
        customer = orjson.loads(line)
        tags[customer["customer_id"]] = customer["tags"]
    changes: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in changes_file.read_bytes().splitlines():
        change = orjson.loads(line)
        changes[change["customer_id"]].append(change)
    return Expected(tags, dict(changes))


def check(values: list[bytes], expected: Expected, *, shown: int = 3) -> Check:
    """Compare a row's tag-change records with the replay, customer by customer."""
    by_customer: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    result = Check()
    for value in values:
        change = orjson.loads(value)
        seen = by_customer[change["customer_id"]]
        earlier = seen.get(change["seq"])
        if earlier is None:
            seen[change["seq"]] = change
        elif earlier == change:
            result.repeats += 1
        else:
            _differs(result, change["customer_id"], f"two different changes under seq {change['seq']}", shown)
    for customer_id in sorted(set(by_customer) | set(expected.changes) | set(expected.tags)):
        got = [change for _, change in sorted(by_customer.get(customer_id, {}).items())]
        result.customers += 1
        result.changes += len(got)
        want = expected.changes.get(customer_id, [])
        if got != want:
            _differs(result, customer_id, _first_difference(got, want), shown)
        elif _tags(got) != expected.tags.get(customer_id, {}):
            _differs(result, customer_id, f"tags {_tags(got)} but replay has {expected.tags.get(customer_id)}", shown)
    return result


def _tags(changes: list[dict[str, Any]]) -> dict[str, list[str]]:
    held: dict[str, set[str]] = defaultdict(set)
    for change in changes:
        tags = held[change["group_id"]]
        (tags.add if change["change"] == "added" else tags.discard)(change["tag_id"])
    return {group: sorted(tags) for group, tags in sorted(held.items()) if tags}


def _first_difference(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> str:
    for index, (mine, theirs) in enumerate(zip(got, want, strict=False)):
        if mine != theirs:
            keys = sorted(key for key in set(mine) | set(theirs) if mine.get(key) != theirs.get(key))
            detail = ", ".join(f"{key}: {mine.get(key)!r} vs {theirs.get(key)!r}" for key in keys)
            return f"change {index + 1} differs ({excerpt(detail, 300)})"
    return f"{len(got)} changes but replay has {len(want)}"


def _differs(result: Check, customer_id: str, what: str, shown: int) -> None:
    result.wrong_customers += 1
    if len(result.problems) < shown:
        result.problems.append(f"{customer_id}: {what}")
