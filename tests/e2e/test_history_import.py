"""Loading a quarter of history messages no one, in both modes; the live path still works after.

`tagstream import` (the real command, over HTTP) loads a generated quarter (Asia/Shanghai times,
free orders, resent lines) into a fresh embedded node and into a fresh Kafka stack (tagger,
ingest and notifier processes on the real broker and Redis). The playbooks would welcome every first
order and win back every customer quiet for three weeks: the import must send nothing. Then one live
order from a new customer is welcomed, and one from an imported repeat buyer is not.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support.history import GROUPS, PLAYBOOKS, live_order, repeat_buyer, write_quarter
from tests.support.netprobe import free_port
from tests.support.processes import (
    EmbeddedProcess,
    ServiceProcess,
    wait_caught_up,
)
from tests.support.provider import SIGNING_SECRET, LocalProvider
from tests.support.stack import ADMIN, KEYS, OPERATOR, services_stack

PARTITIONS = 3
CUSTOMERS = 60


def _import(url: str, history: Path) -> dict[str, Any]:
    tagstream = Path(sys.executable).parent / "tagstream"
    env = dict(os.environ) | {"TAGSTREAM_API_KEY": OPERATOR}
    done = subprocess.run(
        [str(tagstream), "import", str(history), "--url", url, "--batch", "400"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "import: line" in done.stderr  # the progress line
    return dict(orjson.loads(Path(f"{history}.import-state.json").read_bytes()))


async def _until(what: str, check: Any, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


async def _load_and_go_live(node: ServiceProcess, provider: LocalProvider, history: Path, settled: Any) -> None:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    async with httpx.AsyncClient(base_url=node.url, timeout=15) as http:
        for group in GROUPS:
            assert (await http.post("/v1/groups", json=group, headers=admin)).status_code == 201
        customers = write_quarter(history, customers=CUSTOMERS, end=datetime.now(UTC))
        state = await asyncio.to_thread(_import, node.url, history)
        lines = len(history.read_bytes().splitlines())
        assert state["done"]
        assert state["rejected"] == 0
        assert state["accepted"] + state["duplicate"] == lines
        assert state["duplicate"] > 0

        async def churned() -> bool:  # the import's changes are all in, as tags to read
            found = 0
            for customer in customers:
                tags = (await http.get(f"/v1/customers/{customer}/tags", headers=admin)).json()
                found += "likely" in str(tags)
            return found > 0

        await _until("imported customers tagged as likely to churn", churned)
        await settled()
        assert provider.requests == [], "the import sent messages"

        repeat = repeat_buyer(history)
        newcomer = f"live-{uuid.uuid4().hex[:6]}"
        for customer in (repeat, newcomer):
            assert (await http.post("/v1/events", json=live_order(customer), headers=operator)).status_code == 202

        async def welcomed() -> bool:
            return len(provider.requests) >= 1

        await _until("the welcome push for the live newcomer", welcomed)
        await asyncio.sleep(3)
    sent = [(request["body"]["playbook_id"], request["body"]["customer_id"]) for request in provider.requests]
    assert sent == [("welcome", newcomer)]


@pytest.fixture
def embedded(tmp_path: Path, provider: LocalProvider) -> Iterator[EmbeddedProcess]:
    playbooks = tmp_path / "playbooks.yaml"
    playbooks.write_text(PLAYBOOKS)
    env = dict(os.environ) | {
        "TAGSTREAM_INGEST__HOST": "127.0.0.1",
        "TAGSTREAM_INGEST__PORT": str(free_port()),
        "TAGSTREAM_INGEST__API_KEYS": orjson.dumps(KEYS).decode(),
        "TAGSTREAM_NOTIFIER__PUSH_URL": provider.url,
        "TAGSTREAM_NOTIFIER__SIGNING_SECRET": SIGNING_SECRET,
        "TAGSTREAM_NOTIFIER__QUIET_HOURS": "00:00-00:00",  # none: the test may run at night
    }
    node = EmbeddedProcess(env, tmp_path / "node.log", data_dir=tmp_path / "data", playbooks=playbooks)
    node.start()
    yield node
    node.stop()


async def test_a_quarter_imported_into_a_fresh_embedded_node_messages_no_one(
    embedded: EmbeddedProcess, provider: LocalProvider, tmp_path: Path
) -> None:
    await embedded.wait_ready()

    async def settled() -> None:
        await asyncio.sleep(3)  # the node runs due steps every second

    await _load_and_go_live(embedded, provider, tmp_path / "quarter.jsonl", settled)


async def test_an_import_killed_midway_resumes_with_no_line_lost_or_counted_twice(
    embedded: EmbeddedProcess, provider: LocalProvider, tmp_path: Path
) -> None:
    await embedded.wait_ready()
    history = tmp_path / "quarter.jsonl"
    write_quarter(history, customers=CUSTOMERS, end=datetime.now(UTC))
    state_file = Path(f"{history}.import-state.json")
    tagstream = Path(sys.executable).parent / "tagstream"
    first = subprocess.Popen(
        # paced, so the kill lands midway however fast the machine: line 500 after ~2.5 s, its ~3,900 lines at ~19 s
        [str(tagstream), "import", str(history), "--url", embedded.url, "--batch", "50", "--rate", "200"],
        env=dict(os.environ) | {"TAGSTREAM_API_KEY": OPERATOR},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    async def midway() -> bool:
        return state_file.exists() and orjson.loads(state_file.read_bytes())["line"] >= 500

    await _until("the first run past line 500", midway, timeout=120)
    first.kill()
    first.wait(30)
    stopped = orjson.loads(state_file.read_bytes())
    assert not stopped["done"]

    state = await asyncio.to_thread(_import, embedded.url, history)
    assert state["done"]
    assert state["accepted"] + state["duplicate"] + state["rejected"] == len(history.read_bytes().splitlines())
    async with httpx.AsyncClient(base_url=embedded.url, timeout=15) as http:
        metrics = (await http.get("/metrics")).text
    [served] = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith('tagstream_ingest_events_total{outcome="accepted"}')
    ]
    # Each line was sent once, but for the one batch a kill between the server's answer and the
    # state write may send again (the tagger ignores its repeated event ids).
    assert 0 <= served - state["accepted"] <= 50
    assert provider.requests == []


@pytest.fixture
def stack(kafka_bootstrap: str, redis_url: str, tmp_path: Path, provider: LocalProvider) -> Iterator[dict[str, Any]]:
    services = services_stack(
        name="import",
        kafka=kafka_bootstrap,
        redis_url=redis_url,
        workdir=tmp_path,
        partitions=PARTITIONS,
        playbooks=PLAYBOOKS,
        push_url=provider.url,
    )
    tagger, ingest, notifier = services.tagger, services.ingest, services.notifier
    topics, prefix = services.topics, services.prefix
    parts = [tagger, ingest, notifier]
    try:
        for part in parts:
            part.start()
        yield {"ingest": ingest, "tagger": tagger, "notifier": notifier, "topics": topics, "prefix": prefix}
    finally:
        for part in reversed(parts):
            part.stop()


async def test_a_quarter_imported_into_a_fresh_kafka_stack_messages_no_one(
    stack: dict[str, Any], provider: LocalProvider, kafka_bootstrap: str, tmp_path: Path
) -> None:
    ingest, topics, prefix = stack["ingest"], stack["topics"], stack["prefix"]
    await asyncio.gather(stack["tagger"].wait_ready(), ingest.wait_ready(), stack["notifier"].wait_ready())

    async def settled() -> None:  # every imported event tagged, every tag change seen by the notifier
        await wait_caught_up(kafka_bootstrap, prefix, topics["events"], PARTITIONS)
        await wait_caught_up(kafka_bootstrap, f"{prefix}-notifier", topics["tag_changes"], PARTITIONS)
        await asyncio.sleep(2)

    await _load_and_go_live(ingest, provider, tmp_path / "quarter.jsonl", settled)
