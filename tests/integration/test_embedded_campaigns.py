"""Campaigns in the embedded node: one coupon and one push per eligible customer now, the SMS three
days later except to those who ordered, the holdout untouched, a restart resuming the fan-out, and a
report that counts what was sent."""

from __future__ import annotations

from collections import Counter
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from services.embedded.node import EmbeddedNode
from services.runtime.clock import ManualClock
from services.runtime.settings import Settings
from tests.support.campaign_kit import (
    CAMPAIGN,
    SEGMENTS,
    Outbox,
    audiences,
    customers,
    embedded_node,
    order,
)
from tests.support.campaign_kit import eligible as split_audience

ADMIN = "admin-key-0123456789abcdef"
NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


def _settings(**notifier: Any) -> Settings:
    keys = [{"key": ADMIN, "role": "admin", "name": "admin@shop"}]
    rates = {"quiet_hours": None, "campaign_rates": ["coupon:100", "push:100", "sms:40"]}
    return Settings(ingest={"api_keys": keys}, notifier=rates | notifier)  # type: ignore[arg-type]


def _node(
    data: Path, clock: ManualClock, outbox: Outbox, **notifier: Any
) -> AbstractAsyncContextManager[tuple[EmbeddedNode, httpx.AsyncClient]]:
    return embedded_node(data, clock, outbox, _settings(**notifier))


async def _shop(http: httpx.AsyncClient, ids: list[str]) -> None:
    assert (await http.post("/v1/groups", json=SEGMENTS)).status_code == 201
    for tag, members in audiences(ids).items():
        body = {"group_id": "segment", "tag_id": tag, "action": "add", "customer_ids": members}
        assert (await http.post("/v1/manual-tags", json=body)).status_code == 202
    for customer in ids:
        profile = {"phone": "+86 138 0000 0000", "timezone": "Asia/Shanghai"}
        assert (await http.put(f"/v1/customers/{customer}/profile", json=profile)).status_code == 204


async def _run(node: EmbeddedNode, clock: ManualClock, seconds: int) -> None:
    for _ in range(seconds):
        clock.advance(timedelta(seconds=1))
        await node.tick()


async def test_a_campaign_to_two_audiences_sends_one_coupon_and_push_now_and_the_sms_later_except_to_returners(
    tmp_path: Path,
) -> None:
    clock, outbox = ManualClock(NOW), Outbox()
    ids = customers(300)
    eligible, held = split_audience(ids)
    async with _node(tmp_path, clock, outbox) as (node, http):
        await _shop(http, ids)
        preview = (await http.post("/v1/campaigns:preview", json=CAMPAIGN)).json()
        assert (preview["audience"], preview["holdout"]) == (len(eligible) + len(held), len(held))
        created = await http.post("/v1/campaigns", json=CAMPAIGN)
        assert created.status_code == 201, created.text
        assert (await http.post("/v1/campaigns", json=CAMPAIGN)).status_code == 409
        await _run(node, clock, 5)  # 100 coupons and pushes a second: 300 customers need 3 s
        assert outbox.keys("coupon") == Counter(eligible)
        assert outbox.keys("push") == Counter(eligible)
        assert not outbox.keys("sms")
        returners = sorted(eligible)[:7]
        assert (await http.post("/v1/events", json=[order(c, clock.now()) for c in returners])).status_code == 202

    # a restart between the two steps: the SMS step still goes out once, from the journal's state
    clock.advance(timedelta(days=3))
    async with _node(tmp_path, clock, outbox) as (node, http):
        await _run(node, clock, 8)  # 40 SMS a second
        assert outbox.keys("sms") == Counter(eligible - set(returners))
        assert outbox.keys("coupon") == Counter(eligible)  # nothing repeated after the restart
        record = (await http.get(f"/v1/campaigns/{CAMPAIGN['id']}")).json()
        assert record["status"] == "done"
        report = (await http.get(f"/v1/campaigns/{CAMPAIGN['id']}/report")).json()
    steps = {step["channel"]: step for step in report["steps"]}
    assert [steps[c]["sent"] for c in ("coupon", "push", "sms")] == [len(eligible)] * 2 + [len(eligible) - 7]
    assert [steps[c]["held_out"] for c in ("coupon", "push", "sms")] == [len(held)] * 3
    assert steps["sms"]["cancelled"] == 7
    assert {step["targeted"] for step in report["steps"]} == {len(eligible) + len(held)}
    conversion: dict[str, Any] = report["conversion"]
    assert (conversion["treated"], conversion["treated_converted"]) == (len(eligible), 7)
    assert (conversion["holdout"], conversion["holdout_converted"]) == (len(held), 0)


