"""`tagstream demo` as a newcomer runs it: the real command, no services, no flags."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _tagstream() -> list[str]:
    found = shutil.which("tagstream", path=str(Path(sys.executable).parent))
    return [found] if found else [sys.executable, "-m", "services.cli"]


@pytest.fixture(scope="module")
def demo_output() -> str:
    done = subprocess.run([*_tagstream(), "demo"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _count(output: str, channel: str, outcome: str, reason: str) -> int:
    match = re.search(rf"^{channel}\s+{outcome}\s+{re.escape(reason)}\s+(\d+)$", output, re.MULTILINE)
    return int(match.group(1)) if match else 0


def _customers(output: str, group: str, tag: str) -> int:
    match = re.search(rf"^{group}\s+{tag}\s+(\d+)$", output, re.MULTILINE)
    assert match, f"no summary row for {group} {tag}"
    return int(match.group(1))


def test_the_demo_tags_every_customer_once_per_exclusive_group(demo_output: str) -> None:
    assert "400 customers, 91 simulated days" in demo_output
    value = sum(_customers(demo_output, "会员贡献价值", tag) for tag in ("高价值", "中价值", "低价值"))
    lifecycle = sum(_customers(demo_output, "生命周期", tag) for tag in ("未购买", "首次购买", "复购客户"))
    assert value == lifecycle == 400
    assert _customers(demo_output, "流失预警", "可能流失") > 0


def test_the_demo_narrates_tag_changes_with_reasons_including_time_flips(demo_output: str) -> None:
    assert re.search(r"\+ \S+ 流失预警: 可能流失  \(time: matches", demo_output)
    assert re.search(r"− \S+ 生命周期: 未购买  \(rule: replaced by first_purchase", demo_output)


def test_the_demo_sends_follow_ups_and_shows_every_kind_of_suppression(demo_output: str) -> None:
    assert _count(demo_output, "coupon", "sent", "-") > 0
    assert _count(demo_output, "sms", "sent", "-") > 0
    assert _count(demo_output, "coupon", "suppressed", "duplicate") > 0, "two playbooks, one coupon per person"
    assert _count(demo_output, "sms", "suppressed", "consent") > 0
    assert _count(demo_output, "sms", "cancelled", "cancelled") > 0, "customers who came back get no SMS"
    assert _count(demo_output, "push", "deferred", "quiet_hours") > 0
    assert re.search(r"(\d+) came back after a coupon", demo_output)


def test_the_same_seed_prints_the_same_demo(demo_output: str) -> None:
    again = subprocess.run([*_tagstream(), "demo"], capture_output=True, text=True, timeout=120, check=True)
    assert again.stdout == demo_output


def _time_flips(output: str) -> list[str]:
    """The local "MM-DD HH:MM" of every narrated change that time alone made to a day-based metric (not
    the hot leads' decaying score, which flips at the instant it crosses its threshold)."""
    return re.findall(r"^(\d\d-\d\d \d\d:\d\d)  [+−] (?!\S+ 购买意向).*\(time: ", output, re.MULTILINE)


def test_the_demo_shop_is_in_shanghai_and_time_moves_its_tags_at_local_midnight(demo_output: str) -> None:
    assert "times are Asia/Shanghai" in demo_output
    flips = _time_flips(demo_output)
    assert flips, "no time flip narrated"
    assert {flip[-5:] for flip in flips} == {"00:00"}  # not 08:00, the UTC midnight


def test_the_demo_runs_in_the_shop_zone_from_the_settings() -> None:
    env = {**os.environ, "TAGSTREAM_SHOP__TIMEZONE": "America/New_York"}
    done = subprocess.run([*_tagstream(), "demo"], capture_output=True, text=True, timeout=120, check=True, env=env)
    assert "times are America/New_York" in done.stdout
    flips = _time_flips(done.stdout)
    assert flips
    assert {flip[-5:] for flip in flips} == {"00:00"}


def test_the_demo_alerts_the_salesperson_of_a_hot_lead_once_a_month_and_not_at_night(demo_output: str) -> None:
    assert re.search(r"✉ sent\s+alert\s+→ sales\.\w+ about \S+\(c\d{4}\)  \[hot-lead\]", demo_output)
    assert re.search(r"\+ \S+ 购买意向: 高意向  \(rule: matches", demo_output), "a followed lead turns hot"
    assert _count(demo_output, "alert", "sent", "-") > 0
    assert _count(demo_output, "alert", "suppressed", "cap") > 0, "one alert per lead per month"
    assert _count(demo_output, "alert", "deferred", "quiet_hours") > 0, "the hot-lead playbook keeps quiet hours"
