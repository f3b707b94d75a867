"""A generated shop for the demo: customers browsing, ordering, refunding, going quiet, coming back.

Deterministic for a seed. Each customer follows a persona over the simulated period; the shop also
reacts to what tagstream does: a customer who receives a coupon may come back and order within days
(`coupon_received`), which is what lets the demo show a delayed follow-up cancelling itself.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from schemas.events import Browse, Click, OrderItem, OrderPaid, OrderRefunded

ShopEvent = OrderPaid | OrderRefunded | Browse | Click

PRODUCTS = [f"p{number:03d}" for number in range(1, 121)]
CLICK_TARGETS = ("banner:autumn-sale", "nav:new-arrivals", "coupon-center", "live-stream", "radar:autumn-lookbook")
"""`radar:` a tracked link a salesperson shared (雷达链接)."""


@dataclass(frozen=True, slots=True)
class Persona:
    name: str
    share: float
    """Fraction of customers with this persona."""
    order_every_days: float | None
    """Mean days between orders while active; None: never orders on its own."""
    browse_every_days: float
    active_days: tuple[int, int] | None
    """Days of the period the customer is active in (then goes quiet); None: the whole period."""
    spend: tuple[int, int]
    """Order amount range, in yuan."""
    returns_after_coupon: float
    """Chance of coming back to order within days of receiving a coupon."""


PERSONAS = (
    Persona("loyal", 0.12, 9, 3, None, (120, 680), 0.9),
    Persona("regular", 0.23, 24, 6, None, (60, 320), 0.6),
    Persona("one_time", 0.2, None, 9, (0, 20), (40, 260), 0.35),
    Persona("window_shopper", 0.2, None, 4, None, (40, 160), 0.25),
    Persona("lapsing", 0.25, 6, 4, (0, 30), (80, 500), 0.5),
)
REFUND_RATE = 0.06


class Shop:
    """Yields the shop's events in time order; `coupon_received` may add a return visit later on."""

    def __init__(self, *, customers: int, start: datetime, days: int, seed: int = 7) -> None:
        self.start = start
        self.end = start + timedelta(days=days)
        self.personas: dict[str, Persona] = {}
        self._rng = random.Random(seed)
        self._queue: list[tuple[datetime, int, ShopEvent]] = []
        self._tiebreak = itertools.count()
        self._ids = itertools.count(1)
        self._orders = itertools.count(1)
        self.returned_after_coupon: set[str] = set()
        for number in range(1, customers + 1):
            customer_id = f"c{number:04d}"
            persona = self._rng.choices(PERSONAS, weights=[p.share for p in PERSONAS])[0]
            self.personas[customer_id] = persona
            self._plan(customer_id, persona)

    def events(self) -> Iterator[ShopEvent]:
        """Every event in time order, including returns added while iterating."""
        while self._queue:
            _, _, event = heapq.heappop(self._queue)
            yield event

    def next_at(self) -> datetime | None:
        return self._queue[0][0] if self._queue else None

    def coupon_received(self, customer_id: str, at: datetime) -> None:
        """The customer got a coupon at `at`: by their persona's odds, they come back and order."""
        persona = self.personas.get(customer_id)
        if persona is None or self._rng.random() >= persona.returns_after_coupon:
            return
        back = at + timedelta(hours=self._rng.uniform(6, 24 * 5))
        if back >= self.end:
            return
        self.returned_after_coupon.add(customer_id)
        self._session(customer_id, back, persona, order=True)

    def _plan(self, customer_id: str, persona: Persona) -> None:
        rng = self._rng
        first, last = persona.active_days or (0, (self.end - self.start).days)
        active_from = self.start + timedelta(days=first, hours=rng.uniform(0, 24 * 7))
        active_to = min(self.end, self.start + timedelta(days=last))
        at = active_from
        while at < active_to:
            self._session(customer_id, at, persona, order=False)
            at += timedelta(days=rng.expovariate(1 / persona.browse_every_days))
        if persona.order_every_days is not None:
            at = active_from + timedelta(days=rng.uniform(0, persona.order_every_days))
            while at < active_to:
                self._session(customer_id, at, persona, order=True)
                at += timedelta(days=rng.expovariate(1 / persona.order_every_days))
        elif persona.name == "one_time":
            self._session(customer_id, active_from + timedelta(days=rng.uniform(0, 10)), persona, order=True)

    def _session(self, customer_id: str, at: datetime, persona: Persona, *, order: bool) -> None:
        rng = self._rng
        viewed = rng.sample(PRODUCTS, rng.randint(1, 5))
        for product_id in viewed:
            self._push(
                Browse(event_id=self._event_id(), customer_id=customer_id, occurred_at=at, product_id=product_id)
            )
            at += timedelta(seconds=rng.randint(20, 240))
        if rng.random() < 0.4:
            target = rng.choice(CLICK_TARGETS)
            self._push(Click(event_id=self._event_id(), customer_id=customer_id, occurred_at=at, target=target))
            at += timedelta(seconds=rng.randint(5, 60))
        if order and at < self.end:
            self._order(customer_id, at, persona, viewed)

    def _order(self, customer_id: str, at: datetime, persona: Persona, viewed: list[str]) -> None:
        rng = self._rng
        bought = viewed[: rng.randint(1, len(viewed))]
        amount = Decimal(rng.randint(*persona.spend)) + Decimal(rng.choice((0, 50, 90, 99))) / 100
        prices = _split(amount, len(bought))
        order_id = f"o{next(self._orders):06d}"
        self._push(
            OrderPaid(
                event_id=self._event_id(),
                customer_id=customer_id,
                occurred_at=at,
                order_id=order_id,
                amount=amount,
                currency="CNY",
                items=[
                    OrderItem(product_id=p, quantity=1, price=price) for p, price in zip(bought, prices, strict=True)
                ],
                points_earned=int(amount),
            )
        )
        refund_at = at + timedelta(days=rng.uniform(1, 7))
        if rng.random() < REFUND_RATE and refund_at < self.end:
            refund = OrderRefunded(
                event_id=self._event_id(),
                customer_id=customer_id,
                occurred_at=refund_at,
                order_id=order_id,
                amount=amount,
            )
            self._push(refund)

    def _push(self, event: ShopEvent) -> None:
        heapq.heappush(self._queue, (event.occurred_at, next(self._tiebreak), event))

    def _event_id(self) -> str:
        return f"e{next(self._ids):07d}"


def _split(amount: Decimal, parts: int) -> list[Decimal]:
    """Item prices adding up to the order amount exactly (the last item takes the remainder)."""
    share = (amount / parts).quantize(Decimal("0.01"))
    return [share] * (parts - 1) + [amount - share * (parts - 1)]
