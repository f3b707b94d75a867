"""Finding 2: every number in a definition or an event is bounded before anything converts it, and
the Kafka tagger holds the same bounds (an event outside them goes to the DLQ, not into the state)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from schemas.limits import MAX_CONDITIONS, MAX_VALUES
from schemas.topics import TopicNames
from services.engine import Engine, RuleBook
from services.runtime.clock import ManualClock
from services.tagger.core import Incoming, TaggerCore
from tests.security.node import count_rule, group, order, running_node


@pytest.mark.parametrize(
    ("condition", "field"),
    [
        ({"metric": "order_count", "op": "gte", "value": "1e999999999"}, "value"),
        ({"metric": "points_total", "op": "gte", "value": 2**64}, "value"),
        ({"metric": "total_spent", "op": "gte", "value": "1e13"}, "value"),
        ({"metric": "days_since_last_order", "op": "gte", "value": 10**12}, "value"),
        ({"metric": "order_count", "op": "in", "value": list(range(MAX_VALUES + 1))}, "values"),
        ({"metric": "bought_any", "op": "eq", "value": "p" * 300}, "ids"),
    ],
    ids=["huge-exponent", "points-2-64", "money-1e13", "days-1e12", "in-list-too-long", "id-too-long"],
)
async def test_condition_values_beyond_their_bounds_are_refused_at_once_naming_the_value(
    tmp_path: Path, condition: dict[str, Any], field: str
) -> None:
    async with running_node(tmp_path) as running:
        started = time.perf_counter()
        refused = await running.post("/v1/groups", group({"conditions": [condition]}))
        assert time.perf_counter() - started < 1.0  # "1e999999999" as an int takes minutes
    assert refused.status_code == 422
    assert field in refused.text
    assert len(refused.content) < 2000


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        (count_rule(1, depth=9), "nest"),
        ({"conditions": [count_rule(1)["conditions"][0]] * (MAX_CONDITIONS + 1)}, "at most"),
    ],
    ids=["nine-levels-deep", "too-many-conditions"],
)
async def test_rules_too_deep_or_too_wide_are_refused(tmp_path: Path, rule: dict[str, Any], problem: str) -> None:
    async with running_node(tmp_path) as running:
        refused = await running.post("/v1/groups", group(rule))
    assert refused.status_code == 422
    assert problem in refused.text


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"points_earned": 2**64}, "points_earned"),
        ({"amount": "1000000000000"}, "amount"),
        ({"amount": "0.00001"}, "amount"),
        ({"items": [{"product_id": "p1", "quantity": 10**7, "price": "1"}]}, "quantity"),
    ],
)
async def test_events_with_numbers_beyond_their_bounds_get_422_naming_the_field(
    tmp_path: Path, fields: dict[str, Any], field: str
) -> None:
    async with running_node(tmp_path) as running:
        refused = await running.post("/v1/events", order("c1", "e1", **fields))
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["field"].endswith(field)


def test_the_kafka_tagger_dead_letters_points_beyond_64_bits_instead_of_storing_them() -> None:
    topics = TopicNames()
    clock = ManualClock(datetime(2026, 11, 23, tzinfo=UTC))
    core = TaggerCore(Engine(RuleBook.compile([])), topics, clock)
    record = orjson.dumps(order("c1", "e1")).replace(b'"currency"', b'"points_earned":%d,"currency"' % 2**64)
    message = Incoming(topics.events, 0, 7, b"c1", record, timestamp_us=1_795_000_000_000_000)

    result = core.handle(message, lambda customer_id: None)

    assert result.outcome == "invalid"
    assert result.state is None
    assert result.dead_letter is not None
    assert "points_earned" in result.dead_letter.reason
