"""The stored form of a customer's state: compact JSON bytes (what the tagger's table keeps).

Money stays exact (decimal strings); instants are integer microseconds; day buckets are flat
[day, count, ...] lists; the recent-event-id fingerprints are one base64 string.
"""

from __future__ import annotations

from binascii import a2b_base64, b2a_base64
from decimal import Decimal
from typing import Any, Final

import orjson

from services.tagger.engine.aggregates import FINGERPRINT_BYTES, Aggregates, OrderRecord
from services.tagger.engine.evaluator import CustomerState, earliest

FORMAT_VERSION: Final = 1
_ZERO: Final = Decimal(0)


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
                b2a_base64(agg.recent, newline=False).decode(),  # base64.b64encode, less wrapping
                agg.recent_next,
            ],
        ]
    )


def decode(data: bytes) -> CustomerState:
    version, customer_id, seq, clock_us, tags, due, packed = orjson.loads(data)
    if version != FORMAT_VERSION:
        raise ValueError(f"customer state format {version} is not supported (expected {FORMAT_VERSION})")
    state = CustomerState(customer_id, _aggregates(packed))
    state.seq = seq
    state.clock_us = clock_us
    state.tags = {
        group: {tag: (bool(manual), expires) for tag, (manual, expires) in held.items()} for group, held in tags.items()
    }
    state.due = due  # a fresh dict from orjson, owned by nobody else
    state.next_at = earliest(due)
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
    agg.orders = {
        order_id: OrderRecord(
            None if paid is None else Decimal(paid),
            paid_us,
            points,
            _ZERO if refunded == "0" else Decimal(refunded),  # most orders: never refunded
            refund_ids,
        )
        for order_id, (paid, paid_us, points, refunded, refund_ids) in orders.items()
    }
    agg.browse = _buckets(browse)
    agg.click = _buckets(click)
    agg.recent = bytearray(a2b_base64(recent))  # base64.b64decode, less wrapping
    if len(agg.recent) % FINGERPRINT_BYTES:
        raise ValueError(f"recent event fingerprints: {len(agg.recent)} bytes, not a whole number of fingerprints")
    agg.recent_next = recent_next
    return agg


def _flat(buckets: dict[int, int]) -> list[int]:
    return [number for day in sorted(buckets) for number in (day, buckets[day])]


def _buckets(flat: list[int]) -> dict[int, int]:
    return dict(zip(flat[::2], flat[1::2], strict=True))
