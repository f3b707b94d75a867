"""The embedded node keeps one clock: its own (injected) one, never an event's date.

In-process, over the real journal file: one browse dated next year is refused (422 naming
`occurred_at`), and a journal written before that check (holding such a browse) replays on
restart without moving anyone's time: no churn, no win-back, no message.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson

from services.embedded.journal import Journal
from services.embedded.node import JOURNAL_FILE, EmbeddedNode
from services.notifier.ports import Message
from services.runtime.clock import ManualClock
from services.runtime.settings import Settings
from tests.support.embedded_kit import held_tags, in_process_node
from tests.support.history import GROUPS, PLAYBOOKS, SHANGHAI

ADMIN = "admin-key-0123456789abcdef"
NOW = datetime(2026, 11, 23, 2, 30, tzinfo=UTC)  # 10:30 in Shanghai


class Outbox:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def send(self, message: Message) -> int:
        self.sent.append(message)
        return 1

    async def close(self) -> None:
        pass

    def who(self) -> list[tuple[str, str]]:
        return [(message.playbook_id, message.customer_id) for message in self.sent]


def _settings() -> Settings:
    keys = [{"key": ADMIN, "role": "admin", "name": "admin@shop"}]
    return Settings(ingest={"api_keys": keys}, notifier={"quiet_hours": None})  # type: ignore[arg-type]


def _node(
    data: Path, clock: ManualClock, outbox: Outbox
) -> AbstractAsyncContextManager[tuple[EmbeddedNode, httpx.AsyncClient]]:
    playbooks = data / "playbooks.yaml"
    playbooks.write_text(PLAYBOOKS)
    return in_process_node(_settings(), data, clock, playbooks=playbooks, providers={"push": outbox})


def _event(kind: str, customer: str, when: datetime, **fields: str) -> dict[str, str]:
    return {
        "type": kind,
        "event_id": f"{customer}-{kind}-{when.timestamp():.0f}",
        "customer_id": customer,
        "occurred_at": when.astimezone(SHANGHAI).isoformat(),
    } | fields


def _order(customer: str, when: datetime) -> dict[str, str]:
    return _event(
        "order_paid", customer, when, order_id=f"o-{customer}-{when.timestamp():.0f}", amount="99", currency="CNY"
    )


async def _define(http: httpx.AsyncClient) -> None:
    for group in GROUPS:
        assert (await http.post("/v1/groups", json=group)).status_code == 201


async def test_one_browse_dated_next_year_fires_nothing_before_or_after_a_restart(tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    outbox = Outbox()
    next_year = _event("browse", "c9", NOW + timedelta(days=365), product_id="p1")
    async with _node(tmp_path, clock, outbox) as (node, http):
        await _define(http)
        history = [_order(f"c{n}", NOW - timedelta(days=5)) for n in range(1, 4)]
        assert (await http.post("/v1/events:import", json=history)).status_code == 202
        refused = await http.post("/v1/events", json=[_order("c4", NOW), next_year])
        assert refused.status_code == 422
        [problem] = refused.json()["detail"]
        assert (problem["index"], problem["field"]) == (1, "occurred_at")
        assert "ahead of the clock" in problem["reason"]
        assert "at most 5m" in problem["reason"]
        clock.advance(timedelta(hours=1))
        await node.tick()
        assert [await held_tags(http, f"c{n}") for n in range(1, 4)] == [{"lifecycle/new"}] * 3
    assert outbox.sent == []

    # A journal written before ingest refused such events may hold one: replaying it moves no clock.
    journal = Journal(tmp_path / JOURNAL_FILE)
    list(journal.replay())
    journal.open()
    journal.append({"k": "events", "at": NOW + timedelta(hours=1), "r": [["c9", orjson.dumps(next_year).decode()]]})
    journal.close()
    clock.advance(timedelta(hours=1))
    async with _node(tmp_path, clock, outbox) as (node, http):
        await node.tick()
        assert [await held_tags(http, f"c{n}") for n in range(1, 4)] == [{"lifecycle/new"}] * 3
        assert await held_tags(http, "c9") == set()
        assert (await http.post("/v1/events", json=_order("c5", NOW + timedelta(hours=2)))).status_code == 202
        await node.tick()
    assert outbox.who() == [("welcome", "c5")]


async def test_history_turns_into_churn_only_when_the_wall_clock_gets_there(tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    outbox = Outbox()
    async with _node(tmp_path, clock, outbox) as (node, http):
        await _define(http)
        # Ordered 20 days ago (history): churn is due at the shop's (UTC) midnight 21 days after the
        # order's day, 21.5 hours from now, by the wall clock, not at import.
        assert (await http.post("/v1/events:import", json=_order("c1", NOW - timedelta(days=20)))).status_code == 202
        clock.advance(timedelta(hours=21))
        await node.tick()
        assert await held_tags(http, "c1") == {"lifecycle/new"}
        clock.advance(timedelta(hours=1))
        await node.tick()
        assert await held_tags(http, "c1") == {"lifecycle/new", "churn/likely"}
    # The customer really went quiet while the shop was live: that one is a live message.
    assert outbox.who() == [("winback", "c1")]


async def test_a_live_event_dated_days_ago_is_history_and_messages_no_one(tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    outbox = Outbox()
    async with _node(tmp_path, clock, outbox) as (node, http):
        await _define(http)
        late = [_order("c1", NOW - timedelta(days=3)), _order("c2", NOW - timedelta(hours=23))]
        assert (await http.post("/v1/events", json=late)).status_code == 202
        await node.tick()
        history = (await http.get("/v1/customers/c1/history")).json()["changes"]
        assert [(c["tag_id"], c["source"]) for c in history] == [("new", "import")]
    # c2's order is within the notifier's max_trigger_age (1d): live, so welcomed.
    assert outbox.who() == [("welcome", "c2")]
