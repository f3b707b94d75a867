"""Instants as epoch microseconds: exact for every aware datetime, whatever its offset."""

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.engine.timeutil import from_us, to_us

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _fields(moment: datetime) -> int:
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def test_to_us_is_exact_from_year_1_to_9999_in_any_offset():
    rng = random.Random(11)
    first, last = _fields(datetime(1, 1, 2, tzinfo=UTC)), _fields(datetime(9999, 12, 30, tzinfo=UTC))
    for us in [0, -1, 1, first, last, *(rng.randrange(first, last) for _ in range(20_000))]:
        moment = from_us(us)
        shifted = moment.astimezone(timezone(timedelta(minutes=rng.randrange(-1439, 1440))))
        assert to_us(moment) == to_us(shifted) == _fields(moment) == us


def test_a_naive_datetime_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="naive datetime 2026-01-01T00:00:00 given"):
        to_us(datetime(2026, 1, 1))
