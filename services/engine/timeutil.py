"""Instants as integer microseconds since the epoch (UTC), days as integer epoch days.

The engine works on integers so that folding, windows and flip times are exact and cheap;
datetimes appear only at the edges (events in, tag changes out).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Final

SECOND_US: Final = 1_000_000
DAY_US: Final = 86_400 * SECOND_US
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DATE: Final = _EPOCH.date()


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch for an aware datetime (exact, no float rounding)."""
    try:
        delta = moment - _EPOCH  # a naive datetime cannot be subtracted from an aware one
    except TypeError:
        if moment.tzinfo is None:
            raise ValueError(f"naive datetime {moment.isoformat()} given; tagstream needs timezone-aware UTC") from None
        raise
    return days_us(delta.days) + delta.seconds * SECOND_US + delta.microseconds


def days_us(days: int) -> int:
    """`days * DAY_US`: the length of `days` days, or the first instant of epoch day `days` (UTC)."""
    # DAY_US is 675 * 128_000_000. Compiled, a product of two ints is a machine multiplication only
    # when both factors are under 2**30 (else a generic multiplication of Python int objects), and
    # DAY_US is not; from 1970 to about the year 6300 neither factor here is.
    return days * 675 * 128_000_000


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(0, 0, us)  # (days, seconds, microseconds): positional is cheaper


def day_of(us: int) -> int:
    return us // DAY_US


def date_to_day(value: date) -> int:
    return (value - _EPOCH_DATE).days


def day_to_date(day: int) -> date:
    return _EPOCH_DATE + timedelta(days=day)
