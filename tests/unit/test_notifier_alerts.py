"""Sales alerts: the `alert` channel tells the customer's salesperson, with the notifier's safeguards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest

from services.notifier.policy import Policy, QuietHours
from services.notifier.ports import Message
from services.notifier.robot import MAX_CONTENT_BYTES, robot_answer, robot_text
from services.runtime.customers import Profile
from services.runtime.resilience import ProviderError
from tests.support.notifier_harness import Harness

HOT_LEADS = """
templates:
  hot-lead: "${name|A lead} (${customer_id}) is ${tag} now: call them"
playbooks:
  - id: hot-lead
    trigger: {group: intent, tag: high}
    steps: [{channel: alert, template: hot-lead}]
    caps: [{channel: alert, limit: 1, window: 1d}]
  - id: hot-lead-daytime
    trigger: {group: intent, tag: daytime}
    steps: [{channel: alert, template: hot-lead}]
    quiet_hours: true
"""
NIGHT = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)  # 23:30 in Shanghai
QUIET = Policy(quiet_hours=QuietHours.parse("21:00-08:00"), default_zone=ZoneInfo("Asia/Shanghai"))


async def lead(h: Harness, customer: str, **profile: str) -> None:
    await h.customers.set_profile(customer, Profile(name="王芳", timezone="America/New_York", **profile))


async def test_an_alert_goes_to_the_lead_s_owner_with_the_rendered_text() -> None:
    h = Harness(playbooks=HOT_LEADS)
    await lead(h, "c1", owner="sales.li")
    await h.tag("c1", "intent", "high")
    await h.drain()
    [message] = h.sent("alert")
    assert (message.to, message.text) == ("sales.li", "王芳 (c1) is high now: call them")
    assert h.outcomes_of("alert") == [("sent", "")]


async def test_a_lead_without_an_owner_is_not_alerted_and_says_why() -> None:
    h = Harness(playbooks=HOT_LEADS)
    await lead(h, "c1")
    await h.tag("c1", "intent", "high")
    await h.drain()
    assert h.sent("alert") == []
    assert h.outcomes_of("alert") == [("suppressed", "unreachable")]


async def test_a_playbook_cap_dedupes_alerts_per_lead_per_period() -> None:
    h = Harness(playbooks=HOT_LEADS)
    await lead(h, "c1", owner="sales.li")
    await h.tag("c1", "intent", "high")
    await h.drain()
    h.clock.advance(timedelta(hours=6))
    await h.tag("c1", "intent", "high")  # clicked again the same day: a new trigger
    await h.drain()
    h.clock.advance(timedelta(days=1))
    await h.tag("c1", "intent", "high")
    await h.drain()
    assert len(h.sent("alert")) == 2
    assert h.outcomes_of("alert") == [("sent", ""), ("suppressed", "cap"), ("sent", "")]


async def test_alerts_ignore_quiet_hours_unless_their_playbook_asks_for_them() -> None:
    h = Harness(policy=QUIET, playbooks=HOT_LEADS)
    await lead(h, "c1", owner="sales.li")
    h.clock.set(NIGHT)
    await h.tag("c1", "intent", "high")
    await h.tag("c1", "intent", "daytime")
    await h.drain()
    assert [m.playbook_id for m in h.sent("alert")] == ["hot-lead"]
    [held] = [o for o in h.outcomes.outcomes if o.playbook_id == "hot-lead-daytime"]
    # held until 08:00 in the shop's zone (the salesperson's day), not the lead's New York morning
    assert (held.outcome, held.deferred_until) == ("deferred", datetime(2026, 11, 24, 0, 0, tzinfo=UTC))


async def test_a_playbook_can_exempt_a_held_channel_from_quiet_hours() -> None:
    playbooks = """
templates: {t: "your order ships today"}
playbooks:
  - {id: shipping, trigger: {group: order, tag: shipped}, steps: [{channel: push, template: t}], quiet_hours: false}
"""
    h = Harness(policy=QUIET, playbooks=playbooks)
    h.clock.set(NIGHT)
    await h.tag("c1", "order", "shipped")
    await h.drain()
    assert len(h.sent("push")) == 1


def message(text: str, to: str | None = "sales.li") -> Message:
    return Message("k", "alert", "c1", "hot-lead", 0, "hot-lead", text, None, to)


def test_the_robot_message_mentions_the_owner() -> None:
    body = orjson.loads(robot_text(message("王芳 clicked the spring lookbook")))
    assert body == {
        "msgtype": "text",
        "text": {"content": "王芳 clicked the spring lookbook", "mentioned_list": ["sales.li"]},
    }


def test_a_long_text_is_cut_to_the_robot_limit_on_a_character_boundary() -> None:
    body = orjson.loads(robot_text(message("高意向" * 1000)))
    content = body["text"]["content"]
    assert len(content) == MAX_CONTENT_BYTES // 3  # 682 whole characters of 3 bytes; the 2 bytes left are dropped
    assert content == ("高意向" * 1000)[: len(content)]


@pytest.mark.parametrize(
    ("answer", "retryable"),
    [
        (b'{"errcode":45009,"errmsg":"api freq out of limit"}', True),
        (b'{"errcode":93000,"errmsg":"invalid key"}', False),
    ],
)
def test_a_robot_error_answered_with_http_200_is_a_provider_error(answer: bytes, retryable: bool) -> None:
    with pytest.raises(ProviderError) as raised:
        robot_answer(answer)
    assert raised.value.retryable is retryable
    assert "errcode" in raised.value.detail


def test_an_ok_robot_answer_is_delivered() -> None:
    robot_answer(b'{"errcode":0,"errmsg":"ok"}')
