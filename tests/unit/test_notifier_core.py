"""The Notifier core wired with the in-memory stores: the issue's scenarios without Kafka or Redis."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

from schemas.tags import Reason, TagChanged, TagGroup
from services.notifier.core import Tuning
from services.notifier.policy import CapRule, Policy, QuietHours, load_playbooks
from services.notifier.ports import Message
from services.runtime.customers import Profile
from tests.support.notifier_harness import PLAYBOOKS, T0, Harness, RecordingProvider


async def phone(harness: Harness, customer: str, **profile: str) -> None:
    await harness.customers.set_profile(customer, Profile(phone="+86 138 0000 0000", **profile))


async def test_winback_sends_push_and_coupon_at_once_and_the_sms_three_days_later() -> None:
    h = Harness()
    await phone(h, "c1", name="Mei")
    await h.tag("c1", "value", "high_churned")
    await h.drain()
    assert [m.text for m in h.sent("push")] == ["Hi Mei, the brand sale is on"]
    assert [m.coupon for m in h.sent("coupon")] == ["HV-50"]
    assert h.sent("sms") == []
    assert h.outcomes_of("sms") == [("scheduled", "")]
    h.clock.advance(timedelta(days=3) - timedelta(seconds=1))
    await h.drain()
    assert h.sent("sms") == []
    h.clock.advance(timedelta(seconds=1))
    await h.drain()
    [sms] = h.sent("sms")
    assert (sms.text, sms.to) == ("We miss you, Mei", "+86 138 0000 0000")
    assert h.outcomes_of("sms") == [("scheduled", ""), ("sent", "")]


async def test_the_sms_is_cancelled_when_the_customer_ordered_in_the_three_days() -> None:
    h = Harness()
    await phone(h, "c1")
    await h.tag("c1", "value", "high_churned")
    await h.drain()
    h.clock.advance(timedelta(days=1))
    h.tags.saw("c1", h.clock.now())
    h.clock.advance(timedelta(days=2))
    await h.drain()
    assert h.sent("sms") == []
    assert h.outcomes_of("sms")[-1] == ("cancelled", "cancelled")


async def test_the_sms_is_cancelled_when_the_trigger_tag_was_removed() -> None:
    h = Harness()
    await phone(h, "c1")
    await h.tag("c1", "value", "high_churned")
    h.clock.advance(timedelta(days=1))
    await h.tag("c1", "value", "high_churned", change="removed")
    h.clock.advance(timedelta(days=2))
    await h.drain()
    assert h.sent("sms") == []
    assert h.outcomes_of("sms")[-1] == ("cancelled", "cancelled")


async def test_a_customer_in_three_matching_tags_gets_one_coupon() -> None:
    h = Harness()
    await h.tag("c1", "value", "high_churned")
    await h.tag("c1", "value", "vip")
    await h.tag("c1", "loyalty", "loyal")
    await h.drain()
    assert len(h.sent("coupon")) == 1
    assert Counter(h.outcomes_of("coupon")) == {("sent", ""): 1, ("suppressed", "duplicate"): 2}


async def test_a_coupon_of_the_same_kind_is_given_again_after_the_period() -> None:
    h = Harness(policy=Policy(coupon_period=timedelta(days=30)))
    await h.tag("c1", "value", "vip")
    await h.drain()
    h.clock.advance(timedelta(days=30, seconds=1))
    await h.tag("c1", "loyalty", "loyal")
    await h.drain()
    assert len(h.sent("coupon")) == 2


async def test_an_opt_out_set_before_the_send_is_honoured_and_recorded() -> None:
    h = Harness()
    await h.customers.opt_out("c1", "push")
    await h.tag("c1", "value", "high_churned")
    await h.drain()
    assert h.sent("push") == []
    assert h.outcomes_of("push") == [("suppressed", "consent")]
    assert len(h.sent("coupon")) == 1


async def test_a_held_out_customer_is_never_contacted_but_recorded() -> None:
    h = Harness()
    await h.tag("c1", "value", "test")
    await h.drain()
    assert h.sent("push") == []
    assert h.outcomes_of("push") == [("suppressed", "holdout")]


async def test_quiet_hours_hold_the_message_and_send_it_when_the_window_ends() -> None:
    h = Harness(policy=Policy(quiet_hours=QuietHours.parse("21:00-08:00")))
    await phone(h, "c1", timezone="Asia/Shanghai")
    h.clock.set(datetime(2026, 11, 23, 14, 30, tzinfo=UTC))  # 22:30 in Shanghai
    await h.tag("c1", "value", "high_churned")
    await h.drain()
    assert h.sent("push") == []
    [deferred] = [o for o in h.outcomes.outcomes if o.channel == "push"]
    assert deferred.deferred_until == datetime(2026, 11, 24, 0, 0, tzinfo=UTC)
    assert len(h.sent("coupon")) == 1  # coupons are not held by quiet hours
    h.clock.set(datetime(2026, 11, 24, 0, 0, tzinfo=UTC))
    await h.drain()
    assert len(h.sent("push")) == 1
    assert h.outcomes_of("push") == [("deferred", "quiet_hours"), ("sent", "")]


async def test_a_cap_of_one_push_a_day_suppresses_the_second_playbook_s_push() -> None:
    h = Harness(policy=Policy(caps=(CapRule(channel="push", limit=1, window=timedelta(days=1)),)))
    await h.tag("c1", "value", "high_churned")
    await h.drain()
    h.clock.advance(timedelta(hours=1))
    await h.tag("c1", "value", "high_churned", seq=50)  # a new trigger of the same playbook
    await h.drain()
    assert len(h.sent("push")) == 1
    assert h.outcomes_of("push")[-1] == ("suppressed", "cap")


async def test_a_redelivered_tag_change_sends_nothing_twice() -> None:
    h = Harness()
    await h.tag("c1", "value", "high_churned", seq=7)
    await h.drain()
    await h.tag("c1", "value", "high_churned", seq=7)
    await h.drain()
    assert len(h.sent("push")) == 1
    assert h.outcomes_of("push") == [("sent", ""), ("suppressed", "duplicate")]


async def test_a_provider_that_gives_up_sends_the_step_to_the_dlq_and_frees_the_coupon() -> None:
    h = Harness(fail="HTTP 500 (after 4 attempts)")
    await h.tag("c1", "value", "vip")
    await h.drain()
    [dead] = h.outcomes.dead_letters
    assert (dead.outcome, dead.reason, dead.attempts) == ("failed", "provider_error", 4)
    assert "HTTP 500" in dead.detail
    assert await h.notifier.ledger.coupon_holder("c1", "HV-50", h.clock.now()) is None
    assert await h.scheduler.backlog(h.clock.now()) == (0, None)


async def test_a_job_whose_lease_ran_out_is_claimed_again_and_sent_once() -> None:
    h = Harness()
    await h.tag("c1", "value", "vip")
    [lost] = await h.scheduler.claim(h.clock.now(), 10, timedelta(seconds=30))  # a replica that then died
    assert await h.notifier.run_due() == 0
    h.clock.advance(timedelta(seconds=30))
    await h.drain()
    assert len(h.sent("coupon")) == 1
    assert not await h.scheduler.complete(lost)  # the dead replica's lease is worthless now


async def test_a_job_claimed_too_often_without_completing_is_dead_lettered() -> None:
    h = Harness()
    await h.tag("c1", "value", "vip")
    for _ in range(5):
        await h.scheduler.claim(h.clock.now(), 10, timedelta(seconds=1))
        h.clock.advance(timedelta(seconds=1))
    await h.drain()
    assert h.sent("coupon") == []
    assert [(d.outcome, d.reason) for d in h.outcomes.dead_letters] == [("failed", "gave_up")]


async def test_a_removed_playbook_cancels_its_pending_steps() -> None:
    h = Harness()
    await phone(h, "c1")
    await h.tag("c1", "value", "high_churned")
    await h.drain()
    h.notifier._playbooks = lambda: load_playbooks("playbooks: []")
    h.clock.advance(timedelta(days=3))
    await h.drain()
    assert h.sent("sms") == []
    assert h.outcomes_of("sms")[-1] == ("cancelled", "cancelled")


async def test_outcomes_never_carry_the_phone_number_or_the_text() -> None:
    h = Harness()
    await phone(h, "c1", name="Mei")
    await h.tag("c1", "value", "high_churned")
    h.clock.advance(timedelta(days=3))
    await h.drain()
    for outcome in h.outcomes.outcomes:
        document = outcome.model_dump_json()
        assert "138" not in document
        assert "Mei" not in document
    assert "138" not in repr(h.sent("sms")[0])


async def test_a_redelivered_change_reports_its_delayed_step_as_scheduled_only_once() -> None:
    h = Harness()
    await phone(h, "c1")
    await h.tag("c1", "value", "high_churned", seq=7)
    await h.tag("c1", "value", "high_churned", seq=7)
    assert h.outcomes_of("sms") == [("scheduled", "")]
    [scheduled] = h.outcomes.outcomes
    assert scheduled.deferred_until == T0 + timedelta(days=3)


async def test_two_playbooks_sending_sms_at_once_respect_a_cap_of_one_a_day() -> None:
    two = PLAYBOOKS.replace(
        "steps: [{channel: coupon, coupon: HV-50}]\n  - id: loyal",
        "steps: [{channel: sms, template: miss-you}]\n  - id: loyal",
    ).replace(
        "trigger: {group: loyalty, tag: loyal}\n    steps: [{channel: coupon, coupon: HV-50}]",
        "trigger: {group: loyalty, tag: loyal}\n    steps: [{channel: sms, template: miss-you}]",
    )
    h = Harness(policy=Policy(caps=(CapRule(channel="sms", limit=1, window=timedelta(days=1)),)))
    h.notifier._playbooks = lambda: load_playbooks(two)
    await phone(h, "c1")
    await h.tag("c1", "value", "vip")
    await h.tag("c1", "loyalty", "loyal")
    await h.drain()  # both steps are claimed in one batch
    assert len(h.sent("sms")) == 1
    assert sorted(h.outcomes_of("sms")) == [("sent", ""), ("suppressed", "cap")]


async def test_no_more_steps_than_the_concurrency_are_sent_at_once() -> None:
    h = Harness()
    h.notifier.tuning = Tuning(concurrency=3)
    in_flight = peak = 0

    class Slow(RecordingProvider):
        async def send(self, message: Message) -> int:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.001)
            in_flight -= 1
            return await super().send(message)

    h.providers["coupon"] = Slow()
    h.notifier.providers = h.providers
    for n in range(20):
        await h.tag(f"c{n}", "value", "vip")
    await h.drain()
    assert len(h.sent("coupon")) == 20
    assert peak == 3


def _changed_at(customer: str, tag: str, at: datetime) -> TagChanged:
    return TagChanged(
        customer_id=customer,
        group_id="value",
        tag_id=tag,
        change="added",
        source="rule",
        reason=Reason(summary="test"),
        group_version=1,
        occurred_at=at,
        seq=1,
    )


async def test_a_tag_change_read_long_after_it_happened_starts_nothing_and_says_so() -> None:
    h = Harness()
    await phone(h, "c1")
    h.clock.advance(timedelta(days=1, seconds=1))  # read a day late: a new consumer group, a long outage
    await h.notifier.on_changes([_changed_at("c1", "high_churned", T0)])
    await h.drain()

    assert h.sent("push") == h.sent("coupon") == h.sent("sms") == []
    assert h.scheduler.pending() == []
    assert {(o.channel, o.outcome, o.reason) for o in h.outcomes.outcomes} == {
        ("push", "suppressed", "stale"),
        ("coupon", "suppressed", "stale"),
        ("sms", "suppressed", "stale"),
    }


async def test_a_tag_change_read_late_but_within_the_age_limit_is_acted_on() -> None:
    h = Harness()
    h.clock.advance(timedelta(hours=23))
    await h.notifier.on_changes([_changed_at("c2", "vip", T0)])
    await h.drain()
    assert [message.customer_id for message in h.sent("coupon")] == ["c2"]


TIERS = TagGroup.model_validate(
    {
        "id": "tier",
        "name": "会员等级",
        "mode": "exclusive",
        "tagging": "manual",
        "tags": [{"id": "gold", "name": "金卡"}, {"id": "new", "name": "新"}],
    }
)
NAMED = """
templates:
  upgraded: "${name|您好}，恭喜成为${tag}（${group}）会员\\nDear ${name}, welcome to ${tag_id}"
playbooks:
  - {id: upgrade, trigger: {group: tier, tag: gold}, steps: [{channel: push, template: upgraded}]}
  - {id: other, trigger: {group: tier, tag: silver}, steps: [{channel: push, template: upgraded}]}
"""


async def test_messages_name_the_tag_and_group_as_the_shop_does_and_skip_a_missing_name() -> None:
    h = Harness(playbooks=NAMED, groups={"tier": TIERS})
    await h.customers.set_profile("named", Profile(name="李雷"))
    await h.tag("named", "tier", "gold")
    await h.tag("anonymous", "tier", "gold")  # no profile at all
    await h.tag("anonymous", "tier", "silver")  # a tag the definitions no longer name: its id
    await h.drain()
    assert sorted(m.text or "" for m in h.sent("push")) == sorted(
        [
            "李雷，恭喜成为金卡（会员等级）会员\nDear 李雷, welcome to gold",
            "您好，恭喜成为金卡（会员等级）会员",
            "您好，恭喜成为silver（会员等级）会员",
        ]
    )
