"""Behaviour scores in the Kafka tagger, on the real broker: points per link, resent events and refunds,
and a decaying score's tier dropping at the microsecond the engine solved, from the stored state."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Context, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from services.runtime.clock import ManualClock
from services.runtime.settings import ShopSettings
from services.tagger.app import build_app
from tests.integration.test_tagger import Harness, paid_event, summary, worker_settings
from tests.support.builders import group

pytestmark = pytest.mark.integration

SHANGHAI = ZoneInfo("Asia/Shanghai")
HALF_LIFE = timedelta(days=7)


def tier(value: int) -> list[dict[str, Any]]:
    return [{"metric": "score", "name": "intent", "op": "gte", "value": value}]


INTENT = group(
    "intent",
    [("high", tier(10)), ("medium", tier(5)), ("low", tier(1))],
    scores=[
        {
            "id": "intent",
            "points": {"click": 1, "order": 10, "refund": -10},
            "links": {"radar:": 3},
            "decay": {"half_life": "7d"},
        }
    ],
)


def click(customer: str, target: str, *, at: datetime, event_id: str | None = None) -> dict[str, Any]:
    return {
        "type": "click",
        "event_id": event_id or f"e-{uuid.uuid4().hex}",
        "customer_id": customer,
        "occurred_at": at.isoformat(),
        "target": target,
    }


@pytest.fixture(scope="module")
async def shanghai(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Harness]:
    prefix = f"it-score-{uuid.uuid4().hex[:8]}"
    datadir = Path(tmp_path_factory.mktemp("tagger"))
    worker = worker_settings(prefix, kafka_bootstrap, redis_url, datadir, partitions=1)
    settings = worker.model_copy(update={"shop": ShopSettings(timezone="Asia/Shanghai")})
    yesterday = datetime.now(SHANGHAI).date() - timedelta(days=1)
    clock = ManualClock(datetime(yesterday.year, yesterday.month, yesterday.day, 10, 0, tzinfo=SHANGHAI))
    tagger = build_app(settings, clock=clock)
    await tagger.create_topics()
    run = Harness(tagger, clock, kafka_bootstrap)
    await run.publish(INTENT)
    await asyncio.wait_for(tagger.app.start(), 60)
    deadline = time.monotonic() + 60
    while not tagger.ready:
        assert time.monotonic() < deadline, "tagger did not become ready"
        await asyncio.sleep(0.1)
    yield run
    await asyncio.wait_for(tagger.app.stop(), 60)


async def test_a_decaying_score_tiers_a_lead_and_drops_at_the_solved_microsecond(shanghai: Harness) -> None:
    morning = shanghai.clock.now()
    radar = click("lin", "radar:autumn-lookbook", at=morning, event_id="e-radar-1")
    await shanghai.send_events(paid_event("lin", "0", order="o-free", at=morning))  # a free order: 10 points
    await shanghai.send_events(click("lin", "banner:sale", at=morning), radar, radar)  # 1 + 3, the resend 0
    [added] = await shanghai.changes_for("lin", 1)
    assert summary([added]) == [("intent", "high", "added", "rule")]

    # 14 points from the end of the Shanghai day: "high" (gte 10) holds while 14 * 2 ** (-x / 7d) >= 10
    day_ends = datetime.combine(morning.astimezone(SHANGHAI).date() + timedelta(days=1), datetime.min.time(), SHANGHAI)
    wide = Context(prec=50)
    elapsed = wide.multiply(Decimal(HALF_LIFE // timedelta(microseconds=1)), wide.log10(Decimal("1.4")))
    elapsed = wide.divide(elapsed, wide.log10(Decimal(2))).to_integral_value(rounding=ROUND_CEILING)
    flip = day_ends.astimezone(UTC) + timedelta(microseconds=int(elapsed))
    shanghai.clock.set(flip - timedelta(seconds=1))
    await asyncio.sleep(1)
    shanghai.clock.set(flip + timedelta(seconds=5))
    changes = await shanghai.changes_for("lin", 3)
    assert summary(changes[1:]) == [("intent", "high", "removed", "time"), ("intent", "medium", "added", "time")]
    assert {datetime.fromisoformat(change["occurred_at"]) for change in changes[1:]} == {flip}
    [condition] = changes[2]["reason"]["conditions"]
    assert (condition["metric"], condition["name"], condition["observed"]) == ("score", "intent", "9.9999")

    refund = {
        "type": "order_refunded",
        "event_id": f"e-{uuid.uuid4().hex}",
        "customer_id": "lin",
        "occurred_at": shanghai.clock.now().isoformat(),
        "order_id": "o-free",
        "amount": "1",
    }
    await shanghai.send_events(refund)  # takes its 10 points back: about 0 left, under every tier
    changes = await shanghai.changes_for("lin", 4)
    assert summary(changes[3:]) == [("intent", "medium", "removed", "rule")]
    assert len(changes) == 4
