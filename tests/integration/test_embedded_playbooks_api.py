"""Playbooks over HTTP in the embedded node: list, get, validate, replace (versioned), refused with
every problem at once, and in force at the next check without a restart, kept across one."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from services.embedded.node import EmbeddedNode
from services.runtime.clock import ManualClock
from services.runtime.settings import Settings
from tests.support.campaign_kit import SEGMENTS, Outbox, embedded_node

ADMIN = "admin-key-0123456789abcdef"
VIEWER = "viewer-key-0123456789abcdef"
NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)

LAPSED = {
    "templates": {"miss-you": "${name|您好}，好久不见"},
    "playbooks": [
        {
            "id": "lapsed-push",
            "trigger": {"group": "segment", "tag": "lapsed", "on": "added"},
            "steps": [{"channel": "push", "template": "miss-you"}],
        }
    ],
}


def _node(
    data: Path, clock: ManualClock, outbox: Outbox
) -> AbstractAsyncContextManager[tuple[EmbeddedNode, httpx.AsyncClient]]:
    keys = [{"key": ADMIN, "role": "admin", "name": "admin@shop"}, {"key": VIEWER, "role": "viewer", "name": "v"}]
    settings = Settings(ingest={"api_keys": keys}, notifier={"quiet_hours": None})  # type: ignore[arg-type]
    return embedded_node(data, clock, outbox, settings)


async def _tag(http: httpx.AsyncClient, customer: str, tag: str) -> None:
    body = {"group_id": "segment", "tag_id": tag, "action": "add", "customer_ids": [customer]}
    assert (await http.post("/v1/manual-tags", json=body)).status_code == 202


async def test_playbooks_replaced_over_http_are_versioned_and_in_force_without_a_restart(tmp_path: Path) -> None:
    clock, outbox = ManualClock(NOW), Outbox()
    async with _node(tmp_path, clock, outbox) as (node, http):
        assert (await http.post("/v1/groups", json=SEGMENTS)).status_code == 201
        assert (await http.get("/v1/playbooks")).json()["version"] == 0
        await _tag(http, "沪-1", "lapsed")
        await node.tick()
        assert outbox.sent == []  # the file has no playbooks

        replaced = await http.put("/v1/playbooks", json={"version": 0, **LAPSED})
        assert replaced.status_code == 200, replaced.text
        assert (replaced.json()["version"], replaced.json()["updated_by"]) == (1, "admin@shop")
        stale = await http.put("/v1/playbooks", json={"version": 0, **LAPSED})
        assert stale.status_code == 409
        assert "at 1" in stale.json()["detail"]
        viewer = {"Authorization": f"Bearer {VIEWER}"}
        assert (await http.put("/v1/playbooks", json={"version": 1, **LAPSED}, headers=viewer)).status_code == 403
        got = await http.get("/v1/playbooks/lapsed-push", headers=viewer)
        assert got.json()["trigger"]["tag"] == "lapsed"
        assert (await http.get("/v1/playbooks/nope")).status_code == 404

        assert node.composition is not None
        await node.composition.playbooks.refresh()  # what the reload loop does every reload_interval_s
        await _tag(http, "沪-2", "lapsed")
        await node.tick()
        assert [(m.playbook_id, m.customer_id) for m in outbox.sent] == [("lapsed-push", "沪-2")]

    clock.advance(timedelta(minutes=1))
    async with _node(tmp_path, clock, outbox) as (node, http):
        assert (await http.get("/v1/playbooks")).json()["version"] == 1
        await _tag(http, "沪-3", "lapsed")
        await node.tick()
        assert [m.customer_id for m in outbox.sent] == ["沪-2", "沪-3"]


def _playbook(playbook_id: str, group: str, tag: str, **step: str) -> dict[str, Any]:
    return {"id": playbook_id, "trigger": {"group": group, "tag": tag}, "steps": [step]}


async def test_a_bad_set_is_refused_with_every_problem_and_unknown_trigger_tags_named(tmp_path: Path) -> None:
    clock, outbox = ManualClock(NOW), Outbox()
    fields_wrong = {
        "playbooks": [
            _playbook("c", "segment", "lapsed", channel="sms", template="hi", delay="3 days"),
            _playbook("d", "segment", "lapsed", channel="fax", template="hi"),
        ]
    }
    set_wrong = {
        "templates": {"hi": "Hi ${nmae}"},
        "playbooks": [_playbook("a", "segment", "lapsed", channel="push", template="bye")],
    }
    triggers_wrong = {
        "templates": {"hi": "Hi ${name|there}"},
        "playbooks": [
            _playbook("a", "segment", "ghost", channel="push", template="hi"),
            _playbook("b", "nowhere", "x", channel="push", template="hi"),
        ],
    }
    async with _node(tmp_path, clock, outbox) as (_, http):
        assert (await http.post("/v1/groups", json=SEGMENTS)).status_code == 201
        checked = (await http.post("/v1/playbooks:validate", json=fields_wrong)).json()
        assert not checked["valid"]
        where = {problem.split(":", 1)[0] for problem in checked["problems"]}
        assert {"playbook 'c' steps[0].delay", "playbook 'd' steps[0].channel"} <= where
        [both] = (await http.post("/v1/playbooks:validate", json=set_wrong)).json()["problems"]
        assert "no template 'bye'" in both
        assert "unknown placeholder(s) nmae" in both
        checked = (await http.post("/v1/playbooks:validate", json=triggers_wrong)).json()
        assert checked["problems"] == [
            "playbook 'a' trigger.tag: group 'segment' has no tag 'ghost'",
            "playbook 'b' trigger.group: no tag group 'nowhere'",
        ]
        refused = await http.put("/v1/playbooks", json={"version": 0, **triggers_wrong})
        assert refused.status_code == 422
        assert len(refused.json()["detail"]) == 2
        assert (await http.get("/v1/playbooks")).json()["version"] == 0
