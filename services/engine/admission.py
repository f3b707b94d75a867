"""What every entry point refuses before an event reaches the engine: the shop's rules about money.

The engine sums amounts as they come; it is the edges' job (the ingest API, the Kafka tagger, replay
and the embedded node) to let in only amounts that can be summed. One function, so that the API's
422, the tagger's dead letter and replay's rejected line give the same reason.
"""

from __future__ import annotations

from schemas.events import OrderPaid
from services.engine.aggregates import CustomerEvent


def wrong_currency(event: CustomerEvent, currency: str) -> str | None:
    """Why `event` is refused (None: it is not): an order paid in another currency than the shop's.

    Refunds carry no currency: they refund in the currency of their order, which was checked."""
    if isinstance(event, OrderPaid) and event.currency != currency:
        return (
            f"currency {event.currency!r} is not the shop's currency {currency!r} (TAGSTREAM_SHOP__CURRENCY): "
            "orders in another currency cannot be summed with the shop's; convert the amount before sending"
        )
    return None
