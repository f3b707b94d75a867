"""`tagstream replay` for a shop in Shanghai: its local days, and absolute windows that wait for their end."""

import json
import subprocess
from pathlib import Path

from tests.e2e.test_replay_command import event, tagstream

CHURN = """
groups:
  - id: churn
    name: 流失预警
    mode: multi
    tagging: auto
    auto_remove: true
    tags:
      - id: likely_to_churn
        name: 可能流失
        rule:
          match: all
          conditions:
            - {metric: order_count, op: gte, value: 1, window: {from: 2026-01-05, to: 2026-01-20}}
            - {metric: order_count, op: eq, value: 0, window: {from: 2026-01-20, to: 2026-02-04}}
            - {metric: browse_count, op: eq, value: 0, window: {from: 2026-01-20, to: 2026-02-04}}
            - {metric: click_count, op: eq, value: 0, window: {from: 2026-01-20, to: 2026-02-04}}
  - id: activity
    name: 活跃
    mode: multi
    tagging: auto
    auto_remove: true
    tags:
      - id: today
        name: 今日下单
        rule: {match: all, conditions: [{metric: days_since_last_order, op: eq, value: 0}]}
"""


def replay(tmp_path: Path, lines: list[str], now: str, *zone: str) -> tuple[list[dict], list[dict]]:
    events, rules = tmp_path / "events.jsonl", tmp_path / "rules.yaml"
    events.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rules.write_text(CHURN, encoding="utf-8")
    out, changes = tmp_path / "out.jsonl", tmp_path / "changes.jsonl"
    command = [*tagstream(), "replay", str(events), "--rules", str(rules), "--out", str(out), "--changes", str(changes)]
    done = subprocess.run([*command, "--now", now, *zone], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    read = [json.loads(line) for line in out.read_text().splitlines()]
    return read, [json.loads(line) for line in changes.read_text().splitlines()]


ORDERS = [
    # 07:30 on 01-08 in Shanghai (23:30Z on 01-07): an order in window A
    event("order_paid", 1, "quiet", "2026-01-07T23:30:00Z", order_id="o1", amount="99.00", currency="CNY"),
    event("order_paid", 2, "busy", "2026-01-08T02:00:00Z", order_id="o2", amount="99.00", currency="CNY"),
    # 07:00 on 01-20 in Shanghai (23:00Z on 01-19): in window B there, in window A for a UTC shop
    event("browse", 3, "busy", "2026-01-19T23:00:00Z", product_id="p1"),
]


def test_the_churn_tag_waits_for_window_b_to_end_at_shanghai_midnight(tmp_path: Path):
    customers, changes = replay(tmp_path, ORDERS, "2026-02-10T00:00:00Z", "--timezone", "Asia/Shanghai")
    assert {c["customer_id"]: c["tags"].get("churn") for c in customers} == {"quiet": ["likely_to_churn"], "busy": None}
    [churned] = [c for c in changes if c["group_id"] == "churn"]
    assert churned["occurred_at"] == "2026-02-03T16:00:00Z"  # 2026-02-04 00:00 in Shanghai: window B's end
    assert churned["source"] == "time"


def test_before_window_b_ends_no_one_is_tagged(tmp_path: Path):
    customers, changes = replay(tmp_path, ORDERS, "2026-02-03T15:59:59Z", "--timezone", "Asia/Shanghai")
    assert [c for c in changes if c["group_id"] == "churn"] == []
    assert all("churn" not in c["tags"] for c in customers)


def test_a_shanghai_morning_order_counts_on_its_local_day_and_days_since_flips_at_local_midnight(tmp_path: Path):
    customers, changes = replay(tmp_path, ORDERS[:1], "2026-01-08T15:59:00Z", "--timezone", "Asia/Shanghai")
    assert customers[0]["tags"] == {"activity": ["today"]}  # 23:59 on 01-08 in Shanghai: still the order's day
    assert customers[0]["aggregates"]["days_since_last_order"] == 0
    customers, changes = replay(tmp_path, ORDERS[:1], "2026-01-08T16:00:00Z", "--timezone", "Asia/Shanghai")
    assert customers[0]["aggregates"]["days_since_last_order"] == 1
    assert changes[-1]["change"] == "removed"
    assert changes[-1]["occurred_at"] == "2026-01-08T16:00:00Z"


def test_the_zone_comes_from_the_shop_setting_when_no_flag_is_given(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TAGSTREAM_SHOP__TIMEZONE", "Asia/Shanghai")
    customers, _ = replay(tmp_path, ORDERS, "2026-02-10T00:00:00Z")
    assert customers[1]["customer_id"] == "quiet"
    assert customers[1]["tags"]["churn"] == ["likely_to_churn"]
    monkeypatch.delenv("TAGSTREAM_SHOP__TIMEZONE")
    customers, _ = replay(tmp_path, ORDERS, "2026-02-10T00:00:00Z")  # a UTC shop: busy's browse is in window A
    assert {c["customer_id"]: c["tags"].get("churn") for c in customers} == {
        "busy": ["likely_to_churn"],
        "quiet": ["likely_to_churn"],
    }
