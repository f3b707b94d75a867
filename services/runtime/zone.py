"""The shop's time zone as the engine takes it: a table of UTC offsets built from the zone database.

`day_zone("Asia/Shanghai")` reads the IANA zone (zoneinfo) and lists every change of its UTC offset
from 1970 to 2100; the engine (`services.engine.zone.DayZone`) looks offsets up in that table,
so it never touches the zone database itself. Before 1970 the 1970 offset applies, after 2100 the
last one. A zone whose offset does not change in that range is a constant offset.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Final
from zoneinfo import ZoneInfo

from services.engine.timeutil import SECOND_US, to_us
from services.engine.zone import DayZone

FIRST: Final = datetime(1970, 1, 1, tzinfo=UTC)
LAST: Final = datetime(2100, 1, 1, tzinfo=UTC)
_STEP: Final = timedelta(days=1)
"""Offsets are sampled daily, then each change is narrowed to the second: no zone in the database
changes its offset twice within a day."""


@cache
def day_zone(name: str) -> DayZone:
    """The zone's offset table (raises ZoneInfoNotFoundError for an unknown name). Cached: a zone
    is tabulated by sampling every day of its range, and the tables are read only."""
    zone = ZoneInfo(name)
    if name == "UTC":
        return DayZone.fixed(name)
    changes: list[int] = []
    offsets = [_offset(zone, FIRST)]
    moment = FIRST
    while moment < LAST:
        later = moment + _STEP
        offset = _offset(zone, later)
        if offset != offsets[-1]:
            changes.append(to_us(_first_at(zone, moment, later, offset)))
            offsets.append(offset)
        moment = later
    return DayZone(name, changes, offsets)


def _offset(zone: ZoneInfo, moment: datetime) -> int:
    found = zone.utcoffset(moment.astimezone(zone))
    assert found is not None  # a ZoneInfo always knows its offset
    return int(found.total_seconds()) * SECOND_US


def _first_at(zone: ZoneInfo, before: datetime, after: datetime, offset: int) -> datetime:
    """The first second in (before, after] at which `offset` is in force (a bisection)."""
    low, high = before, after
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if _offset(zone, middle) == offset:
            high = middle
        else:
            low = middle
    return high
