"""Attribute, age and source tags in the embedded mode (`tagstream run`): over the HTTP API and the
real journal file, with the node's own clock; a restart replays the journal to the same tags."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from services.embedded.node import EmbeddedNode
from services.runtime.clock import ManualClock
from services.runtime.settings import Settings
from tests.support.embedded_kit import held_tags, in_process_node
from tests.support.payloads import profile_groups

ADMIN = "admin-key-0123456789abcdef"
NOW = datetime(2026, 3, 9, 2, 30, tzinfo=UTC)  # 10:30 on 9 March in Shanghai


def _node(data: Path, clock: ManualClock) -> AbstractAsyncContextManager[tuple[EmbeddedNode, httpx.AsyncClient]]:
    keys = [{"key": ADMIN, "role": "admin", "name": "admin@shop"}]
    settings = Settings(ingest={"api_keys": keys}, shop={"timezone": "Asia/Shanghai"})  # type: ignore[arg-type]
    return in_process_node(settings, data, clock)


def _event(kind: str, customer: str, number: int, **fields: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "event_id": f"{customer}-{number}",
        "customer_id": customer,
        "occurred_at": (NOW - timedelta(minutes=number)).isoformat(),
    } | fields


async def test_profile_and_source_tags_follow_events_birthdays_and_a_restart(tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    async with _node(tmp_path, clock) as (node, http):
        for group in profile_groups():
            assert (await http.post("/v1/groups", json=group)).status_code == 201, group["id"]
        events = [
            _event("profile_updated", "mei", 1, region="上海", birth_date="2001-03-10", family="married"),
            _event("source_attributed", "mei", 2, channel="douyin", sub_channel="live-3", code_id="qr-1"),
            _event("source_attributed", "mei", 3, channel="own_store", sub_channel="静安店"),  # earlier: first
            _event("profile_updated", "lin", 4, region="乌鲁木齐", gender="male"),
        ]
        assert (await http.post("/v1/events", json=events)).status_code == 202
        await node.tick()
        assert await held_tags(http, "mei") == {"region/east", "age_band/young", "source_channel/own_store"}
        assert await held_tags(http, "lin") == {"region/not_east"}

        refused = await http.post("/v1/events", json=_event("profile_updated", "lin", 5, region="x" * 65))
        assert refused.status_code == 422
        [problem] = refused.json()["detail"]
        assert problem["field"] == "region"
        assert "xxxx" not in problem["reason"]

        clock.set(datetime(2026, 3, 9, 16, tzinfo=UTC))  # midnight starting 10 March in Shanghai: 25
        await node.tick()
        assert "age_band/prime" in await held_tags(http, "mei")
        history = (await http.get("/v1/customers/mei/history")).json()["changes"]
        assert (history[0]["tag_id"], history[0]["source"]) == ("prime", "time")

    async with _node(tmp_path, clock) as (node, http):  # the journal replays to the same state
        await node.tick()
        assert await held_tags(http, "mei") == {"region/east", "age_band/prime", "source_channel/own_store"}
        moved = _event("profile_updated", "mei", 0, region="北京")
        moved["occurred_at"] = clock.now().isoformat()
        assert (await http.post("/v1/events", json=moved)).status_code == 202
        await node.tick()
        assert "region/east" not in await held_tags(http, "mei")
