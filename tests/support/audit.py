"""What every fault test and the soak (benchmarks/soak.py) end with: the whole system compared with
`tagstream replay` of what was accepted.

- every event answered 2xx is on `events` (an event answered otherwise may be there too: a 503 may
  have been written, docs/ingest.md);
- `tag-changes` holds, per customer, seqs 1..n with one change per seq (identical repeats allowed:
  consumers drop them by seq) and folds to the tags replay gives for the events on the topic;
- the read model (Redis, as the HTTP API serves it) holds those tags for every customer;
- every step a playbook owes for those changes was decided once (sent, suppressed or cancelled, not
  failed), and each sent one reached the provider under its idempotency key exactly once.

`Findings` lists what is wrong rather than raising, so the soak can count it; tests assert
`findings.problems() == []`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis

from schemas.tags import TagChanged
from services.runtime.program_files import load_playbooks
from services.runtime.readmodel import ReadModel
from services.runtime.step_keys import step_key
from tests.support.kafka_io import TopicReader
from tests.support.tag_streams import fold_tag_changes, replay_tags

DECIDED = frozenset({"sent", "suppressed", "cancelled"})
"""Outcomes that settle a step; `failed` (the DLQ) is a lost send, `deferred`/`scheduled` are not final."""
SHOWN = 5
"""Examples quoted per kind of problem: enough to start from, short enough to read."""


@dataclass
class Findings:
    accepted: int = 0
    on_topic: int = 0
    customers: int = 0
    tag_changes: int = 0
    repeats: int = 0
    owed_steps: int = 0
    redelivered: int = 0
    """sent steps the provider got more than once under one key (it deduplicates them)"""
    misfiled: int = 0
    """records on `events` keyed otherwise than by their customer (none, or another's)"""
    missing_events: list[str] = field(default_factory=list)
    not_dead_lettered: list[str] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    stream_vs_replay: list[str] = field(default_factory=list)
    readmodel_vs_replay: list[str] = field(default_factory=list)
    lost_sends: list[str] = field(default_factory=list)
    unexpected_sends: list[str] = field(default_factory=list)

    @property
    def mismatches(self) -> int:
        """Every disagreement with replay or between the stages: the soak's headline figure (0 is right)."""
        return sum(len(found) for found in self._kinds().values())

    def problems(self) -> list[str]:
        return [f"{kind} ({len(found)}): {found[:SHOWN]}" for kind, found in self._kinds().items() if found]

    def summary(self) -> str:
        return (
            f"{self.accepted} events accepted, {self.on_topic} on the topic ({self.misfiled} misfiled), "
            f"{self.customers} customers, "
            f"{self.tag_changes} tag changes ({self.repeats} repeats), {self.owed_steps} steps owed "
            f"({self.redelivered} redelivered under their key), {self.mismatches} mismatches"
        )

    def _kinds(self) -> dict[str, list[str]]:
        return {
            "accepted events missing from the topic": self.missing_events,
            "misfiled records not dead-lettered": self.not_dead_lettered,
            "seq gaps": self.gaps,
            "different changes under one seq": self.conflicts,
            "customers whose tag-change stream differs from replay": self.stream_vs_replay,
            "customers whose read model differs from replay": self.readmodel_vs_replay,
            "steps owed but never sent or decided": self.lost_sends,
            "sends nothing owed": self.unexpected_sends,
        }


@dataclass
class System:
    """Where a run's results live."""

    bootstrap: str
    topics: dict[str, str]
    """TopicNames field -> topic: events, events_dlq, tag_changes, notifications"""
    redis_url: str
    key_prefix: str
    groups: list[Any]
    playbooks: str | None = None
    """the notifier's playbooks file (YAML); None: no notifier in the run"""


async def audit(
    system: System,
    accepted: set[str],
    deliveries: Callable[[], Counter[str]] = Counter,
    *,
    settle_s: float = 60.0,
) -> Findings:
    """Compare everything with replay. `deliveries()`: idempotency key -> requests the provider has
    answered 2xx so far. Waits up to `settle_s` for the read model and the notifier to finish what is
    on the topics."""
    findings = Findings(accepted=len(accepted))
    lines = await _events_on_topic(system, findings, accepted)
    expected = replay_tags(lines, system.groups)
    stream = await read_topic(system.bootstrap, system.topics["tag_changes"])
    fold = fold_tag_changes(stream)
    findings.tag_changes, findings.repeats = len(stream), fold.repeats
    findings.gaps, findings.conflicts = fold.gaps, fold.conflicts
    customers = {orjson.loads(line)["customer_id"] for line in lines} | set(fold.final)
    findings.customers = len(customers)
    findings.stream_vs_replay = _differ(customers, fold.final, expected)
    findings.readmodel_vs_replay = await _read_model_differs(system, customers, expected, settle_s)
    if system.playbooks is not None:
        await _sends(system, stream, deliveries, findings, settle_s)
    return findings


async def read_topic(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    async with TopicReader(bootstrap, topic) as reader:
        await reader.drain(timeout=120)
        return reader.json()


async def _events_on_topic(system: System, findings: Findings, accepted: set[str]) -> list[bytes]:
    """The lines the tagger must fold: those keyed by their customer. Any other record (no key, a wrong
    one) must be on the DLQ instead, as `mismatched_key` with its partition and offset."""
    async with TopicReader(system.bootstrap, system.topics["events"]) as reader:
        await reader.drain(timeout=120)
        records = list(reader.records)
    lines, misfiled = [], set()
    for record in records:
        event = orjson.loads(record.value)
        if record.key == str(event.get("customer_id")).encode():
            lines.append(record.value)
        else:
            misfiled.add((record.partition, record.offset))
    on_topic = {orjson.loads(line)["event_id"] for line in lines}
    findings.on_topic = len(on_topic)
    findings.missing_events = sorted(accepted - on_topic)
    if misfiled:
        letters = await read_topic(system.bootstrap, system.topics["events_dlq"])
        lettered = {(dl["partition"], dl["offset"]) for dl in letters if dl["error"] == "mismatched_key"}
        findings.not_dead_lettered = [f"partition {p} offset {o}" for p, o in sorted(misfiled - lettered)]
    findings.misfiled = len(misfiled)
    return lines


def _differ(customers: set[str], found: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    return [
        f"{customer}: {found.get(customer, {})} != replay {expected.get(customer, {})}"
        for customer in sorted(customers)
        if found.get(customer, {}) != expected.get(customer, {})
    ]


async def _read_model_differs(
    system: System, customers: set[str], expected: dict[str, Any], settle_s: float
) -> list[str]:
    """The read model against replay, once it is ready and stops changing towards it (or `settle_s`)."""
    redis = aioredis.from_url(system.redis_url)
    reads = ReadModel(redis, key_prefix=system.key_prefix)
    deadline = time.monotonic() + settle_s
    try:
        while True:
            status = await reads.status()
            found = {customer: await reads.current_tags(customer) for customer in customers} if status.ready else {}
            differ = _differ(customers, found, expected) if status.ready else ["the read model is not ready"]
            if not differ or time.monotonic() > deadline:
                return differ
            await asyncio.sleep(1.0)
    finally:
        await redis.aclose()


async def _sends(
    system: System,
    stream: list[dict[str, Any]],
    deliveries: Callable[[], Counter[str]],
    findings: Findings,
    settle_s: float,
) -> None:
    assert system.playbooks is not None
    playbooks = load_playbooks(system.playbooks)
    owed: dict[str, str] = {}
    for change in {(c["customer_id"], c["seq"]): c for c in stream}.values():
        parsed = TagChanged.model_validate(change)
        for playbook in playbooks.matching(parsed):
            for number, step in enumerate(playbook.steps):
                key = step_key(playbook.id, number, parsed.customer_id, parsed.seq)
                owed[key] = f"{playbook.id}#{number} {step.channel} for {parsed.customer_id} seq {parsed.seq}"
    findings.owed_steps = len(owed)
    deadline = time.monotonic() + settle_s
    while True:
        delivered = deliveries()
        outcomes = await read_topic(system.bootstrap, system.topics["notifications"])
        decided = {o["idempotency_key"]: o["outcome"] for o in outcomes if o["outcome"] in DECIDED}
        sent = {key for key, outcome in decided.items() if outcome == "sent"}
        lost = [f"{owed[key]}: not decided" for key in owed if key not in decided]
        lost += [
            f"{owed[key]}: sent, the provider never answered 2xx" for key in sent & owed.keys() if not delivered[key]
        ]
        if not lost or time.monotonic() > deadline:
            break
        await asyncio.sleep(1.0)
    findings.lost_sends = sorted(lost)
    findings.unexpected_sends = sorted(key for key in delivered if key not in owed)
    findings.redelivered = sum(count - 1 for count in delivered.values() if count > 1)
