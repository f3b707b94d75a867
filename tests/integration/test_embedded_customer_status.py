"""The customer_status and loyalty templates applied to an embedded node in Asia/Shanghai, through its
HTTP API and journal: a simulated timeline where only the clock moves between two orders, and the
status walks new -> active -> low-active -> dormant -> lost by timers, then returned with an order,
across a restart of the node in the middle."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from services.embedded.node import EmbeddedNode
from services.runtime.clock import ManualClock
from services.runtime.definitions import templates
from services.runtime.settings import Settings, ShopSettings
from tests.support.embedded_kit import held_tags, in_process_node

ADMIN = "admin-key-0123456789abcdef"
SHANGHAI = ZoneInfo("Asia/Shanghai")


def local(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2025, month, day, hour, minute, tzinfo=SHANGHAI)


def _settings() -> Settings:
    keys = [{"key": ADMIN, "role": "admin", "name": "admin@shop"}]
    return Settings(ingest={"api_keys": keys}, shop=ShopSettings(timezone="Asia/Shanghai"))  # type: ignore[arg-type]


def _node(data: Path, clock: ManualClock) -> AbstractAsyncContextManager[tuple[EmbeddedNode, httpx.AsyncClient]]:
    return in_process_node(_settings(), data, clock)


def _order(number: int, when: datetime, amount: str) -> dict[str, Any]:
    return {
        "type": "order_paid",
        "event_id": f"e{number}",
        "customer_id": "c1",
        "occurred_at": when.isoformat(),
        "order_id": f"o{number}",
        "amount": amount,
        "currency": "CNY",
    }


async def _at(node: EmbeddedNode, clock: ManualClock, moment: datetime) -> None:
    clock.set(moment)
    await node.tick()


async def test_the_status_walks_down_by_timers_and_returns_with_an_order_across_a_restart(tmp_path: Path) -> None:
    clock = ManualClock(local(3, 1, 10))
    async with _node(tmp_path, clock) as (node, http):
        for name in ("customer_status", "loyalty"):
            for spec in templates()[name].render():
                answer = await http.post("/v1/groups", json=spec.model_dump(mode="json", by_alias=True))
                assert answer.status_code == 201, answer.text
        assert (await http.post("/v1/events", json=_order(1, local(3, 1, 10), "99.00"))).status_code == 202
        assert await held_tags(http, "c1") == {"customer_status/new", "loyalty/occasional", "loyalty_trend/rising"}
        await _at(node, clock, local(3, 20, 20))
        assert (await http.post("/v1/events", json=_order(2, local(3, 20, 20), "59.00"))).status_code == 202

        await _at(node, clock, local(3, 30, 23, 59))
        assert "customer_status/new" in await held_tags(http, "c1")
        await _at(node, clock, local(3, 31, 0, 1))
        assert "customer_status/active" in await held_tags(http, "c1")
        await _at(node, clock, local(4, 19, 0, 1))
        assert "customer_status/low_active" in await held_tags(http, "c1")
        await _at(node, clock, local(5, 19, 0, 1))
        assert "customer_status/dormant" in await held_tags(http, "c1")

    # A restart replays the journal: the due timers come back with the state.
    clock.set(local(6, 17, 23, 59))
    async with _node(tmp_path, clock) as (node, http):
        await node.tick()
        assert "customer_status/dormant" in await held_tags(http, "c1")
        await _at(node, clock, local(6, 18, 0, 1))
        assert "customer_status/lost" in await held_tags(http, "c1")

        back = local(8, 1, 7, 30)  # 23:30 UTC on 07-31: the Shanghai day 08-01
        await _at(node, clock, back)
        assert (await http.post("/v1/events", json=_order(3, back, "0.00"))).status_code == 202
        assert "customer_status/returned" in await held_tags(http, "c1")
        await _at(node, clock, local(8, 31, 0, 1))
        assert "customer_status/low_active" in await held_tags(http, "c1")

        entries = (await http.get("/v1/customers/c1/history", params={"limit": 100})).json()["changes"]
    added = [
        (entry["tag_id"], entry["source"], entry["occurred_at"])
        for entry in entries
        if entry["group_id"] == "customer_status" and entry["change"] == "added"
    ]
    assert sorted(added, key=lambda item: item[2]) == [
        ("new", "rule", "2025-03-01T02:00:00Z"),
        ("active", "time", "2025-03-30T16:00:00Z"),  # local midnights, as UTC instants
        ("low_active", "time", "2025-04-18T16:00:00Z"),
        ("dormant", "time", "2025-05-18T16:00:00Z"),
        ("lost", "time", "2025-06-17T16:00:00Z"),
        ("returned", "rule", "2025-07-31T23:30:00Z"),
        ("low_active", "time", "2025-08-30T16:00:00Z"),
    ]
