"""Quiet hours: a daily window of local time, possibly across midnight, in the customer's zone."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

_WINDOW = re.compile(r"^\s*([01]?\d|2[0-3]):([0-5]\d)\s*-\s*([01]?\d|2[0-3]):([0-5]\d)\s*$")


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Local times [start, end); start > end means the window spans midnight (21:00-08:00)."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> QuietHours:
        match = _WINDOW.match(text)
        if match is None:
            raise ValueError(f"quiet hours must look like 21:00-08:00, got {text!r}")
        hours = [int(group) for group in match.groups()]
        return cls(time(hours[0], hours[1]), time(hours[2], hours[3]))

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def contains(self, local: time) -> bool:
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def ends_after(self, now: datetime, zone: ZoneInfo) -> datetime | None:
        """When the window holding `now` ends (aware UTC), or None when `now` is outside it.

        Wall-clock arithmetic in the zone: on a DST day the window is an hour shorter or longer. An end
        time skipped by a spring-forward resolves with the offset before the change (PEP 495, fold=0),
        i.e. one hour later on the new wall clock; a repeated one resolves to its first occurrence
        still ahead of `now`.
        """
        local = now.astimezone(zone)
        if not self.contains(local.time().replace(tzinfo=None)):
            return None
        end_day = local.date()
        if self.start > self.end and local.time() >= self.start:
            end_day += timedelta(days=1)
        wall = datetime.combine(end_day, self.end, tzinfo=zone)
        for fold in (0, 1):  # a repeated end time (autumn) may have passed in its first occurrence
            until = wall.replace(fold=fold).astimezone(UTC)
            if until > now:
                return until
        return now + timedelta(minutes=1)  # unreachable for real zones; never hold a step in a loop
