"""Customer events: one topic, a union discriminated on `type`, so per-customer order holds across types."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from schemas.common import SCHEMA_VERSION, Contract, ExternalId, Money, Text, UtcDatetime
from schemas.limits import MAX_ITEMS, MAX_POINTS_PER_ORDER, MAX_QUANTITY


class _Event(Contract):
    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: ExternalId
    customer_id: ExternalId
    occurred_at: UtcDatetime = Field(description="when it happened: decides the day it counts for, never 'now'")
    source: Literal["live", "import"] = Field(
        default="live",
        description="`import`: history being loaded; the tag changes it causes carry source `import`, "
        "which playbooks ignore unless they opt in (POST /v1/events:import sets it)",
    )


class OrderItem(Contract):
    product_id: ExternalId
    quantity: int = Field(ge=1, le=MAX_QUANTITY)
    price: Money


class OrderPaid(_Event):
    type: Literal["order_paid"] = "order_paid"
    order_id: ExternalId
    amount: Money
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code, e.g. CNY")
    items: list[OrderItem] = Field(default_factory=list, max_length=MAX_ITEMS)
    points_earned: int = Field(default=0, ge=0, le=MAX_POINTS_PER_ORDER)


class OrderRefunded(_Event):
    type: Literal["order_refunded"] = "order_refunded"
    order_id: ExternalId
    amount: Money = Field(gt=0)


class Browse(_Event):
    type: Literal["browse"] = "browse"
    product_id: ExternalId


class Click(_Event):
    type: Literal["click"] = "click"
    target: Text


CustomerEvent = Annotated[OrderPaid | OrderRefunded | Browse | Click, Field(discriminator="type")]

EVENT_TYPES: tuple[type[_Event], ...] = (OrderPaid, OrderRefunded, Browse, Click)


def event_adapter() -> TypeAdapter[CustomerEvent]:
    """The validator for one customer event (JSON bytes or dict). Build once and reuse: it is compiled."""
    return TypeAdapter(CustomerEvent)
