"""What the end-to-end tests send over HTTP: a value-tier group and orders happening now."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

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
