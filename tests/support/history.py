"""A shop's last quarter as a JSON-lines file, and the rules and playbooks it would wrongly trigger.

Shaped like a real export: the generated shop's browsing, orders and refunds over 91 days up to
now, with free (0-amount) orders, resent lines and times written in Asia/Shanghai. Imported as live
events, it would welcome repeat buyers and send win-back messages to customers who merely ordered
weeks ago; imported as history, it must message no one.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from schemas.events import OrderPaid, event_adapter
from services.embedded.shop import Shop

SHANGHAI = ZoneInfo("Asia/Shanghai")

_ORDERS = {"metric": "order_count"}
GROUPS: list[dict[str, Any]] = [
    {
        "id": "lifecycle",
        "name": "生命周期",
        "mode": "exclusive",
        "tagging": "auto",
        "auto_remove": True,
        "tags": [
            {"id": "new", "name": "新客", "rule": {"conditions": [{"metric": "order_count", "op": "eq", "value": 1}]}},
            {
                "id": "repeat",
                "name": "回头客",
                "rule": {"conditions": [{"metric": "order_count", "op": "gte", "value": 2}]},
            },
        ],
    },
    {
        "id": "churn",
        "name": "流失风险",
        "mode": "exclusive",
        "tagging": "auto",
        "auto_remove": True,
        "tags": [
            {
                "id": "likely",
                "name": "可能流失",
                "rule": {
                    "conditions": [
                        {"metric": "order_count", "op": "gte", "value": 1},
                        {"metric": "days_since_last_order", "op": "gte", "value": 21},
                    ]
                },
            }
        ],
    },
]

PLAYBOOKS = """
templates:
  welcome: "Welcome ${name|to our shop}, here is a gift for your first order."
  come-back: "Hi ${name|there}, we miss you."
playbooks:
  - id: welcome
    trigger: {group: lifecycle, tag: new, on: added}
    steps:
      - {channel: push, template: welcome}
  - id: winback
    trigger: {group: churn, tag: likely, on: added}
    steps:
      - {channel: push, template: come-back}
"""


def write_quarter(path: Path, *, customers: int, end: datetime, seed: int = 11) -> list[str]:
    """The quarter before `end` as JSON lines; returns its customer ids (those who have events)."""
    shop = Shop(customers=customers, start=end - timedelta(days=91), days=91, seed=seed)
    dump = event_adapter().dump_python
    lines: list[bytes] = []
    who: set[str] = set()
    for number, event in enumerate(shop.events()):
        if event.occurred_at > end - timedelta(minutes=1):
            continue
        document = dump(event, mode="json")
        document["occurred_at"] = event.occurred_at.astimezone(SHANGHAI).isoformat()
        if isinstance(event, OrderPaid) and number % 7 == 0:
            document["amount"] = "0"  # paid in full with a coupon or points
            document["items"] = [item | {"price": "0"} for item in document["items"]]
        line = orjson.dumps(document)
        lines.append(line)
        if number % 40 == 0:
            lines.append(line)  # the export resent this one
        who.add(event.customer_id)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return sorted(who)


def live_order(customer: str, amount: str = "88.00") -> dict[str, Any]:
    return {
        "type": "order_paid",
        "event_id": uuid.uuid4().hex,
        "customer_id": customer,
        "occurred_at": datetime.now(UTC).astimezone(SHANGHAI).isoformat(),
        "order_id": uuid.uuid4().hex,
        "amount": amount,
        "currency": "CNY",
        "items": [{"product_id": "p001", "quantity": 1, "price": amount}],
    }


def repeat_buyer(path: Path) -> str:
    """A customer with at least two paid orders in the file: a live order must not welcome them."""
    orders: dict[str, int] = {}
    for line in path.read_bytes().splitlines():
        document = orjson.loads(line)
        if document["type"] == "order_paid":
            orders[document["customer_id"]] = orders.get(document["customer_id"], 0) + 1
    return min(customer for customer, count in orders.items() if count >= 3)
