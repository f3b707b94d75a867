"""The stored form of a customer's state: compact JSON bytes (what the tagger's table keeps).

Money stays exact (decimal strings); instants are integer microseconds; day buckets are flat
[day, count, ...] lists; the recent-event-id fingerprints are one base64 string.
"""

from __future__ import annotations

import base64
from array import array
from decimal import Decimal
from typing import Any

import orjson

from services.tagger.engine.aggregates import Aggregates, OrderRecord
from services.tagger.engine.evaluator import CustomerState

FORMAT_VERSION = 1


def encode(state: CustomerState) -> bytes:
    agg = state.agg
    orders = {
        order_id: [
            None if order.paid is None else str(order.paid),
            order.paid_us,
            order.points,
            str(order.refunded),
            order.refund_ids,
        ]
        for order_id, order in agg.orders.items()
    }
    tags = {
        group: {tag: [int(manual), expires] for tag, (manual, expires) in held.items()}
        for group, held in state.tags.items()
    }
    return orjson.dumps(
        [
            FORMAT_VERSION,
            state.customer_id,
            state.seq,
            state.clock_us,
            tags,
            state.due,
            [
                agg.order_count,
                str(agg.total_spent),
                agg.points_total,
                agg.first_order_us,
                agg.last_order_us,
                agg.last_seen_us,
                agg.max_day,
                sorted(agg.products),
                orders,
                _flat(agg.browse),
                _flat(agg.click),
                base64.b64encode(agg.recent.tobytes()).decode(),
                agg.recent_next,
            ],
        ]
    )


def decode(data: bytes) -> CustomerState:
    version, customer_id, seq, clock_us, tags, due, packed = orjson.loads(data)
    if version != FORMAT_VERSION:
        raise ValueError(f"customer state format {version} is not supported (expected {FORMAT_VERSION})")
    state = CustomerState(customer_id)
    state.seq = seq
    state.clock_us = clock_us
    state.tags = {
        group: {tag: (bool(manual), expires) for tag, (manual, expires) in held.items()} for group, held in tags.items()
    }
    state.due = dict(due)
    state.agg = _aggregates(packed)
    return state


def _aggregates(packed: list[Any]) -> Aggregates:
    (
        order_count,
        total_spent,
        points_total,
        first_order_us,
        last_order_us,
        last_seen_us,
        max_day,
        products,
        orders,
        browse,
        click,
        recent,
        recent_next,
    ) = packed
    agg = Aggregates()
    agg.order_count = order_count
    agg.total_spent = Decimal(total_spent)
    agg.points_total = points_total
    agg.first_order_us = first_order_us
    agg.last_order_us = last_order_us
    agg.last_seen_us = last_seen_us
    agg.max_day = max_day
    agg.products = set(products)
    for order_id, (paid, paid_us, points, refunded, refund_ids) in orders.items():
        order = agg.orders[order_id] = OrderRecord()
        order.paid = None if paid is None else Decimal(paid)
        order.paid_us = paid_us
        order.points = points
        order.refunded = Decimal(refunded)
        order.refund_ids = refund_ids
    agg.browse = _buckets(browse)
    agg.click = _buckets(click)
    agg.recent = array("Q", base64.b64decode(recent))
    agg.recent_next = recent_next
    return agg


def _flat(buckets: dict[int, int]) -> list[int]:
    return [number for day in sorted(buckets) for number in (day, buckets[day])]


def _buckets(flat: list[int]) -> dict[int, int]:
    return dict(zip(flat[::2], flat[1::2], strict=True))
