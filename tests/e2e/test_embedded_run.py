"""`tagstream run` as a small shop runs it: one real process, killed and restarted.

The ingest API, tagger, read model and notifier run in the one process with state in a data
directory; a local HTTP server stands in for the SMS provider. After a SIGKILL the restarted
process still knows every tag, history entry, consent and scheduled step, and the delayed SMS
is delivered once.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support.netprobe import free_port
from tests.support.payloads import order, value_group
from tests.support.processes import EmbeddedProcess
from tests.support.provider import SIGNING_SECRET, LocalProvider

ADMIN = "admin-key-0123456789abcdef"
OPERATOR = "operator-key-0123456789abcdef"
PLAYBOOKS = """
templates:
  hello: "Hello ${name|there}, welcome to our best customers."
playbooks:
  - id: big-spender
    trigger: {group: value, tag: high, on: added}
    steps:
      - {channel: push, template: hello}
      - {channel: sms, template: hello, delay: 6s}
"""


@pytest.fixture
def node(tmp_path: Path, provider: LocalProvider) -> Iterator[EmbeddedProcess]:
    playbooks = tmp_path / "playbooks.yaml"
    playbooks.write_text(PLAYBOOKS)
    keys = [
        {"key": ADMIN, "role": "admin", "name": "admin@shop"},
        {"key": OPERATOR, "role": "operator", "name": "ops@shop"},
    ]
    env = dict(os.environ) | {
        "TAGSTREAM_INGEST__HOST": "127.0.0.1",
        "TAGSTREAM_INGEST__PORT": str(free_port()),
        "TAGSTREAM_INGEST__API_KEYS": orjson.dumps(keys).decode(),
        "TAGSTREAM_NOTIFIER__SMS_URL": provider.url,
        "TAGSTREAM_NOTIFIER__SIGNING_SECRET": SIGNING_SECRET,
        "TAGSTREAM_NOTIFIER__QUIET_HOURS": "00:00-00:00",  # no quiet hours: the test may run at night
    }
    started = EmbeddedProcess(env, tmp_path / "node.log", data_dir=tmp_path / "data", playbooks=playbooks)
    yield started
    started.stop()


async def test_a_killed_embedded_node_restarts_with_everything_and_sends_the_delayed_sms_once(
    node: EmbeddedProcess, provider: LocalProvider
) -> None:
    node.start()
    await node.wait_ready()
    admin = {"Authorization": f"Bearer {ADMIN}"}
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        assert (await http.post("/v1/groups", json=value_group("both"), headers=admin)).status_code == 201
        profile = {"name": "李雷", "phone": "+86 138 0000 0000", "timezone": "Asia/Shanghai"}
        assert (await http.put("/v1/customers/c1/profile", json=profile, headers=operator)).status_code == 204
        assert (await http.put("/v1/customers/c2/opt-outs/sms", headers=operator)).status_code == 200
        events = [order("c1", "1500"), order("c1", "800.50"), order("c2", "99"), order("c3", "5000")]
        assert (await http.post("/v1/events", json=events, headers=operator)).status_code == 202
        before = {c: (await http.get(f"/v1/customers/{c}/tags", headers=admin)).json() for c in ("c1", "c2", "c3")}
        history = (await http.get("/v1/customers/c1/history", headers=admin)).json()
    assert "高价值" in str(before["c1"])
    assert "低价值" in str(before["c2"])

    node.kill()  # before the 6 s SMS is due
    assert provider.requests == []
    node.start()
    await node.wait_ready()

    async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        after = {c: (await http.get(f"/v1/customers/{c}/tags", headers=admin)).json() for c in ("c1", "c2", "c3")}
        assert after == before
        assert (await http.get("/v1/customers/c1/history", headers=admin)).json() == history
        assert (await http.get("/v1/customers/c2/opt-outs", headers=admin)).json()["opted_out"] == ["sms"]
        audience = await http.post("/v1/audiences/query", json={"any_of": ["value/high"]}, headers=admin)
        assert audience.json()["customer_ids"] == ["c1", "c3"]
        replaced = await http.put("/v1/groups/value", json=value_group("both") | {"name": "价值"}, headers=admin)
        assert replaced.json()["version"] == 2  # the version history survived the restart too

        deadline = time.monotonic() + 20
        while not provider.requests and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.5)  # a duplicate would come within a tick or two
    # c3 is high value too but has no phone number, so only c1 gets the SMS: once, across the kill
    assert [request["body"]["to"] for request in provider.requests] == ["+86 138 0000 0000"]
