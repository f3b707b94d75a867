"""A customer's profile attributes and sources as the engine keeps them: folded from `profile_updated`
and `source_attributed` events, read by the attribute, age and source conditions (profile_rules.py).

The fold stays a function of the set of events, whatever their order or repeats:
- per attribute the update with the latest `occurred_at` wins, the greater event id breaking a tie;
  a cleared attribute is kept as a tombstone (value None), so an older value arriving later stays
  cleared;
- the first touch is the earliest source event, the last touch the latest (same tie-break), and the
  channels of every touch are kept (at most one per channel: `CHANNELS`).

Attributes are personal data: only those in `keep` (the names some rule reads, `RuleBook.attributes`)
are stored; the others are dropped here, before anything keeps them (docs/tagger.md "Personal data").
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import date
from typing import Final

from schemas.events import ProfileUpdated, SourceAttributed
from services.engine.timeutil import date_to_day, day_to_date

BIRTH_DATE: Final = "birth_date"
"""The attribute `age` counts from."""

Entry = tuple[str | None, int, str]
"""One attribute: its value (None: cleared), and the `occurred_at` (µs) and event id that set it."""


class Touch:
    """One source event: where the customer came from, and when."""

    __slots__ = ("at_us", "channel", "code_id", "event_id", "sub_channel")

    def __init__(self, at_us: int, event_id: str, channel: str, sub_channel: str | None, code_id: str | None) -> None:
        self.at_us = at_us
        self.event_id = event_id
        self.channel = channel
        self.sub_channel = sub_channel
        self.code_id = code_id

    @property
    def path(self) -> str:
        """`channel` or `channel/sub_channel`: what source conditions compare."""
        return self.channel if self.sub_channel is None else f"{self.channel}/{self.sub_channel}"

    def before(self, other: Touch) -> bool:
        return self.at_us < other.at_us or (self.at_us == other.at_us and self.event_id < other.event_id)

    def same(self, other: Touch) -> bool:
        return self.at_us == other.at_us and self.event_id == other.event_id


class ProfileState:
    """What the engine keeps of one customer's profile and sources (None on the aggregates until the
    customer has any)."""

    __slots__ = ("attributes", "channels", "first", "last")

    def __init__(self) -> None:
        self.attributes: dict[str, Entry] = {}
        self.channels: set[str] = set()
        self.first: Touch | None = None
        self.last: Touch | None = None

    @property
    def empty(self) -> bool:
        return not self.attributes and self.first is None

    def value(self, name: str) -> str | None:
        entry = self.attributes.get(name)
        return None if entry is None else entry[0]

    def update(self, event: ProfileUpdated, at_us: int, keep: frozenset[str] | None) -> bool:
        """Fold a profile update, keeping only the attributes in `keep` (all when None). False when
        every attribute kept was already set by this very event (a repeat)."""
        kept = 0
        repeated = 0
        for name, value in event.attributes().items():
            if keep is None or name in keep:
                kept += 1
                repeated += self._set(name, value, at_us, event.event_id)
        for name in event.clear:
            if keep is None or name in keep:
                kept += 1
                repeated += self._set(name, None, at_us, event.event_id)
        return kept == 0 or repeated < kept

    def touch(self, event: SourceAttributed, at_us: int) -> bool:
        """Fold a source event. False when it is the first or last touch already (a repeat)."""
        touch = Touch(at_us, event.event_id, event.channel, event.sub_channel, event.code_id)
        first, last = self.first, self.last
        if (first is not None and first.same(touch)) or (last is not None and last.same(touch)):
            return False
        if first is None or touch.before(first):
            self.first = touch
        if last is None or last.before(touch):
            self.last = touch
        self.channels.add(touch.channel)
        return True

    def forget(self, keep: frozenset[str]) -> None:
        """Drop the attributes no rule reads any more (after a definition change)."""
        for name in [name for name in self.attributes if name not in keep]:
            del self.attributes[name]

    def _set(self, name: str, value: str | None, at_us: int, event_id: str) -> int:
        """1 when this event already set the attribute (a repeat), else 0 (newer: taken; older: ignored)."""
        held = self.attributes.get(name)
        if held is not None:
            if held[1] == at_us and held[2] == event_id:
                return 1
            if held[1] > at_us or (held[1] == at_us and held[2] > event_id):
                return 0
        self.attributes[name] = (value, at_us, event_id)
        return 0


# -- age ------------------------------------------------------------------------------------------


def birth_date(profile: ProfileState | None) -> date | None:
    if profile is None:
        return None
    text = profile.value(BIRTH_DATE)
    return None if text is None else date.fromisoformat(text)


def age_on(born: date, day: int) -> int:
    """Whole years from `born` to the local epoch day `day` (negative before birth). Someone born on
    29 February completes a year on 1 March in common years: (2, 28) is still before (2, 29)."""
    today = day_to_date(day)
    years = today.year - born.year
    return years - 1 if (today.month, today.day) < (born.month, born.day) else years


def birthday(born: date, age: int) -> int:
    """The local epoch day on which someone born on `born` turns `age` (1 March for 29 February in
    common years)."""
    year = born.year + age
    try:
        return date_to_day(born.replace(year=year))
    except ValueError:  # 29 February of a common year
        return date_to_day(date(year, 3, 1))


def next_age_change(born: date, today: int, points: tuple[int, ...]) -> int | None:
    """The local day on which the age next reaches one of `points` (ascending), if ever."""
    index = bisect_right(points, age_on(born, today))
    return birthday(born, points[index]) if index < len(points) else None
