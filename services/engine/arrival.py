"""When an event arrives: refused when dated ahead of the clock, history when dated long before it.

The clock that evaluates an event is the wall clock (Kafka: the record timestamp), never the event's
own `occurred_at`, which only decides the day bucket it folds into. So a wrong date can misfile one
customer's event but cannot move anyone's time. Two rules guard even that:

- an event dated more than `max_future_skew` after the clock is refused (ingest: 422 naming
  `occurred_at`; the tagger: the DLQ), because folding it would count it for a day not yet begun;
- an event dated more than `history_age` before the clock is history, like an imported one: the
  tag changes it causes carry source `import`, which playbooks ignore unless they opt in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from schemas.events import CustomerEvent
from schemas.tags import ChangeSource
from services.engine.timeutil import DAY_US, SECOND_US, from_us


@dataclass(frozen=True)
class Arrival:
    skew_us: int = 5 * 60 * SECOND_US
    """shop.max_future_skew, in microseconds."""
    history_us: int = DAY_US
    """How old an event may be and still count as live (default: the notifier's max_trigger_age)."""

    @classmethod
    def of(cls, max_future_skew: timedelta, history_age: timedelta) -> Arrival:
        if max_future_skew < timedelta(0) or history_age < timedelta(0):
            raise ValueError("max_future_skew and history_age must not be negative")
        return cls(_us(max_future_skew), _us(history_age))

    def too_far_ahead(self, occurred_us: int, now_us: int) -> str | None:
        """Why an event dated `occurred_us` is refused at `now_us`; None when it is not too far ahead."""
        ahead = occurred_us - now_us
        if ahead <= self.skew_us:
            return None
        return (
            f"occurred_at {_iso(occurred_us)} is {_span(ahead)} ahead of the clock ({_iso(now_us)}); "
            f"at most {_span(self.skew_us)} is allowed (shop.max_future_skew)"
        )

    def source(self, event: CustomerEvent, occurred_us: int, now_us: int) -> ChangeSource:
        """The source of the tag changes this event causes: `import` for history, `rule` when live."""
        if event.source == "import" or now_us - occurred_us > self.history_us:
            return "import"
        return "rule"


def _us(span: timedelta) -> int:
    return (span.days * 86_400 + span.seconds) * SECOND_US + span.microseconds


def _iso(us: int) -> str:
    return from_us(us).isoformat().replace("+00:00", "Z")


def _span(us: int) -> str:
    """`5m`, `2h30m`, `364d23h`: the two largest units, rounded down."""
    seconds = us // SECOND_US
    parts: list[str] = []
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
        if len(parts) == 2 or (parts and not seconds):
            break
    return "".join(parts)
