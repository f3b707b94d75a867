"""Two of three brokers down (RF 3, min.insync 2): no event can be replicated, so ingest acknowledges
none (every answer 503, or no answer at all) and says it is not ready; once the brokers are back the
whole shop heals on its own: every acknowledged event on the topic, the tag-change stream and the read
model equal to `tagstream replay`, every push owed sent once (tests/support/audit.py)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest

from tests.support import cluster
from tests.support.shop import close_shop, open_shop
from tests.support.stack import OPERATOR
from tests.support.traffic import HttpLoad, live_events

pytestmark = pytest.mark.asyncio(loop_scope="session")

PARTITIONS = 6
OUTAGE_S = 20.0
HEAL_S = 120.0
"""From both brokers started again to ingest and the tagger ready."""


async def test_two_of_three_brokers_down_acknowledge_no_event_and_the_cluster_heals_losing_nothing(
    cluster_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    shop = await open_shop(
        name="ft-quorum",
        bootstrap=cluster_bootstrap,
        redis_url=redis_url,
        workdir=tmp_path,
        partitions=PARTITIONS,
        replication_factor=3,
        group_instance_id="t0",
    )
    lines = list(live_events(3_000, 300, seed=37, now=datetime.now(UTC)))
    before, during, after = lines[:1_000], lines[1_000:2_000], lines[2_000:]
    outage = HttpLoad(shop.stack.ingest.url, OPERATOR)
    down: list[int] = []
    try:
        await shop.load.run(before, batches_per_second=10.0)
        coordinator = await cluster.group_coordinator(cluster_bootstrap, shop.stack.prefix)
        down = [coordinator, next(node for node in (1, 2, 3) if node != coordinator)]
        for node in down:
            await asyncio.to_thread(cluster.kill_node, node)
        # readiness sampled through the outage's second half, when sends have failed for seconds: brokers
        # without their controller quorum serve stale metadata that looks writable, which must not flip it
        sampling = asyncio.create_task(_sample_ready(shop.stack.ingest.url, after_s=OUTAGE_S / 2))
        await outage.run(during, batches_per_second=len(during) / outage.batch / OUTAGE_S)
        sampling.cancel()
        samples = await sampling
        samples.append(await _ready(shop.stack.ingest.url))
        healing = time.monotonic()
        for node in down:
            await asyncio.to_thread(cluster.start_node, node)
        down = []
        await asyncio.gather(shop.stack.ingest.wait_ready(HEAL_S), shop.stack.tagger.wait_ready(HEAL_S))
        healed_in = time.monotonic() - healing
        await shop.load.run(after, batches_per_second=10.0)
        await shop.caught_up()
        findings = await shop.audit(settle_s=120.0)
    finally:
        for node in down:
            await asyncio.to_thread(cluster.start_node, node)
        await outage.close()
        await close_shop(shop)

    print(
        f"\n2 of 3 brokers down for {OUTAGE_S:.0f}s: outage traffic {outage.describe()}; ingest and tagger "
        f"ready {healed_in:.1f}s after the restarts began; {findings.summary()}"
    )
    assert not outage.accepted, f"{len(outage.accepted)} events acknowledged that no quorum could replicate"
    assert set(outage.statuses) <= {0, 503}, outage.statuses
    assert len(samples) > 5
    assert not any(samples), f"ingest said ready in {sum(samples)} of {len(samples)} samples during the outage"
    assert shop.load.accepted == {orjson.loads(line)["event_id"] for line in before + after}
    assert findings.problems() == []
    assert findings.redelivered == 0


async def _sample_ready(url: str, *, after_s: float) -> list[bool]:
    """/readyz every half second from `after_s` on, until cancelled: the samples taken."""
    samples: list[bool] = []
    try:
        await asyncio.sleep(after_s)
        while True:
            samples.append(await _ready(url))
            await asyncio.sleep(0.5)
    except asyncio.CancelledError:
        return samples


async def _ready(url: str) -> bool:
    async with httpx.AsyncClient(timeout=5.0) as client:
        try:
            return (await client.get(f"{url}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False
