"""The notifier's settings: fail-fast validation naming the value, and the policy built from them."""

from __future__ import annotations

from datetime import time, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.embedded.commands import playbooks_file
from services.notifier.composition import policy_from
from services.notifier.policy import CapRule, QuietHours
from services.runtime.settings import NotifierSettings, Settings, ShopSettings


def test_the_defaults_cap_sms_daily_and_push_weekly_with_quiet_nights() -> None:
    policy = policy_from(NotifierSettings(), ShopSettings())
    assert policy.caps == (
        CapRule(channel="sms", limit=1, window=timedelta(days=1)),
        CapRule(channel="push", limit=3, window=timedelta(days=7)),
    )
    assert policy.quiet_hours == QuietHours(time(21), time(8))
    assert policy.coupon_period == timedelta(days=30)
    assert policy.default_zone.key == "UTC"


@pytest.mark.parametrize("off", ["off", "none", ""])
def test_quiet_hours_can_be_turned_off(off: str) -> None:
    assert policy_from(NotifierSettings(quiet_hours=off), ShopSettings()).quiet_hours is None


def test_customers_without_a_zone_are_in_the_shops_zone_unless_the_notifier_names_another() -> None:
    shanghai = ShopSettings(timezone="Asia/Shanghai")
    assert policy_from(NotifierSettings(), shanghai).default_zone.key == "Asia/Shanghai"
    named = NotifierSettings(default_timezone="Europe/Berlin")
    assert policy_from(named, shanghai).default_zone.key == "Europe/Berlin"


def test_the_default_zone_follows_the_shop_zone_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAGSTREAM_SHOP__TIMEZONE", "Asia/Shanghai")
    monkeypatch.delenv("TAGSTREAM_NOTIFIER__DEFAULT_TIMEZONE", raising=False)
    settings = Settings()
    assert settings.notifier.default_timezone is None
    assert policy_from(settings.notifier, settings.shop).default_zone.key == "Asia/Shanghai"


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


def test_run_embedded_reads_the_playbooks_option_else_the_notifier_services_file_when_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TAGSTREAM_NOTIFIER__PLAYBOOKS_FILE", raising=False)
    assert playbooks_file(None, Settings()) is None  # the service's default path is not a laptop's file
    assert playbooks_file("mine.yaml", Settings()) == Path("mine.yaml")
    monkeypatch.setenv("TAGSTREAM_NOTIFIER__PLAYBOOKS_FILE", "/srv/playbooks.yaml")
    assert playbooks_file(None, Settings()) == Path("/srv/playbooks.yaml")
    assert playbooks_file("mine.yaml", Settings()) == Path("mine.yaml")
