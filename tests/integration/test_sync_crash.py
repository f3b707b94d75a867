"""`tagstream sync` killed with SIGKILL mid-stream loses no change, and what it repeats is harmless.

The sink runs as a child process against the local WeCom fake; each customer's tag moves back and
forth through an exclusive group, so a change lost or applied out of order would leave a wrong tag.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from schemas.tags import TagChanged
from services.runtime.customers import RedisCustomers
from services.runtime.definitions_feed import definition_record
from services.runtime.kafka import ensure_topics
from services.runtime.redis import redis_client
from services.runtime.settings import KafkaSettings, RedisSettings
from tests.support.kafka_io import TopicReader, produce
from tests.support.netprobe import free_port
from tests.support.notifier_kit import eventually, record
from tests.support.processes import SyncProcess, notifier_environment
from tests.support.sync_kit import change, contact, intent_group
from tests.support.wecom_fake import CORP_ID, SECRET, WeComFake

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

CUSTOMERS = 24
MOVES = 6


def moves(customer: str) -> tuple[list[TagChanged], str | None]:
    """low, high, low, ... each move a removal then an addition; returns the changes and the last tag held."""
    changes: list[TagChanged] = []
    held: str | None = None
    for move in range(MOVES):
        tag = "low" if move % 2 == 0 else "high"
        if held is not None:
            changes.append(change(customer, "intent", held, len(changes) + 1, "removed"))
        changes.append(change(customer, "intent", tag, len(changes) + 1))
        held = tag
    return changes, held


async def test_a_sigkilled_sink_resumes_where_the_external_system_acknowledged(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    topics = {"tag_changes": f"sk-{run}.tag-changes", "definitions": f"sk-{run}.tag-definitions"}
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, partitions=2, replication_factor=1)
    await ensure_topics(kafka, list(topics.values()), compacted=[topics["definitions"]])
    await produce(kafka_bootstrap, topics["definitions"], [(*definition_record(intent_group()), None)])
    redis = redis_client(RedisSettings(url=redis_url))
    prefix = f"sk-{run}:"
    customers = RedisCustomers(redis, prefix=prefix)
    wecom = await WeComFake(mark_delay_s=0.02, expire_token_after_calls=40).start()
    expected: dict[str, str] = {}
    changes: list[TagChanged] = []
    for n in range(CUSTOMERS):
        customer = f"顾客-{n}"
        external = await contact(customers, customer)
        stream, held = moves(customer)
        changes.extend(stream)
        assert held is not None
        expected[external] = "高意向" if held == "high" else "低意向"
    env = notifier_environment(
        {
            "KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
            "KAFKA__PARTITIONS": "2",
            "KAFKA__REPLICATION_FACTOR": "1",
            "REDIS__URL": redis_url,
            "REDIS__KEY_PREFIX": prefix,
            "TOPICS__TAG_CHANGES": topics["tag_changes"],
            "TOPICS__TAG_DEFINITIONS": topics["definitions"],
            "TOPICS__SYNC_DLQ": f"sk-{run}.sync.dlq",
            "SYNC__ADAPTER": "wecom",
            "SYNC__WECOM_BASE_URL": wecom.url,
            "SYNC__WECOM_CORP_ID": CORP_ID,
            "SYNC__WECOM_SECRET": SECRET,
            "SYNC__GROUP_ID": f"sk-{run}",
            "SYNC__WEB_PORT": str(free_port()),
            "SYNC__BATCH": "10",
            "SYNC__BACKOFF_BASE_S": "0.01",
            "SYNC__RETRY_PAUSE_S": "0.2",
        }
    )

    def in_step() -> bool:
        held = {external: wecom.tag_names("zhangsan", external) for external in expected}
        return all(held[external] == {("购买意向", tag)} for external, tag in expected.items())

    sink = SyncProcess(env, tmp_path / "sync.log")
    try:
        sink.start()
        await sink.wait_ready()
        await produce(kafka_bootstrap, topics["tag_changes"], [record(c) for c in changes])
        await eventually(lambda: wecom.calls.count("mark_tag") >= 30, timeout=120, what="the sink half-way")
        sink.kill()
        assert not in_step(), "the sink finished before the kill: the test proves nothing"
        sink = SyncProcess(env, tmp_path / "sync-after.log")
        sink.start()
        await sink.wait_ready()
        await eventually(in_step, timeout=180, what="every contact holding its last tag")
        assert await asyncio.to_thread(sink.stop) == 0  # the WeCom fake answers on this loop meanwhile
        async with TopicReader(kafka_bootstrap, f"sk-{run}.sync.dlq") as reader:
            assert await reader.drain() == []
    finally:
        sink.stop()
        await wecom.stop()
        await redis.aclose()
