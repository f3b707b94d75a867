"""The embedded node counts the shop's local days, from TAGSTREAM_SHOP__TIMEZONE like the Kafka tagger."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from services.embedded.node import EmbeddedNode
from services.runtime.clock import ManualClock
from services.runtime.settings import Settings, ShopSettings
from tests.support.builders import cond, group, paid

SHANGHAI = ZoneInfo("Asia/Shanghai")


async def test_an_embedded_shop_in_shanghai_keeps_a_0730_order_on_its_day_until_local_midnight(tmp_path: Path) -> None:
    morning = datetime(2026, 1, 2, 7, 30, tzinfo=SHANGHAI)  # 23:30 UTC on 01-01
    node = EmbeddedNode(Settings(shop=ShopSettings(timezone="Asia/Shanghai")), tmp_path, ManualClock(morning))
    today = group("activity", [("ordered_today", [cond("days_since_last_order", "eq", 0)])], mode="multi")
    await node.tagger.define({"activity": today}, morning)
    await node.tagger.event(paid(20, when=morning), morning)
    await node.tagger.advance(datetime(2026, 1, 2, 23, 59, tzinfo=SHANGHAI))
    assert await node.readmodel.current_tags("c1") == {"activity": ["ordered_today"]}
    [removed] = await node.tagger.advance(datetime(2026, 1, 3, tzinfo=SHANGHAI) + timedelta(hours=1))
    assert removed.change == "removed"
    assert removed.occurred_at == datetime(2026, 1, 3, tzinfo=SHANGHAI)
