"""Shared field types: identifiers, aware UTC times and money."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Final

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer

SCHEMA_VERSION: Final = 1

Identifier = Annotated[
    str,
    Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"),
]
"""Ids of groups and tags: stable, URL- and key-safe (no '/', which separates group/tag)."""

ExternalId = Annotated[str, Field(min_length=1, max_length=128)]
"""Ids that come from the merchant's systems (customers, orders, events, products)."""


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
"""A timezone-aware instant, normalised to UTC. Naive datetimes are rejected."""


def _money_places(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError(f"must be a finite amount, got {value}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -4:
        raise ValueError(f"has more than 4 decimal places: {value}")
    return value


Money = Annotated[
    Decimal,
    Field(ge=0, max_digits=18),
    AfterValidator(_money_places),
    PlainSerializer(lambda v: str(v), return_type=str, when_used="json"),
]
"""Amounts are exact decimals, serialised as strings ("199.90") so no consumer reads them as floats."""


class Contract(BaseModel):
    """Base of every message: frozen, unknown fields rejected, versioned."""

    model_config = ConfigDict(frozen=True, extra="forbid", serialize_by_alias=True)
