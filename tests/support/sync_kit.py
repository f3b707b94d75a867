"""What the tag sync tests share: groups as a shop names them, changes, and adapters on the local fakes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry

from schemas.tags import TagChanged, TagGroup
from schemas.topics import TopicNames
from services.runtime.clock import ManualClock
from services.runtime.customers import CustomerStore, Profile
from services.runtime.settings import KafkaSettings, RedisSettings, Settings, SyncSettings
from services.sync.adapters import build_adapter
from services.sync.metrics import SyncMetrics
from services.sync.ports import Outbound
from tests.support.netprobe import free_port
from tests.support.notifier_kit import tag_changed
from tests.support.wecom_fake import CORP_ID, SECRET

T0 = datetime(2026, 11, 23, 16, 5, tzinfo=UTC)  # 00:05 on the 24th in Shanghai
SIGNING_SECRET = "sync-test-signing-secret-0123456789abcdef"


def intent_group(*, disabled: bool = False) -> TagGroup:
    return TagGroup.model_validate(
        {
            "id": "intent",
            "name": "购买意向",
            "mode": "exclusive",
            "tagging": "manual",
            "disabled": disabled,
            "tags": [{"id": "high", "name": "高意向"}, {"id": "low", "name": "低意向"}],
        }
    )


def source_group() -> TagGroup:
    return TagGroup.model_validate(
        {
            "id": "source",
            "name": "来源渠道",
            "mode": "multi",
            "tagging": "manual",
            "tags": [{"id": "douyin", "name": "抖音"}, {"id": "store", "name": "门店"}],
        }
    )


def outbound(change: TagChanged, group: TagGroup) -> Outbound:
    name = next(tag.name for tag in group.tags if tag.id == change.tag_id)
    return Outbound(change, group, name)


def change(customer: str, group: str, tag: str, seq: int, kind: str = "added") -> TagChanged:
    return tag_changed(customer, group, tag, T0, seq=seq, change=kind)


async def contact(customers: CustomerStore, customer: str, *, owner: str = "zhangsan") -> str:
    """Make the customer a WeCom external contact of `owner`; returns its external_userid."""
    external = f"wm{uuid.uuid5(uuid.NAMESPACE_OID, customer).hex}"
    await customers.set_profile(customer, Profile(name="李雷", owner=owner, external_userid=external))
    return external


def wecom_settings(url: str, **extra: Any) -> SyncSettings:
    options: dict[str, Any] = {
        "adapter": "wecom",
        "wecom_base_url": url,
        "wecom_corp_id": CORP_ID,
        "wecom_secret": SECRET,
        "backoff_base_s": 0.01,
        "backoff_cap_s": 0.05,
        "retry_pause_s": 0.2,
        "web_port": free_port(),
        "group_id": f"sync-{uuid.uuid4().hex[:8]}",
    }
    options.update(extra)
    return SyncSettings(**options)


def webhook_settings(url: str, **extra: Any) -> SyncSettings:
    return wecom_settings(url, adapter="webhook", webhook_url=url, signing_secret=SIGNING_SECRET, **extra)


def wecom_adapter(url: str, customers: CustomerStore, clock: ManualClock, **extra: Any) -> Any:
    metrics = SyncMetrics(CollectorRegistry(), "wecom")
    return build_adapter(wecom_settings(url, **extra), customers, clock, metrics), metrics


def sync_service_settings(bootstrap: str, redis_url: str, sync: SyncSettings) -> Settings:
    run = uuid.uuid4().hex[:8]
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, partitions=2, replication_factor=1),
        redis=RedisSettings(url=redis_url, key_prefix=f"sy-{run}:"),
        topics=TopicNames(
            tag_changes=f"sy-{run}.tag-changes",
            tag_definitions=f"sy-{run}.tag-definitions",
            sync_dlq=f"sy-{run}.sync.dlq",
        ),
        sync=sync,
    )