async def test_a_paused_campaign_sends_nothing_until_resumed_and_a_cancelled_one_nothing_more(tmp_path: Path) -> None:
    clock, outbox = ManualClock(NOW), Outbox()
    ids = customers(60)
    eligible, _ = split_audience(ids)
    async with _node(tmp_path, clock, outbox) as (node, http):
        await _shop(http, ids)
        later = dict(CAMPAIGN, start_at=(NOW + timedelta(hours=1)).isoformat())
        assert (await http.post("/v1/campaigns", json=later)).status_code == 201
        paused = await http.post(f"/v1/campaigns/{CAMPAIGN['id']}/pause")
        assert paused.json()["status"] == "paused"
        clock.advance(timedelta(hours=2))
        await _run(node, clock, 3)
        assert outbox.sent == []
        resumed = (await http.post(f"/v1/campaigns/{CAMPAIGN['id']}/resume")).json()
        assert resumed["status"] == "scheduled"  # its audience was never taken
        await _run(node, clock, 3)
        assert outbox.keys("push") == Counter(eligible)
        cancelled = await http.post(f"/v1/campaigns/{CAMPAIGN['id']}/cancel")
        assert cancelled.json()["status"] == "cancelled"
        assert (await http.post(f"/v1/campaigns/{CAMPAIGN['id']}/resume")).status_code == 409
        assert (await http.delete(f"/v1/campaigns/{CAMPAIGN['id']}")).status_code == 204
        assert (await http.post("/v1/campaigns", json=CAMPAIGN)).status_code == 409  # ids are never reused
        clock.advance(timedelta(days=3))
        await _run(node, clock, 3)
        assert not outbox.keys("sms")


async def test_a_campaign_naming_unknown_tags_or_a_trigger_placeholder_is_refused_with_every_problem(
    tmp_path: Path,
) -> None:
    clock, outbox = ManualClock(NOW), Outbox()
    async with _node(tmp_path, clock, outbox) as (_, http):
        assert (await http.post("/v1/groups", json=SEGMENTS)).status_code == 201
        unknown = dict(CAMPAIGN, audience={"any_of": ["segment/nope", "ghost/x"]})
        answer = await http.post("/v1/campaigns", json=unknown)
        assert answer.status_code == 422
        assert "segment/nope" in answer.text
        assert "ghost/x" in answer.text
        trigger = dict(CAMPAIGN, templates={"miss-you": "Hi ${tag}", "last-call": "bye"})
        answer = await http.post("/v1/campaigns", json=trigger)
        assert answer.status_code == 422
        assert "no ${tag}" in answer.text
        assert (await http.get("/v1/campaigns")).json() == {"campaigns": []}


async def test_a_campaign_started_at_night_waits_for_morning_in_each_customers_zone_but_not_for_coupons(
    tmp_path: Path,
) -> None:
    night = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)  # 22:00 in Shanghai, 15:00 in Berlin
    clock, outbox = ManualClock(night), Outbox()
    ids = customers(60)
    eligible, _ = split_audience(ids)
    berlin = set(ids[::2])
    async with _node(tmp_path, clock, outbox, quiet_hours="21:00-08:00") as (node, http):
        await _shop(http, ids)
        for customer in berlin:
            profile = {"phone": "+49 30 000000", "timezone": "Europe/Berlin"}
            assert (await http.put(f"/v1/customers/{customer}/profile", json=profile)).status_code == 204
        assert (await http.post("/v1/campaigns", json=CAMPAIGN)).status_code == 201
        await _run(node, clock, 3)
        assert outbox.keys("coupon") == Counter(eligible)
        assert outbox.keys("push") == Counter(eligible & berlin)
        clock.advance(timedelta(hours=10))  # 08:00:03 in Shanghai
        await _run(node, clock, 2)
        assert outbox.keys("push") == Counter(eligible)
        report = (await http.get(f"/v1/campaigns/{CAMPAIGN['id']}/report")).json()
    assert report["steps"][1]["deferred"] == {"quiet_hours": len(eligible - berlin)}
    assert report["steps"][0]["deferred"] == {}
