"""`tagstream run` is the same product as the Kafka services: the notifier's global policy
from TAGSTREAM_NOTIFIER__*, the playbooks file reloaded without a restart, and the services' metrics.

Each test runs the real command in a child process, with a local HTTP server as the push and SMS
provider, and looks only at what a shop would see: provider requests, the log, and /metrics.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.metric_names import (
    PROMETHEUS_SERIES,
    exported,
    exported_series,
    metric_names,
    panel_expressions,
    rule_expressions,
)
from tests.support.netprobe import free_port
from tests.support.payloads import order, value_group
from tests.support.processes import EmbeddedProcess
from tests.support.provider import SIGNING_SECRET, LocalProvider
from tests.support.tools import CHART_FILES

ADMIN = "admin-key-0123456789abcdef"
HEADERS = {"Authorization": f"Bearer {ADMIN}"}
SHANGHAI = ZoneInfo("Asia/Shanghai")
WELCOME = """
templates:
  hello: "Hello ${name|there}"
playbooks:
  - id: welcome-high
    trigger: {group: value, tag: high, on: added}
    steps:
      - {channel: push, template: hello}
      - {channel: sms, template: hello}
      - {channel: sms, template: hello, delay: 2s}
"""

DASHBOARD = CHART_FILES / "dashboard.json"
ALERTS = CHART_FILES / "alerts.yaml"
KAFKA_ONLY = {"tagstream_lost_to_retention_total"}
"""Series of a Kafka service that a node never has a sample for (records it did not read before retention)."""

Start = Callable[..., Awaitable[EmbeddedProcess]]
Labels = tuple[tuple[str, str], ...]
Scraped = dict[str, dict[Labels, float]]
"""Sample name -> {its labels as sorted pairs: value}, as /metrics said."""


@pytest.fixture
def start_node(tmp_path: Path, provider: LocalProvider) -> Iterator[Start]:
    """Starts `tagstream run` with these playbooks and TAGSTREAM_* settings; stops it after the test."""
    started: list[EmbeddedProcess] = []

    async def start(playbooks: Path, **settings: str) -> EmbeddedProcess:
        env = dict(os.environ) | {
            "TAGSTREAM_INGEST__HOST": "127.0.0.1",
            "TAGSTREAM_INGEST__PORT": str(free_port()),
            "TAGSTREAM_INGEST__API_KEYS": orjson.dumps([{"key": ADMIN, "role": "admin", "name": "a"}]).decode(),
            "TAGSTREAM_NOTIFIER__PUSH_URL": provider.url,
            "TAGSTREAM_NOTIFIER__SMS_URL": provider.url,
            "TAGSTREAM_NOTIFIER__SIGNING_SECRET": SIGNING_SECRET,
        }
        env |= {f"TAGSTREAM_{name.upper()}": value for name, value in settings.items()}
        node = EmbeddedProcess(env, tmp_path / "node.log", data_dir=tmp_path / "data", playbooks=playbooks)
        started.append(node)
        node.start()
        await node.wait_ready()
        return node

    yield start
    for node in started:
        node.stop()


async def test_quiet_hours_hold_a_step_in_the_customers_zone_and_a_cap_suppresses_the_second_sms(
    tmp_path: Path, start_node: Start, provider: LocalProvider
) -> None:
    playbooks = tmp_path / "playbooks.yaml"
    playbooks.write_text(WELCOME)
    # Quiet hours around now in Shanghai: not around now in London (7 or 8 hours behind).
    local = datetime.now(SHANGHAI)
    quiet = f"{local - timedelta(minutes=30):%H:%M}-{local + timedelta(minutes=60):%H:%M}"
    node = await start_node(
        playbooks,
        shop__timezone="Asia/Shanghai",  # no notifier default zone set: c3, without a zone, is the shop's
        notifier__quiet_hours=quiet,
        notifier__quiet_channels='["push"]',
        notifier__caps='["sms:1/1d"]',
    )
    async with httpx.AsyncClient(base_url=node.url, timeout=10, headers=HEADERS) as http:
        assert (await http.post("/v1/groups", json=value_group())).status_code == 201
        profiles = {
            "c1": {"name": "李雷", "phone": "+86 138 0000 0001", "timezone": "Asia/Shanghai"},
            "c2": {"name": "Jane", "phone": "+44 7700 900002", "timezone": "Europe/London"},
        }
        for customer, profile in profiles.items():
            assert (await http.put(f"/v1/customers/{customer}/profile", json=profile)).status_code == 204
        events = [order(customer, "2500") for customer in ("c1", "c2", "c3")]
        assert (await http.post("/v1/events", json=events)).status_code == 202
        # the second SMS of each is due 2 s after the trigger
        scraped = await until_scraped(http, lambda found: notifications(found).get(("sms", "suppressed", "cap")) == 2)

    decided = notifications(scraped)
    assert decided[("push", "deferred", "quiet_hours")] == 2  # c1 in Shanghai, c3 in the shop's zone
    assert decided[("sms", "sent", "")] == 2
    assert decided[("sms", "suppressed", "cap")] == 2
    assert decided[("sms", "suppressed", "unreachable")] == 2  # c3 has no phone
    assert sorted(_customers(provider, "push")) == ["c2"]
    assert sorted(_customers(provider, "sms")) == ["c1", "c2"]
    log = (tmp_path / "node.log").read_text(encoding="utf-8")
    assert "notification suppressed (cap): sms step 2 of welcome-high for customer c1" in log
    assert "notification deferred (quiet_hours): push step 0 of welcome-high for customer c1" in log
    assert "notification deferred (quiet_hours): push step 0 of welcome-high for customer c3" in log


async def test_an_edited_playbooks_file_is_picked_up_without_a_restart_and_a_broken_one_keeps_the_last(
    tmp_path: Path, start_node: Start, provider: LocalProvider
) -> None:
    playbooks = tmp_path / "playbooks.yaml"
    playbooks.write_text(_pushes("first version", "high"))
    node = await start_node(playbooks, notifier__reload_interval_s="0.2", notifier__quiet_hours="off")
    async with httpx.AsyncClient(base_url=node.url, timeout=10, headers=HEADERS) as http:
        assert (await http.post("/v1/groups", json=value_group())).status_code == 201
        assert (await http.post("/v1/events", json=[order("c1", "2500")])).status_code == 202
        await _until(lambda: len(provider.requests) == 1, "the first version's push")

        _replace(playbooks, _pushes("second version", "high", "low"))  # as a ConfigMap update swaps it
        await until_scraped(http, lambda found: _value(found, "tagstream_notifier_playbooks") == 2)
        assert (await http.post("/v1/events", json=[order("c2", "99")])).status_code == 202
        await _until(lambda: len(provider.requests) == 2, "the second version's push")

        _replace(playbooks, "playbooks: [{id: broken}]\n")
        await until_scraped(http, lambda found: _value(found, "tagstream_notifier_playbook_errors_total") == 1)
        assert (await http.post("/v1/events", json=[order("c3", "50")])).status_code == 202
        await _until(lambda: len(provider.requests) == 3, "a push by the playbooks still in force")

    texts = [(request["body"]["customer_id"], request["body"]["text"]) for request in provider.requests]
    assert texts == [("c1", "first version"), ("c2", "second version"), ("c3", "second version")]


async def test_every_series_the_dashboard_and_alerts_read_is_exported_by_an_embedded_node_after_traffic(
    tmp_path: Path, start_node: Start
) -> None:
    playbooks = tmp_path / "playbooks.yaml"
    playbooks.write_text(WELCOME)
    node = await start_node(playbooks, notifier__quiet_hours="off")
    async with httpx.AsyncClient(base_url=node.url, timeout=10, headers=HEADERS) as http:
        assert (await http.post("/v1/groups", json=value_group("both"))).status_code == 201
        profile = {"name": "李雷", "phone": "+86 138 0000 0001"}
        assert (await http.put("/v1/customers/c1/profile", json=profile)).status_code == 204
        resent = order("c1", "2500")
        assert (await http.post("/v1/events", json=[resent, order("c2", "99")])).status_code == 202
        assert (await http.post("/v1/events", json=[resent])).status_code == 202  # a resent batch
        lowered = _with_threshold(value_group("both"), 90)  # c2 becomes high: a rule change
        assert (await http.put("/v1/groups/value", json=lowered)).status_code == 200
        scraped = await until_scraped(http, lambda found: notifications(found).get(("sms", "suppressed", "cap")) == 1)

    read = {
        name
        for _, expression in [*panel_expressions(DASHBOARD), *rule_expressions(ALERTS)]
        for name in metric_names(expression)
    } - set(PROMETHEUS_SERIES)
    assert read <= set(exported_series())  # the deploy tests' check: every one is a service's series
    read -= set(exported()["sync"])  # the tag sync sink runs only beside Kafka (`tagstream sync`), not in a node
    read -= KAFKA_ONLY  # a node reads no topic, so nothing of it can be lost to a topic's retention
    assert {name for name in read if name not in scraped} == set()
    assert {(("kind", "order_paid"), ("outcome", outcome)) for outcome in ("applied", "duplicate")} <= set(
        scraped["tagstream_events_processed_total"]
    )
    assert (
        _value(scraped, "tagstream_tag_changes_total", group="value", tag="high", change="added", source="rule_change")
        == 1
    )
    assert _value(scraped, "tagstream_definitions_groups") == 1


async def scrape(http: httpx.AsyncClient) -> Scraped:
    found: Scraped = {}
    for family in text_string_to_metric_families((await http.get("/metrics")).text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def until_scraped(http: httpx.AsyncClient, holds: Callable[[Scraped], bool], timeout: float = 30.0) -> Scraped:
    deadline = time.monotonic() + timeout
    while True:
        found = await scrape(http)
        if holds(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"/metrics did not get there in {timeout}s: {notifications(found)}")
        await asyncio.sleep(0.2)


def notifications(scraped: Scraped) -> dict[tuple[str, str, str], float]:
    """(channel, outcome, reason) -> count, from tagstream_notifications_total."""
    counted = {}
    for labels, value in scraped.get("tagstream_notifications_total", {}).items():
        pairs = dict(labels)
        counted[(pairs["channel"], pairs["outcome"], pairs["reason"])] = value
    return counted


def _value(scraped: Scraped, name: str, **labels: str) -> float | None:
    return scraped.get(name, {}).get(tuple(sorted(labels.items())))


async def _until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout}s")
        await asyncio.sleep(0.1)


def _customers(provider: LocalProvider, channel: str) -> list[str]:
    return [request["body"]["customer_id"] for request in provider.requests if request["body"]["channel"] == channel]


def _pushes(text: str, *tags: str) -> str:
    """Playbooks sending one push with `text` when a customer gets each of the value group's `tags`."""
    lines = ["templates:", f'  t: "{text}"', "playbooks:"]
    for tag in tags:
        lines += [
            f"  - id: push-{tag}",
            f"    trigger: {{group: value, tag: {tag}, on: added}}",
            "    steps: [{channel: push, template: t}]",
        ]
    return "\n".join(lines) + "\n"


def _replace(path: Path, text: str) -> None:
    """Swap the file for a new one in one rename, as a ConfigMap update does."""
    fresh = path.with_suffix(".new")
    fresh.write_text(text)
    os.replace(fresh, path)


def _with_threshold(group: dict[str, Any], spent: int) -> dict[str, Any]:
    for tag in group["tags"]:
        for condition in tag["rule"]["conditions"]:
            condition["value"] = spent
    return group
