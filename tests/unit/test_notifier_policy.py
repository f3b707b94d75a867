"""The notifier's pure policy: keys, caps, quiet hours, holdout, cancel conditions and the decision order."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.notifier.policy import (
    CapRule,
    Facts,
    Playbook,
    Policy,
    QuietHours,
    ScheduledStep,
    SendRecord,
    count_within,
    decide,
    exceeded_cap,
    holdout_draw,
    in_holdout,
    step_key,
)
from services.notifier.policy.cancel import cancel_reason

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def playbook(holdout: str = "0", caps: tuple[CapRule, ...] = (), playbook_id: str = "winback") -> Playbook:
    return Playbook.model_validate(
        {
            "id": playbook_id,
            "trigger": {"group": "value", "tag": "high_churned"},
            "steps": [{"channel": "sms", "template": "t"}],
            "holdout": holdout,
            "caps": [cap.model_dump() for cap in caps],
        }
    )


def job(channel: str = "sms", customer: str = "c1", coupon: str | None = None, **changes: object) -> ScheduledStep:
    values: dict[str, object] = {
        "key": step_key("winback", 0, customer, 1),
        "playbook_id": "winback",
        "step": 0,
        "channel": channel,
        "template": None if channel == "coupon" else "t",
        "coupon": coupon,
        "cancel_if": ("tag_removed", "customer_returned"),
        "customer_id": customer,
        "group_id": "value",
        "tag_id": "high_churned",
        "change": "added",
        "seq": 1,
        "triggered_at": T0,
        "due_at": T0,
    }
    values.update(changes)
    return ScheduledStep.model_validate(values)


def sms(at: datetime, playbook_id: str = "winback") -> SendRecord:
    return SendRecord("sms", playbook_id, at)


# --- dedupe keys and holdout ---


def test_a_step_key_is_stable_and_differs_by_each_of_its_parts() -> None:
    key = step_key("winback", 2, "c1", 7)
    assert key == step_key("winback", 2, "c1", 7)
    assert len(key) == 32
    others = {step_key("other", 2, "c1", 7), step_key("winback", 1, "c1", 7), step_key("winback", 2, "c2", 7)}
    others.add(step_key("winback", 2, "c1", 8))
    assert key not in others
    assert len(others) == 4


def test_step_keys_do_not_collide_when_ids_shift_characters_between_parts() -> None:
    assert step_key("ab", 1, "c", 1) != step_key("a", 1, "bc", 1)


def test_the_holdout_draw_is_stable_per_customer_and_differs_per_playbook() -> None:
    assert holdout_draw("c1", "winback") == holdout_draw("c1", "winback")
    assert 0 <= holdout_draw("c1", "winback") < 1
    assert holdout_draw("c1", "winback") != holdout_draw("c1", "other")


def test_about_the_configured_share_of_customers_is_held_out() -> None:
    book = playbook(holdout="5%")
    held = sum(in_holdout(f"customer-{n}", book) for n in range(20_000))
    assert 800 < held < 1200  # 5% of 20,000 = 1,000; binomial sd ~31


def test_no_holdout_and_full_holdout_are_exact() -> None:
    assert not any(in_holdout(f"c{n}", playbook(holdout="0%")) for n in range(500))
    assert all(in_holdout(f"c{n}", playbook(holdout="100%")) for n in range(500))


@settings(max_examples=200, deadline=None)
@given(customer=st.text(min_size=1, max_size=40), small=st.integers(0, 100), extra=st.integers(0, 100))
def test_raising_the_holdout_only_adds_customers_to_the_control_group(customer: str, small: int, extra: int) -> None:
    low, high = small, min(100, small + extra)
    if in_holdout(customer, playbook(holdout=f"{low}%")):
        assert in_holdout(customer, playbook(holdout=f"{high}%"))


# --- caps over sliding windows ---


def test_a_window_counts_sends_strictly_after_its_start_up_to_now() -> None:
    history = [sms(T0 - timedelta(days=1)), sms(T0 - timedelta(hours=23)), sms(T0), sms(T0 + timedelta(seconds=1))]
    assert count_within(history, T0, timedelta(days=1), playbook_id=None) == 2


def test_one_sms_a_day_blocks_a_second_until_the_first_is_a_day_old() -> None:
    caps = (CapRule(channel="sms", limit=1, window=timedelta(days=1)),)
    history = [sms(T0)]
    assert exceeded_cap("sms", "winback", history, T0 + timedelta(hours=23), global_caps=caps, playbook_caps=())
    assert exceeded_cap("sms", "winback", history, T0 + timedelta(days=1), global_caps=caps, playbook_caps=()) is None


def test_three_pushes_a_week_is_a_sliding_window_not_a_calendar_week() -> None:
    caps = (CapRule(channel="push", limit=3, window=timedelta(days=7)),)
    history = [SendRecord("push", "p", T0 + timedelta(days=d)) for d in (0, 2, 4)]
    assert exceeded_cap("push", "p", history, T0 + timedelta(days=6), global_caps=caps, playbook_caps=())
    # a calendar week would still hold three; the sliding window has dropped the first send by now
    assert (
        exceeded_cap("push", "p", history, T0 + timedelta(days=7, seconds=1), global_caps=caps, playbook_caps=())
        is None
    )


def test_a_cap_counts_only_its_channel() -> None:
    caps = (CapRule(channel="sms", limit=1, window=timedelta(days=1)),)
    history = [SendRecord("push", "winback", T0)]
    assert exceeded_cap("sms", "winback", history, T0, global_caps=caps, playbook_caps=()) is None


def test_a_playbook_cap_counts_only_that_playbook_s_sends_and_a_global_one_counts_all() -> None:
    cap = CapRule(channel="sms", limit=1, window=timedelta(days=7))
    history = [sms(T0, playbook_id="other")]
    later = T0 + timedelta(hours=1)
    assert exceeded_cap("sms", "winback", history, later, global_caps=(), playbook_caps=(cap,)) is None
    rule, scope = exceeded_cap("sms", "winback", history, later, global_caps=(cap,), playbook_caps=()) or (None, "")
    assert (rule, scope) == (cap, "global")


def test_a_zero_limit_blocks_the_channel() -> None:
    caps = (CapRule(channel="sms", limit=0, window=timedelta(days=1)),)
    assert exceeded_cap("sms", "winback", [], T0, global_caps=caps, playbook_caps=())


@settings(max_examples=200, deadline=None)
@given(
    offsets=st.lists(st.integers(0, 30 * 24 * 3600), max_size=30),
    limit=st.integers(1, 5),
    window_h=st.integers(1, 24 * 10),
)
def test_sending_only_when_no_cap_is_exceeded_never_puts_more_than_the_limit_in_any_window(
    offsets: list[int], limit: int, window_h: int
) -> None:
    rule = CapRule(channel="sms", limit=limit, window=timedelta(hours=window_h))
    sent: list[SendRecord] = []
    for offset in sorted(offsets):
        now = T0 + timedelta(seconds=offset)
        if exceeded_cap("sms", "p", sent, now, global_caps=(rule,), playbook_caps=()) is None:
            sent.append(SendRecord("sms", "p", now))
    for record in sent:
        assert count_within(sent, record.at, rule.window, playbook_id=None) <= limit


# --- quiet hours ---

NIGHT = QuietHours.parse("21:00-08:00")


def test_quiet_hours_parse_and_refuse_nonsense() -> None:
    assert QuietHours(time(21), time(8)) == NIGHT
    assert str(QuietHours.parse("9:30-17:05")) == "09:30-17:05"
    with pytest.raises(ValueError, match="21:00-08:00"):
        QuietHours.parse("25:00-08:00")


@pytest.mark.parametrize(
    ("local", "quiet"),
    [
        (time(20, 59), False),
        (time(21), True),
        (time(23, 59), True),
        (time(0), True),
        (time(7, 59), True),
        (time(8), False),
    ],
)
def test_a_window_across_midnight_holds_the_late_evening_and_early_morning(local: time, quiet: bool) -> None:
    assert NIGHT.contains(local) is quiet


def test_a_same_day_window_and_an_empty_window() -> None:
    lunch = QuietHours.parse("12:00-14:00")
    assert lunch.contains(time(13))
    assert not lunch.contains(time(14))
    assert not lunch.contains(time(11))
    assert not QuietHours.parse("08:00-08:00").contains(time(8))


def test_late_evening_in_shanghai_is_held_until_eight_the_next_local_morning() -> None:
    now = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)  # 22:30 in Shanghai
    assert NIGHT.ends_after(now, SHANGHAI) == datetime(2026, 11, 24, 0, 0, tzinfo=UTC)  # 08:00 +08:00


def test_early_morning_is_held_until_eight_the_same_local_day() -> None:
    now = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)  # 04:00 on the 24th in Shanghai
    assert NIGHT.ends_after(now, SHANGHAI) == datetime(2026, 11, 24, 0, 0, tzinfo=UTC)


def test_the_same_instant_is_quiet_in_one_zone_and_not_in_another() -> None:
    now = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)  # 22:30 Shanghai, 15:30 Berlin
    assert NIGHT.ends_after(now, SHANGHAI) is not None
    assert NIGHT.ends_after(now, BERLIN) is None


def test_a_night_across_the_spring_forward_ends_at_eight_on_the_new_wall_clock() -> None:
    now = datetime(2026, 3, 28, 22, 0, tzinfo=UTC)  # 23:00 CET; clocks jump 02:00 -> 03:00 on the 29th
    until = NIGHT.ends_after(now, BERLIN)
    assert until == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)  # 08:00 CEST
    assert until is not None
    assert until - now == timedelta(hours=8)


def test_a_night_across_the_autumn_change_ends_at_eight_on_the_new_wall_clock() -> None:
    now = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)  # 22:00 EDT on Oct 31st; 02:00 -> 01:00 on Nov 1st
    assert NIGHT.ends_after(now, NEW_YORK) == datetime(2026, 11, 1, 13, 0, tzinfo=UTC)  # 08:00 EST


def test_an_end_time_repeated_by_the_autumn_change_resolves_to_the_occurrence_still_ahead() -> None:
    window = QuietHours.parse("00:00-02:30")  # 02:00-03:00 happens twice in Berlin on 2026-10-25
    now = datetime(2026, 10, 25, 1, 15, tzinfo=UTC)  # 02:15 CET, the second time round
    assert window.ends_after(now, BERLIN) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)  # 02:30 CET


def test_an_end_time_skipped_by_the_spring_forward_resolves_forward() -> None:
    window = QuietHours.parse("01:00-02:30")  # 02:30 does not exist in Berlin on 2026-03-29
    now = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # 01:30 CET
    until = window.ends_after(now, BERLIN)
    assert until is not None
    assert until > now
    assert until.astimezone(BERLIN).time() >= time(3)


@settings(max_examples=500, deadline=None)
@given(
    minutes=st.integers(0, 366 * 24 * 60),
    zone=st.sampled_from([SHANGHAI, BERLIN, NEW_YORK, ZoneInfo("Australia/Lord_Howe"), ZoneInfo("UTC")]),
    start=st.integers(0, 24 * 60 - 1),
    end=st.integers(0, 24 * 60 - 1),
)
def test_a_held_message_is_released_after_now_and_outside_the_window(
    minutes: int, zone: ZoneInfo, start: int, end: int
) -> None:
    window = QuietHours(time(start // 60, start % 60), time(end // 60, end % 60))
    now = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    until = window.ends_after(now, zone)
    if until is None:
        assert not window.contains(now.astimezone(zone).time())
        return
    assert now < until <= now + timedelta(hours=25)
    assert window.ends_after(until, zone) is None or until.astimezone(zone).time() >= window.end


# --- cancel conditions ---


def test_a_removed_trigger_tag_cancels_and_an_unknown_state_does_not() -> None:
    assert cancel_reason(["tag_removed"], tag_held=False, last_activity=None, triggered_at=T0)
    assert cancel_reason(["tag_removed"], tag_held=True, last_activity=None, triggered_at=T0) is None
    assert cancel_reason(["tag_removed"], tag_held=None, last_activity=None, triggered_at=T0) is None


def test_activity_after_the_trigger_cancels_and_activity_before_it_does_not() -> None:
    after = T0 + timedelta(hours=1)
    assert cancel_reason(["customer_returned"], tag_held=True, last_activity=after, triggered_at=T0)
    assert cancel_reason(["customer_returned"], tag_held=True, last_activity=T0, triggered_at=T0) is None


def test_a_step_without_cancel_conditions_is_never_cancelled() -> None:
    assert cancel_reason([], tag_held=False, last_activity=T0 + timedelta(days=1), triggered_at=T0) is None


def test_tag_added_cancels_a_removal_follow_up_once_the_tag_is_back() -> None:
    assert cancel_reason(["tag_added"], tag_held=True, last_activity=None, triggered_at=T0)


# --- the decision and its order ---

POLICY = Policy(
    caps=(CapRule(channel="sms", limit=1, window=timedelta(days=1)),),
    quiet_hours=NIGHT,
    coupon_period=timedelta(days=30),
)
DAYTIME = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)  # 11:00 in Shanghai


def facts(**values: object) -> Facts:
    base: dict[str, object] = {"now": DAYTIME, "tag_held": True, "zone": SHANGHAI}
    base.update(values)
    return Facts(**base)  # type: ignore[arg-type]


def test_a_consenting_reachable_customer_in_daytime_is_sent_to() -> None:
    assert decide(job(), playbook(), facts(), POLICY).verdict == "send"


def test_a_removed_or_disabled_playbook_cancels_its_scheduled_steps() -> None:
    assert decide(job(), None, facts(), POLICY).verdict == "cancel"
    disabled = playbook().model_copy(update={"disabled": True})
    assert decide(job(), disabled, facts(), POLICY).reason == "cancelled"


@pytest.mark.parametrize("opt_out", [{"sms"}, {"*"}])
def test_an_opt_out_of_the_channel_or_of_everything_suppresses_for_consent(opt_out: set[str]) -> None:
    decision = decide(job(), playbook(), facts(opted_out=frozenset(opt_out)), POLICY)
    assert (decision.verdict, decision.reason) == ("suppress", "consent")


def test_an_opt_out_of_another_channel_does_not_suppress() -> None:
    assert decide(job(), playbook(), facts(opted_out=frozenset({"push"})), POLICY).verdict == "send"


def test_an_sms_without_a_phone_number_is_suppressed_as_unreachable() -> None:
    assert decide(job(), playbook(), facts(reachable=False), POLICY).reason == "unreachable"


def test_a_held_out_customer_is_suppressed_and_recorded_as_holdout() -> None:
    assert decide(job(), playbook(holdout="100%"), facts(), POLICY).reason == "holdout"


def test_an_already_decided_step_is_a_duplicate() -> None:
    assert decide(job(), playbook(), facts(already_decided=True), POLICY).reason == "duplicate"


def test_a_coupon_kind_held_by_another_step_is_a_duplicate_but_our_own_reservation_is_not() -> None:
    coupon = job(channel="coupon", coupon="HV-50")
    assert decide(coupon, playbook(), facts(coupon_holder="another-step"), POLICY).reason == "duplicate"
    assert decide(coupon, playbook(), facts(coupon_holder=coupon.key), POLICY).verdict == "send"


def test_a_cap_suppresses_and_says_which() -> None:
    decision = decide(job(), playbook(), facts(history=[sms(DAYTIME - timedelta(hours=2), "other")]), POLICY)
    assert (decision.verdict, decision.reason) == ("suppress", "cap")
    assert "global cap of 1 sms per 1d" in decision.detail


def test_quiet_hours_defer_to_the_window_end_in_the_customer_s_zone() -> None:
    night = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)  # 22:30 Shanghai
    decision = decide(job(), playbook(), facts(now=night), POLICY)
    assert (decision.verdict, decision.reason) == ("defer", "quiet_hours")
    assert decision.until == datetime(2026, 11, 24, 0, 0, tzinfo=UTC)


def test_quiet_hours_use_the_default_zone_when_the_profile_has_none() -> None:
    night = datetime(2026, 11, 23, 22, 30, tzinfo=UTC)
    assert decide(job(), playbook(), facts(now=night, zone=None), POLICY).verdict == "defer"
    los_angeles = ZoneInfo("America/Los_Angeles")  # 14:30 there
    assert decide(job(), playbook(), facts(now=night, zone=los_angeles), POLICY).verdict == "send"


def test_coupons_are_not_held_by_quiet_hours_by_default() -> None:
    night = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)
    assert decide(job(channel="coupon", coupon="HV-50"), playbook(), facts(now=night), POLICY).verdict == "send"


def test_cancel_comes_before_consent_which_comes_before_holdout_duplicate_cap_and_quiet_hours() -> None:
    night = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)
    everything = {
        "now": night,
        "tag_held": False,
        "opted_out": frozenset({"sms"}),
        "already_decided": True,
        "history": [sms(night - timedelta(hours=1))],
    }
    book = playbook(holdout="100%")
    expected = ["cancelled", "consent", "holdout", "duplicate", "cap", "quiet_hours", ""]
    seen = []
    for remove in [None, "tag_held", "opted_out", "holdout", "already_decided", "history", "now"]:
        if remove == "tag_held":
            everything["tag_held"] = True
        elif remove == "opted_out":
            everything["opted_out"] = frozenset()
        elif remove == "holdout":
            book = playbook()
        elif remove == "already_decided":
            everything["already_decided"] = False
        elif remove == "history":
            everything["history"] = []
        elif remove == "now":
            everything["now"] = DAYTIME
        seen.append(decide(job(), book, facts(**everything), POLICY).reason)
    assert seen == expected


def test_holdout_is_a_decimal_fraction() -> None:
    assert playbook(holdout="12.5%").holdout == Decimal("0.125")
