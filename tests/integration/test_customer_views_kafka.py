"""The operator's views in Kafka mode, on the real broker and Redis, with two tagger workers over
four partitions: a preview of a rule change counts exactly what applying it then does (10,000
customers), a customer's aggregates come from the worker holding them, tag counts and message logs
from the projector, and a preview nobody answers names the partitions missing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from schemas.notifications import NotificationOutcome
from services.runtime.settings import KafkaSettings, Settings
from tests.support.ingest_harness import (
    VALUE,
    Client,
    cond,
    create_topics,
    ingest_settings,
    rule,
    running_ingest,
    unique,
)
from tests.support.kafka_io import TopicReader, produce
from tests.support.processes import TaggerProcess, produce_at_rate, tagger_environment, wait_caught_up

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

PARTITIONS = 4
CUSTOMERS = 10_000
AMOUNTS = ("50", "150", "250", "320", "350", "380", "450", "800", "2100", "0")
DRAFT = VALUE | {
    "tags": [
        {"id": "high", "name": "高价值", "rule": rule(cond("total_spent", "gte", 2000))},
        {"id": "mid", "name": "中价值", "rule": rule(cond("total_spent", "gte", 400))},
        {"id": "low", "name": "低价值", "rule": rule(cond("total_spent", "lt", 400))},
    ]
}


def settings_for(kafka_bootstrap: str, redis_url: str, prefix: str, **ingest: Any) -> Settings:
    settings = ingest_settings(kafka_bootstrap, redis_url, prefix, **ingest)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, partitions=PARTITIONS, replication_factor=1)
    return settings.model_copy(update={"kafka": kafka})


async def start_workers(
    settings: Settings, tmp_path: Path, count: int, *, projector: bool = True
) -> list[TaggerProcess]:
    topics = {name: getattr(settings.topics, name) for name in type(settings.topics).model_fields}
    workers = []
    for number in range(count):
        datadir = tmp_path / f"tagger-{number}"
        datadir.mkdir()
        env = tagger_environment(
            settings.kafka.bootstrap_servers,
            app_id(settings),
            topics,
            PARTITIONS,
            datadir,
            projector="true" if projector else "false",
            batch_within_s="0.05",
        )
        env["TAGSTREAM_REDIS__URL"] = settings.redis.url
        env["TAGSTREAM_REDIS__KEY_PREFIX"] = settings.redis.key_prefix
        worker = TaggerProcess(env, datadir / "tagger.log")
        worker.start()
        workers.append(worker)
    await asyncio.gather(*(worker.wait_ready() for worker in workers))
    return workers


async def load_customers(settings: Settings, customers: int) -> None:
    """One order each, amounts cycling through AMOUNTS, until the workers have processed them all."""
    lines = [order(f"c{n:05d}", AMOUNTS[n % len(AMOUNTS)]) for n in range(customers)]
    await produce_at_rate(settings.kafka.bootstrap_servers, settings.topics.events, lines, per_second=5000)
    timeout = max(180.0, customers / 200)
    bootstrap, events = settings.kafka.bootstrap_servers, settings.topics.events
    await wait_caught_up(bootstrap, app_id(settings), events, PARTITIONS, timeout=timeout)


def cpu_seconds(worker: TaggerProcess) -> float:
    """User + system CPU time the worker process has used (Linux /proc)."""
    assert worker.process is not None
    fields = Path(f"/proc/{worker.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def app_id(settings: Settings) -> str:
    return f"{settings.redis.key_prefix.rstrip(':')}-tagger"


def order(customer: str, amount: str) -> bytes:
    event = {
        "type": "order_paid",
        "event_id": unique("e"),
        "customer_id": customer,
        "occurred_at": datetime.now(UTC).isoformat(),
        "order_id": unique("o"),
        "amount": amount,
        "currency": "CNY",
    }
    return orjson.dumps(event)


@pytest.fixture
async def shop(kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> AsyncIterator[tuple[Settings, Client]]:
    settings = settings_for(kafka_bootstrap, redis_url, unique("views"))
    await create_topics(settings)
    async with running_ingest(settings) as client:
        yield settings, client


async def test_a_preview_nobody_answers_names_the_missing_partitions(kafka_bootstrap: str, redis_url: str) -> None:
    settings = settings_for(kafka_bootstrap, redis_url, unique("views"), preview_timeout_s=2.0)
    await create_topics(settings)
    async with running_ingest(settings) as client:
        assert (await client.post("/v1/groups", "admin", json=VALUE)).status_code == 201
        started = time.monotonic()
        response = await client.post("/v1/groups/value:preview", "admin", json=DRAFT)
    assert response.status_code == 504, response.text
    assert "partitions [0, 1, 2, 3]" in response.json()["detail"]
    assert time.monotonic() - started < 30


async def test_a_preview_over_two_workers_counts_exactly_what_applying_the_draft_then_does(
    shop: tuple[Settings, Client], tmp_path: Path
) -> None:
    settings, client = shop
    assert (await client.post("/v1/groups", "admin", json=VALUE)).status_code == 201
    workers = await start_workers(settings, tmp_path, 2)
    try:
        await load_customers(settings, CUSTOMERS)

        async with TopicReader(settings.kafka.bootstrap_servers, settings.topics.tag_changes) as changes:
            before = await changes.end_offsets()
            response = await client.post("/v1/groups/value:preview?sample=3", "admin", json=DRAFT)
            assert response.status_code == 200, response.text
            preview = response.json()
            assert await changes.end_offsets() == before  # a preview emits nothing

            expected = {(i["group_id"], i["tag_id"]): (i["gained"], i["lost"]) for i in preview["impacts"]}
            moved = 3 * CUSTOMERS // len(AMOUNTS)  # 320, 350 and 380: mid under the draft no longer
            assert expected == {("value", "low"): (moved, 0), ("value", "mid"): (0, moved)}
            assert preview["customers"] == CUSTOMERS
            sample = next(i for i in preview["impacts"] if i["tag_id"] == "low")["gained_sample"]
            assert [s["customer_id"] for s in sample] == ["c00003", "c00004", "c00005"]
            assert sample[0]["reason"]["conditions"][0]["observed"] == "320"
            dry = await dry_run(settings, DRAFT, tmp_path)
            assert dry.returncode == 0, dry.stderr
            assert f"  value/low: +{moved} -0 (e.g. +c00003 total_spent=320)" in dry.stdout.splitlines(), dry.stdout
            assert f"  value/mid: +0 -{moved} (e.g. -c00003 total_spent=320)" in dry.stdout.splitlines(), dry.stdout

            assert (await client.put("/v1/groups/value", "admin", json=DRAFT)).status_code == 200

            def applied(records: list[Any]) -> Counter[tuple[str, str, str]]:
                found = [orjson.loads(record.value) for record in records]
                return Counter((c["group_id"], c["tag_id"], c["change"]) for c in found if c["source"] == "rule_change")

            await changes.until(lambda records: sum(applied(records).values()) >= 2 * moved, timeout=120)
            await asyncio.sleep(2)  # anything more would show up now
            await changes.drain()
            counted = applied(changes.records)
        assert {(g, t): (counted[(g, t, "added")], counted[(g, t, "removed")]) for g, t, _ in counted} == expected
    finally:
        for worker in workers:
            worker.stop()


async def test_a_customers_aggregates_tag_counts_and_messages_come_from_where_they_are_kept(
    shop: tuple[Settings, Client], tmp_path: Path
) -> None:
    settings, client = shop
    assert (await client.post("/v1/groups", "admin", json=VALUE)).status_code == 201
    workers = await start_workers(settings, tmp_path, 1)
    try:
        bootstrap = settings.kafka.bootstrap_servers
        lines = [order("li", "120.50"), order("li", "0"), order("wang", "2500")]
        await produce(
            bootstrap,
            settings.topics.events,
            [(b"li", lines[0], None), (b"li", lines[1], None), (b"wang", lines[2], None)],
        )
        await until_read(client, "/v1/tag-counts", lambda body: sum(t["count"] for t in body["groups"][0]["tags"]) == 2)

        view = (await client.get("/v1/customers/li")).json()
        assert view["unavailable"] == []
        assert (view["aggregates"]["order_count"], view["aggregates"]["total_spent"]) == (2, "120.50")
        assert [(g["id"], [t["id"] for t in g["tags"]]) for g in view["groups"]] == [("value", ["low"])]
        counts = (await client.get("/v1/tag-counts?days=2")).json()
        assert {t["id"]: t["count"] for t in counts["groups"][0]["tags"]} == {"high": 1, "mid": 0, "low": 1}
        assert counts["groups"][0]["tags"][2]["history"][-1]["count"] == 1

        decided = datetime.now(UTC)
        outcomes = [
            notification("li", "sent", decided),
            notification("li", "suppressed", decided + timedelta(seconds=1)),
        ]
        records = [(b"li", outcome.model_dump_json().encode(), None) for outcome in (*outcomes, outcomes[0])]
        await produce(bootstrap, settings.topics.notifications, records)  # the last one: a redelivery
        body = await until_read(client, "/v1/customers/li/messages", lambda body: len(body["messages"]) >= 2)
        assert [m["outcome"] for m in body["messages"]] == ["suppressed", "sent"]  # newest first, once each
    finally:
        for worker in workers:
            worker.stop()


async def dry_run(settings: Settings, group: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`tagstream tags apply --dry-run` of a rules file holding `group`, against these topics."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": [group]}, allow_unicode=True), encoding="utf-8")
    env = dict(os.environ) | {f"TAGSTREAM_TOPICS__{name.upper()}": value for name, value in settings.topics}
    env |= {
        "TAGSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "TAGSTREAM_KAFKA__PARTITIONS": str(PARTITIONS),
        "TAGSTREAM_KAFKA__REPLICATION_FACTOR": "1",
    }
    command = [str(Path(sys.executable).parent / "tagstream"), "tags", "apply", "-f", str(rules), "--dry-run"]
    return await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True, timeout=180)


async def until_read(client: Client, path: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """GET until `done`, through the 503s of a read model still being built (a fresh Redis prefix)."""
    deadline = time.monotonic() + 60
    while True:
        response = await client.get(path)
        assert response.status_code in (200, 503), response.text
        if response.status_code == 200 and done(body := response.json()):
            return dict(body)
        assert time.monotonic() < deadline, f"timed out on {path}: {response.text}"
        await asyncio.sleep(0.2)


def notification(customer: str, outcome: str, decided_at: datetime) -> NotificationOutcome:
    return NotificationOutcome.model_validate(
        {
            "outcome": outcome,
            "reason": "cap" if outcome == "suppressed" else "",
            "idempotency_key": unique("k"),
            "playbook_id": "thanks",
            "step": 0,
            "channel": "push",
            "customer_id": customer,
            "trigger": {"group_id": "value", "tag_id": "low", "change": "added", "seq": 1, "occurred_at": decided_at},
            "due_at": decided_at,
            "decided_at": decided_at,
        }
    )
