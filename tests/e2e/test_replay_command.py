"""`tagstream replay` as a merchant runs it: a real process, real files."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RULES = """
groups:
  - id: value
    name: 会员贡献价值
    mode: exclusive
    tagging: auto
    auto_remove: true
    tags:
      - {id: high, name: 高价值, rule: {match: all, conditions: [{metric: total_spent, op: gte, value: 2000}]}}
      - {id: mid, name: 中价值, rule: {match: all, conditions: [{metric: total_spent, op: gte, value: 300}]}}
  - id: recency
    name: 最近购买
    mode: multi
    tagging: auto
    auto_remove: true
    tags:
      - id: week
        name: 7天内购买
        rule: {match: all, conditions: [{metric: days_since_last_order, op: lte, value: 7}]}
"""


def event(kind, number, customer, when, **fields):
    return json.dumps({"type": kind, "event_id": f"e{number}", "customer_id": customer, "occurred_at": when} | fields)


@pytest.fixture
def history(tmp_path: Path) -> Path:
    lines = [
        event(
            "order_paid",
            1,
            "alice",
            "2026-11-01T10:00:00Z",
            order_id="o1",
            amount="350.00",
            currency="CNY",
            items=[{"product_id": "sku-1", "quantity": 1, "price": "350.00"}],
            points_earned=35,
        ),
        event("browse", 2, "bob", "2026-11-02T10:00:00Z", product_id="sku-1"),
        "{not json",
        event("order_paid", 3, "alice", "2026-11-03T10:00:00Z", order_id="o2", amount="1800", currency="CNY"),
        event("order_paid", 3, "alice", "2026-11-03T10:00:00Z", order_id="o2", amount="1800", currency="CNY"),
        json.dumps({"type": "browse", "event_id": "e9", "customer_id": "bob", "occurred_at": "2026-11-04T00:00:00"}),
        "",
        event("order_refunded", 4, "alice", "2026-11-05T10:00:00Z", order_id="o2", amount="1800"),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "rules.yaml").write_text(RULES, encoding="utf-8")
    return path


def tagstream() -> list[str]:
    found = shutil.which("tagstream", path=str(Path(sys.executable).parent))
    assert found, "the tagstream console script is not installed in this environment"
    return [found]


def test_replay_writes_tags_and_changes_and_reports_bad_lines(history: Path, tmp_path: Path):
    out, changes = tmp_path / "out.jsonl", tmp_path / "changes.jsonl"
    result = subprocess.run(
        [
            *tagstream(),
            "replay",
            str(history),
            "--rules",
            str(tmp_path / "rules.yaml"),
            "--out",
            str(out),
            "--changes",
            str(changes),
            "--now",
            "2026-11-20T00:00:00Z",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr  # bad lines make the run fail loudly, after writing output
    assert f"{history}:3: rejected: (document): Invalid JSON" in result.stderr
    assert f"{history}:6: rejected: browse.occurred_at: Input should have timezone info" in result.stderr
    assert "5 events" in result.stderr
    assert "1 duplicates ignored" in result.stderr
    assert "2 lines rejected" in result.stderr

    customers = [json.loads(line) for line in out.read_text().splitlines()]
    assert [c["customer_id"] for c in customers] == ["alice", "bob"]
    alice = customers[0]
    assert alice["tags"] == {"value": ["mid"]}  # 2150 crossed 2000, then the refund brought it back
    assert alice["aggregates"]["total_spent"] == "350.00"
    assert alice["aggregates"]["order_count"] == 1
    assert alice["aggregates"]["last_order_at"] == "2026-11-03T10:00:00Z"  # refunds don't move it
    assert alice["aggregates"]["days_since_last_order"] == 16

    stream = [json.loads(line) for line in changes.read_text().splitlines()]
    alice_changes = [
        (c["group_id"], c["tag_id"], c["change"], c["source"]) for c in stream if c["customer_id"] == "alice"
    ]
    assert alice_changes == [  # groups of equal `order` are evaluated by id
        ("recency", "week", "added", "rule"),
        ("value", "mid", "added", "rule"),
        ("value", "mid", "removed", "rule"),
        ("value", "high", "added", "rule"),
        ("value", "high", "removed", "rule"),
        ("value", "mid", "added", "rule"),
        ("recency", "week", "removed", "time"),
    ]
    assert [c["seq"] for c in stream if c["customer_id"] == "alice"] == list(range(1, 8))
    assert stream[-1]["occurred_at"] == "2026-11-11T10:00:00Z"  # 8 whole days after the last order


def test_replay_defaults_now_to_the_latest_event(history: Path, tmp_path: Path):
    from services.cli import main

    out = tmp_path / "out.jsonl"
    assert main(["replay", str(history), "--rules", str(tmp_path / "rules.yaml"), "--out", str(out)]) == 1
    alice = json.loads(out.read_text().splitlines()[0])
    assert alice["tags"] == {"recency": ["week"], "value": ["mid"]}


def test_events_after_now_are_rejected_not_silently_used(history: Path, tmp_path: Path, capsys):
    from services.cli import main

    out = tmp_path / "out.jsonl"
    main(
        [
            "replay",
            str(history),
            "--rules",
            str(tmp_path / "rules.yaml"),
            "--out",
            str(out),
            "--now",
            "2026-11-02T12:00:00Z",
        ]
    )
    assert "occurred_at 2026-11-03T10:00:00+00:00 is after --now" in capsys.readouterr().err


def test_replay_counts_free_orders_uncounts_refunded_ones_and_refuses_another_currency(tmp_path: Path, capsys):
    from services.cli import main

    free = {"amount": "0.00", "currency": "CNY"}
    lines = [
        event("order_paid", 1, "mei", "2026-11-01T10:00:00+08:00", order_id="f1", **free),
        event("order_paid", 2, "mei", "2026-11-02T10:00:00+08:00", order_id="f2", points_earned=3, **free),
        event("order_paid", 3, "mei", "2026-11-03T10:00:00+08:00", order_id="p1", amount="200", currency="CNY"),
        event("order_paid", 4, "mei", "2026-11-04T10:00:00+08:00", order_id="u1", amount="50", currency="USD"),
        event("order_refunded", 5, "mei", "2026-11-05T10:00:00+08:00", order_id="f1", amount="0.01"),
    ]
    events = tmp_path / "free.jsonl"
    events.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "rules.yaml").write_text(RULES, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    arguments = ["replay", str(events), "--rules", str(tmp_path / "rules.yaml"), "--out", str(out)]

    assert main([*arguments, "--currency", "CNY"]) == 1
    assert f"{events}:4: rejected: currency 'USD' is not the shop's currency 'CNY'" in capsys.readouterr().err
    mei = json.loads(out.read_text())["aggregates"]
    assert (mei["order_count"], mei["total_spent"], mei["points_total"]) == (2, "200", 3)


def test_an_invalid_rules_file_stops_before_reading_events(history: Path, tmp_path: Path, capsys):
    from services.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("groups: [{id: x}]", encoding="utf-8")
    assert main(["replay", str(history), "--rules", str(bad), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "bad.yaml: groups.0.name: Field required" in capsys.readouterr().err


def test_templates_can_be_listed_and_rendered(capsys):
    from services.cli import main

    assert main(["templates", "list"]) == 0
    assert "rfm: RFM 8 segments" in capsys.readouterr().out
    assert main(["templates", "show", "value_tiers", "--set", "high_spend=5000"]) == 0
    assert '"5000"' in capsys.readouterr().out
