"""The shop's days: which local day an instant falls on, and the instant a local day starts.

The engine counts in the shop's local days (day buckets, windows, days since an order, "today"), so
that a purchase at 07:30 in Shanghai belongs to that Shanghai day, not to the UTC day before. A
`DayZone` is plain data (UTC offsets and the instants they change at), built by the caller from the
zone database (`services/runtime/zone.py`), so the engine stays pure and its hot path stays integer
arithmetic: local day = (µs + offset) // DAY_US, with the offset a constant for zones without
changes (UTC, Asia/Shanghai since 1991) and a cached interval, else a bisection, for the others.

A local day is `day(us)` for every instant of it; it starts at `start(day)`: local midnight as a
UTC instant, or, on a day whose midnight is skipped by a clock change, the first instant of that
local date. Across a daylight saving change a day lasts 23 or 25 hours.
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import date, datetime
from itertools import pairwise
from typing import Final, final

from services.engine.timeutil import DAY_US, SECOND_US, day_to_date, days_us, to_us

_bisect_right: Final = bisect_right
_FOREVER: Final = 1 << 61
"""An instant beyond every table (73,000 years in µs) that still fits a machine int: compiled, ints
from -2**62 to 2**62 - 1 are unboxed, larger ones are Python objects compared the slow way."""


@final  # compiled: calls to its methods are direct, not through a vtable
class DayZone:
    """UTC offsets (µs) by instant: `offsets[0]` before `changes[0]`, `offsets[i]` from
    `changes[i - 1]` until `changes[i]`, the last one from the last change on."""

    __slots__ = ("_before", "_high", "_low", "_offset", "_widest", "changes", "name", "offsets")

    def __init__(self, name: str, changes: list[int], offsets: list[int]) -> None:
        if len(offsets) != len(changes) + 1:
            raise ValueError(f"{name}: {len(changes)} changes need {len(changes) + 1} offsets, got {len(offsets)}")
        if any(later <= earlier for earlier, later in pairwise(changes)):
            raise ValueError(f"{name}: offset changes must be in increasing order")
        if any(abs(offset) >= DAY_US for offset in offsets):
            raise ValueError(f"{name}: an offset must be under a day")
        self.name = name
        self.changes = changes
        self.offsets = offsets
        # The interval the last lookup fell in: events of a day come together, so most lookups of a
        # zone with changes hit it. For a zone without changes it is everything.
        self._widest = max(offsets)
        self._low = -_FOREVER
        self._high = _FOREVER
        self._offset = offsets[0]
        self._before = 0
        """The offset of the interval before the remembered one (0 when there is none)."""
        if changes:
            self._remember(changes[-1])

    @classmethod
    def fixed(cls, name: str, offset_seconds: int = 0) -> DayZone:
        return cls(name, [], [offset_seconds * SECOND_US])

    @property
    def constant(self) -> bool:
        """Whether the offset never changes (in the range the table covers)."""
        return not self.changes

    def offset(self, us: int) -> int:
        """The UTC offset (µs) in force at instant `us`."""
        if self._low <= us < self._high:
            return self._offset
        return self._remember(us)

    def day(self, us: int) -> int:
        """The local epoch day instant `us` falls on (days since 1970-01-01 in the shop's calendar)."""
        if self._low <= us < self._high:
            return (us + self._offset) // DAY_US
        return (us + self._remember(us)) // DAY_US

    def start(self, day: int) -> int:
        """The first instant (µs) of local day `day` (of the day after, for a date a clock change skips)."""
        wall = days_us(day)
        # An instant u is on or after the day's start when its wall time u + offset(u) reaches
        # `wall`; within one interval that is u >= wall - offset. The remembered interval answers
        # when it holds that instant and the clock before the interval never reached `wall` (it
        # could, had the clock been set back across midnight).
        candidate = wall - self._offset
        if self._low <= candidate < self._high and self._low + self._before <= wall:
            return candidate
        return self._start(wall)

    def _start(self, wall: int) -> int:
        changes = self.changes
        offsets = self.offsets
        # Intervals are in time order, so the first one holding an instant whose wall time reaches
        # `wall` holds the earliest; none starts before wall - the widest offset.
        index = _bisect_right(changes, wall - self._widest)
        while True:
            low = changes[index - 1] if index > 0 else None
            candidate = wall - offsets[index]
            if low is not None and candidate < low:
                candidate = low
            if index == len(changes) or candidate < changes[index]:
                return candidate
            index += 1

    def days_between(self, since_us: int, now_us: int) -> int:
        """Whole local days from the day of `since_us` to the day of `now_us` (0 on the same day, never
        negative): what `days_since_*` read, so they move at local midnight."""
        elapsed = self.day(now_us) - self.day(since_us)
        return elapsed if elapsed > 0 else 0

    def date_of(self, moment: datetime) -> date:
        """The shop's local date at an aware instant ("today", for the horizon of absolute windows)."""
        return day_to_date(self.day(to_us(moment)))

    def _remember(self, us: int) -> int:
        changes = self.changes
        index = _bisect_right(changes, us)
        self._low = changes[index - 1] if index > 0 else -_FOREVER
        self._high = changes[index] if index < len(changes) else _FOREVER
        self._offset = self.offsets[index]
        self._before = self.offsets[index - 1] if index > 0 else 0
        return self._offset

    def __repr__(self) -> str:
        return f"DayZone({self.name!r}, {len(self.changes)} offset changes)"


UTC_ZONE: Final = DayZone.fixed("UTC")
"""Days as UTC days: the default, and what every caller that names no zone gets."""
