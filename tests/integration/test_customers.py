"""Consent and profiles in the real Redis, and the in-memory store held to the same behaviour."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from services.runtime.customers import CustomerStore, MemoryCustomers, Profile, RedisCustomers, allows

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture(params=["redis", "memory"])
def store(request: pytest.FixtureRequest, redis_client: aioredis.Redis, redis_prefix: str) -> CustomerStore:
    if request.param == "memory":
        return MemoryCustomers()
    return RedisCustomers(redis_client, prefix=redis_prefix)


async def test_an_opt_out_is_per_channel_and_undone_by_opting_in(store: CustomerStore) -> None:
    await store.opt_out("c1", "sms")
    refused = await store.opted_out("c1")
    assert refused == {"sms"}
    assert not allows(refused, "sms")
    assert allows(refused, "push")
    await store.opt_in("c1", "sms")
    assert await store.opted_out("c1") == frozenset()


async def test_opting_out_of_everything_refuses_every_channel_until_opted_back_in(store: CustomerStore) -> None:
    await store.opt_out("c2", "push")
    await store.opt_out("c2", "*")
    refused = await store.opted_out("c2")
    assert not allows(refused, "push")
    assert not allows(refused, "coupon")
    await store.opt_in("c2", "*")
    assert await store.opted_out("c2") == frozenset()


async def test_a_profile_is_replaced_whole_and_unknown_customers_have_an_empty_one(store: CustomerStore) -> None:
    await store.set_profile("c3", Profile(name="Li Lei", phone="+86 138 0000 0000", timezone="Asia/Shanghai"))
    await store.set_profile("c3", Profile(name="Li Lei", timezone="Europe/Berlin"))
    assert await store.profile("c3") == Profile(name="Li Lei", timezone="Europe/Berlin")
    assert await store.profile("nobody") == Profile()
