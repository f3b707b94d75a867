"""The WeCom adapter against a local fake of WeCom's endpoints (their documented shapes, docs/sync.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from services.runtime.clock import ManualClock
from services.runtime.customers import MemoryCustomers, Profile
from services.sync.ports import Unavailable
from tests.support.sync_kit import T0, change, contact, intent_group, outbound, source_group, wecom_adapter
from tests.support.wecom_fake import WeComFake

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def wecom() -> AsyncIterator[WeComFake]:
    fake = await WeComFake().start()
    yield fake
    await fake.stop()


async def test_missing_corp_tags_are_created_once_and_marked_on_the_contact(wecom: WeComFake) -> None:
    customers, clock = MemoryCustomers(), ManualClock(T0)
    first, second = await contact(customers, "c1"), await contact(customers, "c2", owner="lisi")
    adapter, _ = wecom_adapter(wecom.url, customers, clock)
    intent, source = intent_group(), source_group()
    result = await adapter.apply(
        [
            outbound(change("c1", "intent", "high", 1), intent),
            outbound(change("c1", "source", "douyin", 2), source),
            outbound(change("c2", "intent", "high", 1), intent),
        ]
    )
    await adapter.close()
    assert result.rejected == []
    assert wecom.tag_names("zhangsan", first) == {("购买意向", "高意向"), ("来源渠道", "抖音")}
    assert wecom.tag_names("lisi", second) == {("购买意向", "高意向")}
    assert wecom.calls.count("add_corp_tag") == 2  # 高意向 once for both customers, 抖音 once
    assert sorted(group["group_name"] for group in wecom.groups.values()) == ["来源渠道", "购买意向"]


async def test_a_tag_added_then_removed_within_a_batch_is_only_removed(wecom: WeComFake) -> None:
    customers, clock = MemoryCustomers(), ManualClock(T0)
    external = await contact(customers, "c1")
    adapter, _ = wecom_adapter(wecom.url, customers, clock)
    intent = intent_group()
    await adapter.apply([outbound(change("c1", "intent", "low", 1), intent)])
    result = await adapter.apply(
        [
            outbound(change("c1", "intent", "low", 2, "removed"), intent),
            outbound(change("c1", "intent", "high", 3), intent),
            outbound(change("c1", "intent", "high", 4, "removed"), intent),
        ]
    )
    await adapter.close()
    assert result.rejected == []
    assert wecom.tag_names("zhangsan", external) == set()


async def test_a_token_that_expires_mid_run_is_fetched_again_and_nothing_is_lost(wecom: WeComFake) -> None:
    customers, clock = MemoryCustomers(), ManualClock(T0)
    wecom.expire_token_after_calls = 3
    externals = {f"c{n}": await contact(customers, f"c{n}") for n in range(8)}
    adapter, metrics = wecom_adapter(wecom.url, customers, clock)
    result = await adapter.apply([outbound(change(c, "intent", "high", 1), intent_group()) for c in externals])
    await adapter.close()
    assert result.rejected == []
    assert all(wecom.tag_names("zhangsan", external) == {("购买意向", "高意向")} for external in externals.values())
    assert wecom.tokens_issued >= 3
    assert metrics.errors.labels("wecom", "token_refreshed")._value.get() >= 2


async def test_a_cached_token_is_reused_until_it_expires_by_the_clock(wecom: WeComFake) -> None:
    customers, clock = MemoryCustomers(), ManualClock(T0)
    await contact(customers, "c1")
    adapter, _ = wecom_adapter(wecom.url, customers, clock)
    intent = intent_group()
    await adapter.apply([outbound(change("c1", "intent", "high", 1), intent)])
    await adapter.apply([outbound(change("c1", "intent", "low", 2), intent)])
    assert wecom.calls.count("gettoken") == 1
    wecom.expire_token()
    clock.advance(timedelta(seconds=7200))  # past expires_in: fetched again without waiting for WeCom's 42001
    before = len(wecom.calls)
    await adapter.apply([outbound(change("c1", "intent", "high", 3), intent)])
    await adapter.close()
    assert wecom.calls[before:] == ["gettoken", "mark_tag"]


async def test_a_frequency_limit_answer_is_backed_off_and_retried(wecom: WeComFake) -> None:
    customers, clock = MemoryCustomers(), ManualClock(T0)
    external = await contact(customers, "c1")
    adapter, metrics = wecom_adapter(wecom.url, customers, clock)
    wecom.rate_limited_calls = 3
    result = await adapter.apply([outbound(change("c1", "intent", "high", 1), intent_group())])
    await adapter.close()
    assert result.rejected == []
    assert wecom.tag_names("zhangsan", external) == {("购买意向", "高意向")}
    assert metrics.errors.labels("wecom", "rate_limited")._value.get() == 3


async def test_a_limit_outlasting_every_attempt_leaves_the_batch_undecided(wecom: WeComFake) -> None:
    customers, clock = MemoryCustomers(), ManualClock(T0)
    await contact(customers, "c1")
    adapter, _ = wecom_adapter(wecom.url, customers, clock, attempts=3)
    wecom.rate_limited_calls = 100
    with pytest.raises(Unavailable, match="errcode 45009"):
        await adapter.apply([outbound(change("c1", "intent", "high", 1), intent_group())])
    await adapter.close()


async def test_an_unknown_contact_is_refused_with_its_errcode_and_the_others_are_marked(wecom: WeComFake) -> None:
    customers, clock = MemoryCustomers(), ManualClock(T0)
    good, gone = await contact(customers, "good"), await contact(customers, "gone")
    wecom.unknown_contacts.add(gone)
    adapter, _ = wecom_adapter(wecom.url, customers, clock)
    intent = intent_group()
    result = await adapter.apply(
        [outbound(change("gone", "intent", "high", 4), intent), outbound(change("good", "intent", "high", 1), intent)]
    )
    await adapter.close()
    assert [(r.customer_id, r.seq) for r in result.rejected] == [("gone", 4)]
    assert "errcode 40096" in result.rejected[0].reason
    assert wecom.tag_names("zhangsan", good) == {("购买意向", "高意向")}


async def test_customers_without_a_wecom_contact_are_counted_and_nothing_is_sent(wecom: WeComFake) -> None:
    customers, clock = MemoryCustomers(), ManualClock(T0)
    await customers.set_profile("walk-in", Profile(name="王芳", owner="zhangsan"))  # no external_userid
    adapter, _ = wecom_adapter(wecom.url, customers, clock)
    result = await adapter.apply([outbound(change("walk-in", "intent", "high", 1), intent_group())])
    await adapter.close()
    assert (result.no_contact, result.rejected) == (1, [])
    assert "mark_tag" not in wecom.calls


async def test_a_tag_deleted_by_an_admin_is_created_again(wecom: WeComFake) -> None:
    customers, clock = MemoryCustomers(), ManualClock(T0)
    external = await contact(customers, "c1")
    adapter, _ = wecom_adapter(wecom.url, customers, clock)
    intent = intent_group()
    await adapter.apply([outbound(change("c1", "intent", "high", 1), intent)])
    wecom.groups.clear()  # an admin deleted the group in the WeCom console; the adapter's cache is stale
    wecom.marked.clear()
    result = await adapter.apply([outbound(change("c1", "intent", "high", 3), intent)])
    await adapter.close()
    assert result.rejected == []
    assert wecom.tag_names("zhangsan", external) == {("购买意向", "高意向")}


async def test_wrong_credentials_leave_the_batch_undecided_instead_of_dead_lettering_it(wecom: WeComFake) -> None:
    customers, clock = MemoryCustomers(), ManualClock(T0)
    await contact(customers, "c1")
    adapter, _ = wecom_adapter(wecom.url, customers, clock, wecom_secret="not-the-secret")
    with pytest.raises(Unavailable, match="errcode 40001"):
        await adapter.apply([outbound(change("c1", "intent", "high", 1), intent_group())])
    await adapter.close()
