"""The demo's generated shop: deterministic, time-ordered, realistic enough to tag."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from schemas.events import OrderPaid, OrderRefunded
from services.embedded.shop import Shop

START = datetime(2026, 8, 1, tzinfo=UTC)


def _events(seed: int = 3) -> list[object]:
    return list(Shop(customers=120, start=START, days=91, seed=seed).events())


def test_the_same_seed_generates_the_same_shop_and_another_seed_another() -> None:
    assert _events(3) == _events(3)
    assert _events(3) != _events(4)


def test_events_come_in_time_order_within_the_period_with_every_kind_present() -> None:
    shop = Shop(customers=120, start=START, days=91, seed=3)
    events = list(shop.events())
    times = [event.occurred_at for event in events]
    assert times == sorted(times)
    assert times[0] >= START
    assert times[-1] < START + timedelta(days=91)
    kinds = Counter(event.type for event in events)
    assert set(kinds) == {"browse", "click", "order_paid", "order_refunded"}
    assert kinds["browse"] > kinds["order_paid"] > kinds["order_refunded"] > 0
    assert {persona.name for persona in shop.personas.values()} == {
        "loyal",
        "regular",
        "one_time",
        "window_shopper",
        "lapsing",
    }


def test_a_refund_follows_its_own_order_for_the_same_amount() -> None:
    orders: dict[str, OrderPaid] = {}
    for event in _events():
        if isinstance(event, OrderPaid):
            orders[event.order_id] = event
            assert sum(item.price * item.quantity for item in event.items) == event.amount
        elif isinstance(event, OrderRefunded):
            paid = orders[event.order_id]
            assert (paid.customer_id, paid.amount) == (event.customer_id, event.amount)
            assert paid.occurred_at < event.occurred_at


def test_a_coupon_can_bring_a_customer_back_to_order_after_it_arrived() -> None:
    shop = Shop(customers=200, start=START, days=91, seed=5)
    coupon_at = START + timedelta(days=40)
    for customer_id in shop.personas:
        shop.coupon_received(customer_id, coupon_at)
    assert shop.returned_after_coupon, "some personas come back after a coupon"
    late_orders = {
        event.customer_id
        for event in shop.events()
        if isinstance(event, OrderPaid) and coupon_at < event.occurred_at <= coupon_at + timedelta(days=5)
    }
    assert shop.returned_after_coupon <= late_orders
