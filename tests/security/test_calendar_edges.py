"""Finding 3: instants and durations at the edge of the calendar are refused at validation, naming
the field, instead of overflowing later (a 500 on every matching event, or a raw OverflowError)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.cli import main
from services.notifier.policy import PlaybookError, load_playbooks
from services.runtime.settings import NotifierSettings
from tests.security.node import OPERATOR, count_rule, group, order, running_node

EDGE = "9999-12-31T23:59:59-12:00"


@pytest.mark.parametrize("instant", [EDGE, "2100-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00"])
async def test_an_event_dated_at_the_edge_of_the_calendar_gets_422_naming_occurred_at(
    tmp_path: Path, instant: str
) -> None:
    async with running_node(tmp_path) as running:
        refused = await running.post("/v1/events", order("c1", "e1", occurred_at=instant), key=OPERATOR)
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["field"] == "occurred_at"


async def test_a_manual_tag_expiring_at_the_edge_of_the_calendar_gets_422_naming_expires_at(tmp_path: Path) -> None:
    async with running_node(tmp_path) as running:
        assert (await running.post("/v1/groups", group(count_rule(1)))).status_code == 201
        body = {"group_id": "g", "tag_id": "t", "action": "add", "customer_ids": ["c1"], "expires_at": EDGE}
        refused = await running.post("/v1/manual-tags", body, key=OPERATOR)
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "expires_at"]


def playbooks_with_delay(delay: str) -> str:
    return f"""
templates:
  hello: "Hello ${{name}}"
playbooks:
  - id: welcome
    trigger: {{group: g, tag: t}}
    steps:
      - {{channel: push, template: hello, delay: {delay}}}
"""


@pytest.mark.parametrize("delay", ["999999999d", "99999999999999999999d", "367d", "999999999999999999999999"])
def test_a_playbook_delay_beyond_a_year_is_refused_naming_the_step(delay: str) -> None:
    with pytest.raises(PlaybookError) as refused:
        load_playbooks(playbooks_with_delay(delay), "playbooks.yaml")
    assert "playbook 'welcome' steps[0].delay" in str(refused.value)
    assert "at most 366d" in str(refused.value) or "not a duration" in str(refused.value)


def test_notifier_check_reports_an_overflowing_delay_as_a_check_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "playbooks.yaml"
    path.write_text(playbooks_with_delay("99999999999999999999d"))

    assert main(["notifier", "--check", str(path)]) == 2
    assert "steps[0].delay" in capsys.readouterr().err


def test_cap_windows_are_bounded_like_delays() -> None:
    text = playbooks_with_delay("1d") + "    caps: [{channel: push, limit: 1, window: 999999999w}]\n"
    with pytest.raises(PlaybookError, match=r"caps\[0\]\.window"):
        load_playbooks(text)


@pytest.mark.parametrize(
    ("setting", "value"),
    [("coupon_period", "99999999999999999999d"), ("max_trigger_age", "999999999d"), ("caps", ["sms:1/999999999d"])],
)
def test_notifier_settings_durations_are_bounded_naming_the_setting(setting: str, value: object) -> None:
    with pytest.raises(ValidationError) as refused:
        NotifierSettings.model_validate({setting: value})
    assert refused.value.errors()[0]["loc"] == (setting,)
    assert "at most 366d" in str(refused.value)
