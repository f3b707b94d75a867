"""`tagstream sync resync`: the WeCom contacts end up holding exactly the read model's tags (real Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from services.runtime.clock import ManualClock
from services.runtime.customers import RedisCustomers
from services.runtime.readmodel import ReadModel
from services.sync.resync import ResyncRefused, resync
from services.sync.sink import RedisAppliedSeqs
from services.tagger.marker import Marker
from services.tagger.projector import Projector
from tests.support.sync_kit import T0, change, contact, intent_group, outbound, source_group, wecom_adapter
from tests.support.wecom_fake import WeComFake

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture
async def wecom() -> AsyncIterator[WeComFake]:
    fake = await WeComFake().start()
    yield fake
    await fake.stop()


async def test_a_resync_replaces_hand_edited_wecom_tags_with_the_read_models_and_skips_disabled_groups(
    redis_client: aioredis.Redis, redis_prefix: str, wecom: WeComFake
) -> None:
    customers = RedisCustomers(redis_client, prefix=redis_prefix)
    projector = Projector(redis_client, key_prefix=redis_prefix)
    await Marker(redis_client, key_prefix=redis_prefix).begin({}, T0, reason="a new read model")
    externals = {customer: await contact(customers, customer) for customer in ("c1", "c2", "c3")}
    await projector.apply_many(
        [
            change("c1", "intent", "low", 1),
            change("c1", "intent", "low", 2, "removed"),
            change("c1", "intent", "high", 3),
            change("c2", "source", "douyin", 1),
            change("c2", "intent", "low", 2),
            change("c3", "intent", "low", 1),
            change("c3", "intent", "low", 2, "removed"),
        ]
    )
    clock = ManualClock(T0)
    adapter, _ = wecom_adapter(wecom.url, customers, clock)
    # someone marked 低意向 on c1 and c3 by hand in WeCom, and the source group is switched off in tagstream
    seed = [change(c, "intent", "low", 9) for c in ("c1", "c3")]
    await adapter.apply([outbound(item, intent_group()) for item in seed])
    groups = {"intent": intent_group(), "source": source_group().model_copy(update={"disabled": True})}
    applied = RedisAppliedSeqs(redis_client, key_prefix=redis_prefix, sink="test")
    report = await resync(
        redis_client, key_prefix=redis_prefix, groups=groups, adapter=adapter, applied=applied, batch=2
    )
    await adapter.close()
    assert (report.customers, report.rejected) == (3, 0)
    assert wecom.tag_names("zhangsan", externals["c1"]) == {("购买意向", "高意向")}
    assert wecom.tag_names("zhangsan", externals["c2"]) == {("购买意向", "低意向")}  # not 抖音: disabled
    assert wecom.tag_names("zhangsan", externals["c3"]) == set()
    assert await applied.get(["c1", "c2", "c3"]) == {"c1": 3, "c2": 2, "c3": 2}


async def test_a_resync_refuses_a_read_model_that_is_not_whole(
    redis_client: aioredis.Redis, redis_prefix: str, wecom: WeComFake
) -> None:
    customers = RedisCustomers(redis_client, prefix=redis_prefix)
    adapter, _ = wecom_adapter(wecom.url, customers, ManualClock(T0))
    with pytest.raises(ResyncRefused, match="not whole"):
        await resync(
            redis_client,
            key_prefix=redis_prefix,
            groups={"intent": intent_group()},
            adapter=adapter,
            applied=RedisAppliedSeqs(redis_client, key_prefix=redis_prefix, sink="test"),
            batch=10,
        )
    await adapter.close()
    assert wecom.calls == []


async def test_customer_ids_with_braces_and_glob_characters_are_found_as_written(
    redis_client: aioredis.Redis, redis_prefix: str
) -> None:
    projector = Projector(redis_client, key_prefix=redis_prefix)
    odd = ["顾客*1", "a{b}c", "x[1]"]
    await projector.apply_many([change(customer, "intent", "low", 1) for customer in odd])
    await projector.record_activity("only-seen", None, T0)  # activity alone: no change to sync
    reads = ReadModel(redis_client, key_prefix=redis_prefix)
    assert sorted([c async for c in reads.customers()]) == sorted(odd)
