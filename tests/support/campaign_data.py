"""A campaign and its shop, as data: shared by the unit, integration and end-to-end campaign tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")

SEGMENTS: dict[str, Any] = {
    "id": "segment",
    "name": "运营分群",
    "mode": "multi",
    "tagging": "manual",
    "tags": [
        {"id": "churn_risk", "name": "可能流失"},
        {"id": "lapsed", "name": "沉睡"},
        {"id": "staff", "name": "员工"},
    ],
}

NO_PLAYBOOKS = "templates: {}\nplaybooks: []\n"

CAMPAIGN: dict[str, Any] = {
    "id": "winback-dec",
    "audience": {"any_of": ["segment/churn_risk", "segment/lapsed"], "none_of": ["segment/staff"]},
    "templates": {"miss-you": "${name|您好}，好久不见！", "last-call": "${name|您好}，优惠券即将过期"},
    "holdout": "10%",
    "steps": [
        {"channel": "coupon", "coupon": "WB-30"},
        {"channel": "push", "template": "miss-you"},
        {"channel": "sms", "template": "last-call", "delay": "3d", "cancel_if": ["customer_returned"]},
    ],
}


def customers(count: int) -> list[str]:
    return [f"沪-{n:05d}" for n in range(count)]


def audiences(ids: list[str]) -> dict[str, list[str]]:
    """Two overlapping audiences (a third of the customers hold both) and a few staff excluded."""
    third = len(ids) // 3
    return {
        "churn_risk": ids[: 2 * third],
        "lapsed": ids[third:],
        "staff": ids[:: max(1, len(ids) // 10)][:5],
    }


def order(customer: str, when: datetime, number: int = 0) -> dict[str, Any]:
    return {
        "type": "order_paid",
        "event_id": f"o-{customer}-{number}",
        "customer_id": customer,
        "occurred_at": when.astimezone(SHANGHAI).isoformat(),
        "order_id": f"o-{customer}-{number}",
        "amount": "0",  # a free order is an order: the customer came back
        "currency": "CNY",
    }
