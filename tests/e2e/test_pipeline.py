"""The whole product as deployed: broker, Redis, the three services as processes, and Prometheus.

Events go in over HTTP; the tagger tags the customers, the projector makes the tags readable over
HTTP, the notifier sends a push to a local provider, and a real Prometheus server (Debian's package,
with our alert rules loaded) scrapes all three services and answers queries for their series.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.netprobe import free_port
from tests.support.payloads import order, value_group
from tests.support.provider import LocalProvider
from tests.support.stack import ADMIN, OPERATOR, services_stack

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy/helm/tagstream/files/alerts.yaml"
PARTITIONS = 3
PLAYBOOKS = """
templates:
  thanks: "Thank you ${name|for your order}!"
playbooks:
  - id: big-spender
    trigger: {group: value, tag: high, on: added}
    steps:
      - {channel: push, template: thanks}
"""


class Prometheus:
    """Debian's Prometheus server (installed by scripts/promtool.sh with promtool) on a free port."""

    def __init__(self, workdir: Path, targets: dict[str, int]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._workdir = workdir
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ALERTS)],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                for job, port in targets.items()
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        promtool = subprocess.run(
            [str(REPO / "scripts/promtool.sh"), "path"], capture_output=True, text=True, check=True
        ).stdout.strip()
        server = Path(promtool).with_name("prometheus")
        assert server.exists(), f"no Prometheus server next to {promtool}"
        with (self._workdir / "prometheus.log").open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(server),
                    f"--config.file={self._workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self._workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)

    async def value(self, client: httpx.AsyncClient, query: str) -> float | None:
        answer = (await client.get(f"{self.url}/api/v1/query", params={"query": query})).json()
        assert answer["status"] == "success", answer
        results = answer["data"]["result"]
        return sum(float(result["value"][1]) for result in results) if results else None


@pytest.fixture
def stack(kafka_bootstrap: str, redis_url: str, tmp_path: Path, provider: LocalProvider) -> Iterator[dict[str, Any]]:
    services = services_stack(
        name="e2e",
        kafka=kafka_bootstrap,
        redis_url=redis_url,
        workdir=tmp_path,
        partitions=PARTITIONS,
        playbooks=PLAYBOOKS,
        push_url=provider.url,
    )
    tagger, ingest, notifier = services.tagger, services.ingest, services.notifier
    notifier_port = services.notifier_port
    prometheus = Prometheus(
        tmp_path,
        {"tagstream-tagger": tagger.port, "tagstream-ingest": ingest.port, "tagstream-notifier": notifier_port},
    )
    parts = [tagger, ingest, notifier, prometheus]
    try:
        for part in parts:
            part.start()
        yield {"ingest": ingest, "tagger": tagger, "notifier": notifier, "prometheus": prometheus, "logs": tmp_path}
    finally:
        for part in reversed(parts):
            part.stop()


async def _until(what: str, check: Any, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


async def test_events_over_http_become_tags_a_notification_and_series_in_prometheus(
    stack: dict[str, Any], provider: LocalProvider
) -> None:
    ingest, prometheus = stack["ingest"], stack["prometheus"]
    await asyncio.gather(stack["tagger"].wait_ready(), ingest.wait_ready(), stack["notifier"].wait_ready())
    admin = {"Authorization": f"Bearer {ADMIN}"}
    operator = {"Authorization": f"Bearer {OPERATOR}"}
    async with httpx.AsyncClient(base_url=ingest.url, timeout=15) as http:
        assert (await http.post("/v1/groups", json=value_group("auto"), headers=admin)).status_code == 201
        events = [order("alice", "1500"), order("alice", "700"), order("bob", "80")]
        assert (await http.post("/v1/events", json=events, headers=operator)).status_code == 202

        async def alice_is_high() -> bool:
            tags = (await http.get("/v1/customers/alice/tags", headers=admin)).json()
            return "high" in str(tags)

        await _until("alice's high value tag over HTTP", alice_is_high)
        bob = (await http.get("/v1/customers/bob/tags", headers=admin)).json()
        assert "low" in str(bob)
        assert "high" not in str(bob)

    async def pushed() -> bool:
        return len(provider.requests) >= 1

    await _until("the push at the local provider", pushed)
    assert len(provider.requests) == 1  # alice only: bob is low value

    async with httpx.AsyncClient(timeout=10) as client:
        await _until("Prometheus up", lambda: _ready(client, prometheus.url))
        for query in (
            'sum(up{job=~"tagstream-.*"}) == 3',
            "tagstream_events_processed_total > 0",
            "tagstream_tag_changes_total > 0",
            'tagstream_http_requests_total{route="/v1/events",status="202"} > 0',
            'tagstream_notifications_total{channel="push",outcome="sent"} > 0',
            "tagstream_notifier_provider_seconds_count > 0",
        ):

            async def present(query: str = query) -> bool:
                return await prometheus.value(client, query) is not None

            await _until(f"Prometheus series for {query}", present, timeout=60)
        rules = (await client.get(f"{prometheus.url}/api/v1/rules")).json()["data"]["groups"]
        assert sum(len(group["rules"]) for group in rules) > 0, "our alert rules are loaded"


async def _ready(client: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await client.get(f"{url}/-/ready")).status_code == 200
    except httpx.TransportError:
        return False
