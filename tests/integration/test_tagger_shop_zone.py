"""The Kafka tagger counts the shop's local days (TAGSTREAM_SHOP__TIMEZONE), on the real broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.runtime.clock import ManualClock
from services.runtime.settings import ShopSettings
from tests.integration.test_tagger import Harness, paid_event, running, summary, worker_settings
from tests.support.builders import cond, group

pytestmark = pytest.mark.integration

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
async def shanghai(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Harness]:
    prefix = f"it-zone-{uuid.uuid4().hex[:8]}"
    datadir = Path(tmp_path_factory.mktemp("tagger"))
    worker = worker_settings(prefix, kafka_bootstrap, redis_url, datadir, partitions=1)
    settings = worker.model_copy(update={"shop": ShopSettings(timezone="Asia/Shanghai")})
    # 07:30 yesterday in Shanghai: 23:30 UTC the day before that
    yesterday = datetime.now(SHANGHAI).date() - timedelta(days=1)
    clock = ManualClock(datetime(yesterday.year, yesterday.month, yesterday.day, 7, 30, tzinfo=SHANGHAI))
    today = group("activity", [("ordered_today", [cond("days_since_last_order", "eq", 0)])], mode="multi")
    async with running(settings, clock, kafka_bootstrap, today) as run:
        yield run


async def test_a_0730_order_in_shanghai_is_of_that_day_until_local_midnight(shanghai: Harness) -> None:
    morning = shanghai.clock.now()
    await shanghai.send_events(paid_event("mei", "20", at=morning))
    [added] = await shanghai.changes_for("mei", 1)
    assert summary([added]) == [("activity", "ordered_today", "added", "rule")]
    local_midnight = datetime.combine(
        morning.astimezone(SHANGHAI).date() + timedelta(days=1), datetime.min.time(), SHANGHAI
    )
    shanghai.clock.set(local_midnight - timedelta(minutes=1))  # 15:59 UTC: a UTC shop flipped at 00:00 UTC
    await asyncio.sleep(0.5)
    shanghai.clock.set(local_midnight + timedelta(seconds=1))
    changes = await shanghai.changes_for("mei", 2)
    assert summary(changes)[-1] == ("activity", "ordered_today", "removed", "time")
    assert changes[-1]["occurred_at"] == local_midnight.astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert len(changes) == 2  # nothing flipped at 15:59 UTC or at UTC midnight before it
