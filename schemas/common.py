"""Shared field types: identifiers, aware UTC times and money, each with its bound (schemas/limits.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Final

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer

from schemas.excerpt import excerpt
from schemas.limits import (
    MAX_ID_LENGTH,
    MAX_IDENTIFIER_LENGTH,
    MAX_INSTANT,
    MAX_MONEY,
    MAX_TEXT_LENGTH,
    MIN_INSTANT,
    MONEY_PLACES,
)
from schemas.safe_text import SAFE_TEXT_MESSAGE, SAFE_TEXT_PATTERN, UNSAFE_CHARACTERS

SCHEMA_VERSION: Final = 1

Identifier = Annotated[
    str,
    Field(min_length=1, max_length=MAX_IDENTIFIER_LENGTH, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"),
]
"""Ids of groups and tags: stable, URL- and key-safe (no '/', which separates group/tag)."""

_UNSAFE = re.compile(f"[{UNSAFE_CHARACTERS}]")


def check_safe(value: str) -> str:
    """`value`, or a ValueError naming the first unsafe character (see UNSAFE_CHARACTERS)."""
    found = _UNSAFE.search(value)
    if found is not None:
        raise ValueError(
            f"{SAFE_TEXT_MESSAGE}: U+{ord(found.group()):04X} at position {found.start()} of {excerpt(value)}"
        )
    return value


ExternalId = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH, pattern=SAFE_TEXT_PATTERN)]
"""Ids that come from the merchant's systems (customers, orders, events, products): any printable text."""

Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_LENGTH, pattern=SAFE_TEXT_PATTERN)]
"""Short printable text that is not an id (names, actors, click targets)."""


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


# The bounds are checked by pydantic's core on the aware instant as given, before the conversion to UTC
# (9999-12-31T23:59:59-12:00 has no UTC datetime), and cost a fraction of a Python validator per field.
UtcDatetime = Annotated[AwareDatetime, Field(ge=MIN_INSTANT, lt=MAX_INSTANT), AfterValidator(_to_utc)]
"""A timezone-aware instant, normalised to UTC, within the years the engine computes with."""


def _money_places(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError(f"must be a finite amount, got {excerpt(value)}")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MONEY_PLACES:
        raise ValueError(f"has more than {MONEY_PLACES} decimal places: {excerpt(value)}")
    return value


Money = Annotated[
    Decimal,
    Field(ge=0, lt=MAX_MONEY, max_digits=18),
    AfterValidator(_money_places),
    PlainSerializer(lambda v: str(v), return_type=str, when_used="json"),
]
"""Amounts are exact decimals, serialised as strings ("199.90") so no consumer reads them as floats."""


class Contract(BaseModel):
    """Base of every message: frozen, unknown fields rejected, versioned."""

    model_config = ConfigDict(frozen=True, extra="forbid", serialize_by_alias=True)
