"""What the engine keeps for one customer between events: aggregates, tags, sequence and schedule."""

from __future__ import annotations

from services.engine.aggregates import Aggregates

Held = dict[str, dict[str, tuple[bool, int | None]]]
"""A customer's tags: group id -> tag id -> (given by hand, expires at µs or None)."""


class CustomerState:
    """Everything the tagger keeps for one customer."""

    __slots__ = ("agg", "blocked", "clock_us", "customer_id", "due", "next_at", "seq", "tags")

    def __init__(self, customer_id: str, agg: Aggregates | None = None) -> None:
        self.customer_id = customer_id
        self.agg = Aggregates() if agg is None else agg
        self.tags: Held = {}
        self.blocked: dict[str, set[str]] | None = None
        """Group -> tags removed by hand that the rules must not give back (in `both` groups), until a
        manual `clear` or add; None when there are none (most customers)."""
        self.seq = 0
        self.clock_us: int | None = None
        """The latest instant this customer was evaluated at: a customer's time never runs backwards,
        whatever the skew between the clocks that stamp its events."""
        self.due: dict[str, int] = {}
        """Time family (or MANUAL_EXPIRY) -> the next instant (µs) at which time alone changes an input."""
        self.next_at: int | None = None
        """The earliest instant in `due` (None: nothing due), kept with it: read per event and timer.
        Whatever changes `due` sets it (`earliest(due)`)."""

    def tag_ids(self) -> dict[str, list[str]]:
        return {group: sorted(tags) for group, tags in sorted(self.tags.items()) if tags}


def earliest(due: dict[str, int]) -> int | None:
    """The earliest instant in `due`. A loop rather than `min()`: compiled, builtin min() is a
    generic call, and `due` holds at most five instants. (`found` is a plain int beside a flag, not
    an optional int: compiled, an optional int is a boxed object.)"""
    ok = False
    found = 0
    for at in due.values():
        if not ok or at < found:
            found = at
            ok = True
    return found if ok else None
