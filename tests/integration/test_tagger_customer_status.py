"""The customer_status template on the Kafka tagger (real broker), for a shop in Asia/Shanghai: a
customer goes from active to low-active at the shop's midnight a cycle after their last order, by the
tagger's timers, with no event."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.runtime.clock import ManualClock
from services.runtime.definitions import templates
from services.runtime.settings import ShopSettings
from tests.integration.test_tagger import Harness, paid_event, running, summary, worker_settings

pytestmark = pytest.mark.integration

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
async def shop(
    kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Harness]:
    prefix = f"it-status-{uuid.uuid4().hex[:8]}"
    datadir = Path(tmp_path_factory.mktemp("tagger"))
    worker = worker_settings(prefix, kafka_bootstrap, redis_url, datadir, partitions=1)
    settings = worker.model_copy(update={"shop": ShopSettings(timezone="Asia/Shanghai")})
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    status = templates()["customer_status"].render({"cycle": "7"})
    async with running(settings, clock, kafka_bootstrap, *status) as run:
        yield run


async def test_an_active_customer_turns_low_active_at_shanghai_midnight_a_cycle_after_the_last_order(
    shop: Harness,
) -> None:
    today = shop.clock.now().astimezone(SHANGHAI).date()
    last = datetime.combine(today - timedelta(days=6), datetime.min.time(), SHANGHAI) + timedelta(hours=7, minutes=30)
    await shop.send_events(
        paid_event("lin", "99.00", at=last - timedelta(days=10)),
        paid_event("lin", "0.00", at=last),  # 07:30 local, 23:30 UTC the day before: a free order
    )
    # history (dated days before the clock): the first order makes them dormant, the second active
    history = await shop.changes_for("lin", 3)
    assert [change[1:] for change in summary(history)] == [
        ("dormant", "added", "import"),
        ("dormant", "removed", "import"),
        ("active", "added", "import"),
    ]

    flip = datetime.combine(today + timedelta(days=1), datetime.min.time(), SHANGHAI)  # 7 local days on
    shop.clock.set(flip - timedelta(minutes=1))
    await asyncio.sleep(0.5)
    shop.clock.set(flip + timedelta(seconds=1))
    changes = await shop.changes_for("lin", 5)
    assert summary(changes[-2:]) == [
        ("customer_status", "active", "removed", "time"),
        ("customer_status", "low_active", "added", "time"),
    ]
    assert changes[-1]["occurred_at"] == flip.astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert changes[-1]["reason"]["conditions"][0]["observed"] == 1
    assert len(changes) == 5  # nothing flipped a minute before
