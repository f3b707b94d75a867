"""What the end-to-end tests send over HTTP: a value-tier group, a region and channel group, the
profile templates, and orders happening now."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from services.runtime.definitions import templates

_SPENT = {"metric": "total_spent", "value": 2000}


def value_group(tagging: str = "auto") -> dict[str, Any]:
    """会员贡献价值: high from 2000 spent, low below."""
    return {
        "id": "value",
        "name": "会员贡献价值",
        "mode": "exclusive",
        "tagging": tagging,
        "auto_remove": True,
        "tags": [
            {"id": "high", "name": "高价值", "rule": {"match": "all", "conditions": [_SPENT | {"op": "gte"}]}},
            {"id": "low", "name": "低价值", "rule": {"match": "all", "conditions": [_SPENT | {"op": "lt"}]}},
        ],
    }


def region_group() -> dict[str, Any]:
    """地区: east for 上海 and 杭州, not_east for any other region; omni for a Tmall or JD touch."""
    region = {"metric": "attribute", "name": "region", "value": ["上海", "杭州"]}
    return {
        "id": "region",
        "name": "地区",
        "mode": "multi",
        "tagging": "auto",
        "auto_remove": True,
        "tags": [
            {"id": "east", "name": "华东", "rule": {"conditions": [region | {"op": "in"}]}},
            {"id": "not_east", "name": "非华东", "rule": {"conditions": [region | {"op": "not_in"}]}},
            {
                "id": "omni",
                "name": "全渠道",
                "rule": {"conditions": [{"metric": "sources_any", "op": "in", "value": ["tmall", "jd"]}]},
            },
        ],
    }


def profile_groups() -> list[dict[str, Any]]:
    """The region group and the built-in age_bands and source_channels templates, as API bodies."""
    rendered = [group for name in ("age_bands", "source_channels") for group in templates()[name].render()]
    return [region_group()] + [group.model_dump(mode="json", by_alias=True) for group in rendered]


def order(customer: str, amount: str) -> dict[str, Any]:
    return {
        "type": "order_paid",
        "event_id": uuid.uuid4().hex,
        "customer_id": customer,
        "occurred_at": datetime.now(UTC).isoformat(),
        "order_id": uuid.uuid4().hex,
        "amount": amount,
        "currency": "CNY",
    }
