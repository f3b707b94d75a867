"""The stored form of a customer's state: compact JSON bytes (what the tagger's table keeps).

Money stays exact (decimal strings); instants are integer microseconds; day buckets are flat
[day, count, ...] lists; the browse/click event-id digests are a flat [day, base64, ...] list.
Format 1 (before the event digests were kept per day, and before manual removals stuck) still
decodes: its last 32 digests, which belong to no day, are dropped.

Two optional trailing sections follow the blocked tags, each written only when present, so a state
with neither has the bytes it always had: at index 8 a customer's profile attributes and sources
(`profile_codec.py`), at index 9 the behaviour scores when the definitions have them, [latest scored
day, {score key: [day, points, ...]}]. A state with scores but no profile has null at index 8. A
missing or null section decodes as None (`agg.profile`, `agg.scores`).
"""

from __future__ import annotations

from binascii import a2b_base64, b2a_base64
from decimal import Decimal
from typing import Any, Final

import orjson

from services.engine.aggregates import EVENT_DIGEST_BYTES, Aggregates, OrderRecord
from services.engine.profile_codec import pack_profile, unpack_profile
from services.engine.score_state import ScoreState
from services.engine.state import CustomerState, earliest

FORMAT_VERSION: Final = 2
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
    stored: list[Any] = [
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
            [
                item
                for day in sorted(agg.seen)
                # b2a_base64: base64.b64encode, less wrapping
                for item in (day, b2a_base64(agg.seen[day], newline=False).decode())
            ],
        ],
        None if not state.blocked else {group: sorted(tags) for group, tags in sorted(state.blocked.items())},
    ]
    # Trailing sections, each only when present, so that other states' bytes are unchanged: the
    # profile (index 8), then the scores (index 9, with a null profile before them when there is none).
    if agg.profile is not None or agg.scores is not None:
        stored.append(None if agg.profile is None else pack_profile(agg.profile))
    if agg.scores is not None:
        stored.append([agg.scores.top_day, {key: _flat(days) for key, days in sorted(agg.scores.days.items())}])
    return orjson.dumps(stored)


def decode(data: bytes) -> CustomerState:
    stored = orjson.loads(data)
    version = stored[0]
    if version == 1:
        stored[6][11:] = [[]]  # the 32 last digests and their ring position: no day to file them under
        stored.append(None)
    elif version != FORMAT_VERSION:
        raise ValueError(f"customer state format {version} is not supported (expected {FORMAT_VERSION})")
    scores = stored[9] if len(stored) > 9 else None
    profile = stored[8] if len(stored) > 8 else None
    _, customer_id, seq, clock_us, tags, due, packed, blocked = stored[:8]
    state = CustomerState(customer_id, _aggregates(packed))
    if profile is not None:
        state.agg.profile = unpack_profile(profile)
    if scores is not None:
        top_day, days = scores
        state.agg.scores = ScoreState({key: _buckets(flat) for key, flat in days.items()}, top_day)
    if blocked:
        state.blocked = {group: set(tag_ids) for group, tag_ids in blocked.items()}
    state.seq = seq
    state.clock_us = clock_us
    state.tags = {
        group: {tag: (bool(manual), expires) for tag, (manual, expires) in held.items()} for group, held in tags.items()
    }
    state.due = due  # a fresh dict from orjson, owned by nobody else
    state.next_at = earliest(due)
    return state


def peek_schedule(data: bytes) -> tuple[str, int | None]:
    """A stored state's customer id and earliest due instant (`decode(data).next_at`) without building
    the state: what a worker's index needs of every customer at recovery."""
    stored = orjson.loads(data)
    version = stored[0]
    if version != 1 and version != FORMAT_VERSION:
        raise ValueError(f"customer state format {version} is not supported (expected {FORMAT_VERSION})")
    customer_id: str = stored[1]
    due: dict[str, int] = stored[5]
    return customer_id, earliest(due)


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
        seen,
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
    for day, text in zip(seen[::2], seen[1::2], strict=True):
        prints = agg.seen[day] = bytearray(a2b_base64(text))  # base64.b64decode, less wrapping
        if len(prints) % EVENT_DIGEST_BYTES:
            raise ValueError(f"event digests of day {day}: {len(prints)} bytes, not a whole number of them")
    return agg


def _flat(buckets: dict[int, int]) -> list[int]:
    return [number for day in sorted(buckets) for number in (day, buckets[day])]


def _buckets(flat: list[int]) -> dict[int, int]:
    return dict(zip(flat[::2], flat[1::2], strict=True))
