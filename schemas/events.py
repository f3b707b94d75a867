"""Customer events: one topic, a union discriminated on `type`, so per-customer order holds across types."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Final, Literal, Self, get_args

from pydantic import Field, TypeAdapter, model_validator

from schemas.common import SCHEMA_VERSION, Contract, ExternalId, Money, Text, UtcDatetime
from schemas.limits import (
    MAX_ATTRIBUTE_LENGTH,
    MAX_CUSTOM_ATTRIBUTES,
    MAX_ITEMS,
    MAX_POINTS_PER_ORDER,
    MAX_QUANTITY,
)
from schemas.safe_text import SAFE_TEXT_PATTERN


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


STANDARD_ATTRIBUTES: Final = ("gender", "birth_date", "region", "family")
"""The profile attributes every shop has a field for; anything else is a custom attribute. Each, and
`custom`, is in PERSONAL_FIELDS: errors name them, never quote their values."""

ATTRIBUTE_NAME_PATTERN: Final = r"^[a-z][a-z0-9_]{0,31}$"
AttributeName = Annotated[str, Field(pattern=ATTRIBUTE_NAME_PATTERN, examples=["vip_card"])]
AttributeValue = Annotated[str, Field(min_length=1, max_length=MAX_ATTRIBUTE_LENGTH, pattern=SAFE_TEXT_PATTERN)]
EARLIEST_BIRTH_DATE: Final = date(1900, 1, 1)


class ProfileUpdated(_Event):
    """Attributes a shop collected (a form, a chat): each one given replaces the customer's value, each
    name in `clear` forgets it; the others stay. The latest `occurred_at` wins per attribute (the event
    id breaks ties), whatever order updates arrive in. Personal data: see docs/tagger.md."""

    type: Literal["profile_updated"] = "profile_updated"
    gender: Literal["female", "male", "other"] | None = None
    birth_date: date | None = Field(
        default=None, ge=EARLIEST_BIRTH_DATE, description="a local date; `age` conditions count from it"
    )
    region: AttributeValue | None = Field(default=None, examples=["上海"])
    family: AttributeValue | None = Field(default=None, description="family situation", examples=["married_kids"])
    custom: dict[AttributeName, AttributeValue] = Field(default_factory=dict, max_length=MAX_CUSTOM_ATTRIBUTES)
    clear: list[AttributeName] = Field(
        default_factory=list,
        max_length=MAX_CUSTOM_ATTRIBUTES + len(STANDARD_ATTRIBUTES),
        description="attributes to forget (standard or custom names)",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        given = self.attributes()
        if not given and not self.clear:
            raise ValueError("a profile_updated sets or clears at least one attribute")
        for name in self.custom:
            if name in STANDARD_ATTRIBUTES:
                raise ValueError(f"custom.{name}: {name} is a standard attribute; set it as the field {name}")
        for name in self.clear:
            if name in given:
                raise ValueError(f"clear: {name} is both set and cleared")
        if self.birth_date is not None and self.birth_date > self.occurred_at.date() + timedelta(days=1):
            raise ValueError("birth_date: after the day the event occurred")
        return self

    def attributes(self) -> dict[str, str]:
        """Every attribute the event sets, by name, as text (a birth date as YYYY-MM-DD)."""
        found = {
            name: value
            for name, value in (
                ("gender", self.gender),
                ("birth_date", None if self.birth_date is None else self.birth_date.isoformat()),
                ("region", self.region),
                ("family", self.family),
            )
            if value is not None
        }
        return found | dict(self.custom)


Channel = Literal[
    "taobao",
    "tmall",
    "jd",
    "douyin",
    "kuaishou",
    "official_account",
    "website",
    "article",
    "own_store",
    "franchise_store",
    "event",
    "other",
]
"""Where customers come from: online shops and media, then offline places; `other` for the rest."""
CHANNELS: Final[tuple[str, ...]] = get_args(Channel)
SourceLabel = Annotated[str, Field(min_length=1, max_length=MAX_ATTRIBUTE_LENGTH, pattern=SAFE_TEXT_PATTERN)]


class SourceAttributed(_Event):
    """A customer traced to a channel: a scan of a per-channel QR code (渠道活码), a landing from an
    ad or article, a visit to a store. The earliest (first touch) and the latest (last touch) are kept,
    and every channel seen."""

    type: Literal["source_attributed"] = "source_attributed"
    channel: Channel
    sub_channel: SourceLabel | None = Field(
        default=None, description="the store, article, live room or campaign within the channel", examples=["静安店"]
    )
    code_id: SourceLabel | None = Field(default=None, description="the QR code scanned (渠道活码), if any")


CustomerEvent = Annotated[
    OrderPaid | OrderRefunded | Browse | Click | ProfileUpdated | SourceAttributed, Field(discriminator="type")
]

EVENT_TYPES: tuple[type[_Event], ...] = (OrderPaid, OrderRefunded, Browse, Click, ProfileUpdated, SourceAttributed)


def event_adapter() -> TypeAdapter[CustomerEvent]:
    """The validator for one customer event (JSON bytes or dict). Build once and reuse: it is compiled."""
    return TypeAdapter(CustomerEvent)
