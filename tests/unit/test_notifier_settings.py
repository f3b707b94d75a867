"""The notifier's settings: fail-fast validation naming the value, and the policy built from them."""

from __future__ import annotations

from datetime import time, timedelta

import pytest
from pydantic import ValidationError

from services.notifier.app import policy_from
from services.notifier.policy import CapRule, QuietHours
from services.runtime.settings import NotifierSettings


def test_the_defaults_cap_sms_daily_and_push_weekly_with_quiet_nights() -> None:
    policy = policy_from(NotifierSettings())
    assert policy.caps == (
        CapRule(channel="sms", limit=1, window=timedelta(days=1)),
        CapRule(channel="push", limit=3, window=timedelta(days=7)),
    )
    assert policy.quiet_hours == QuietHours(time(21), time(8))
    assert policy.coupon_period == timedelta(days=30)
    assert policy.default_zone.key == "UTC"


@pytest.mark.parametrize("off", ["off", "none", ""])
def test_quiet_hours_can_be_turned_off(off: str) -> None:
    assert policy_from(NotifierSettings(quiet_hours=off)).quiet_hours is None


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("caps", ("sms:one/1d",), "sms:one/1d"),
        ("quiet_hours", "late", "late"),
        ("default_timezone", "Mars/Olympus", "Mars/Olympus"),
        ("coupon_period", "a month", "coupon_period"),
    ],
)
def test_a_bad_value_is_refused_naming_it(field: str, value: object, named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        NotifierSettings.model_validate({field: value})


def test_provider_secrets_are_not_shown() -> None:
    settings = NotifierSettings.model_validate({"sms_auth": "Bearer s3cret"})
    assert "s3cret" not in repr(settings)
