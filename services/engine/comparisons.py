"""Comparisons: `observed OP value` as small classes, one per operator.

Compiled, a method call on a known class is a direct C call where an `operator` function or a
closure is a generic Python call; and the whole-number metrics (counts, days) compare as machine
ints through `holds_int`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from schemas.tags import Op

Number = int | Decimal
"""What numeric conditions compare: counts, days and money."""


class Comparison:
    """`observed OP value` for numbers (ints and Decimals alike)."""

    def holds(self, observed: Number) -> bool:
        raise NotImplementedError

    def holds_int(self, observed: int) -> bool:
        """`holds` for the metrics that are whole numbers (counts, days): the comparisons below on
        int values compare them as ints, which compiled is a machine comparison, not a generic
        rich comparison of two boxed objects."""
        return self.holds(observed)


class _IntAtLeast(Comparison):
    """gte (and gt, as gte the next int) on an int value."""

    def __init__(self, low: int) -> None:
        self.low = low

    def holds(self, observed: Number) -> bool:
        return self.low <= observed

    def holds_int(self, observed: int) -> bool:
        return self.low <= observed


class _IntAtMost(Comparison):
    """lte (and lt, as lte the int before) on an int value."""

    def __init__(self, high: int) -> None:
        self.high = high

    def holds(self, observed: Number) -> bool:
        return observed <= self.high

    def holds_int(self, observed: int) -> bool:
        return observed <= self.high


class _IntBetween(Comparison):
    """between (and eq, as between the value and itself) on int values."""

    def __init__(self, low: int, high: int) -> None:
        self.low = low
        self.high = high

    def holds(self, observed: Number) -> bool:
        return self.low <= observed <= self.high

    def holds_int(self, observed: int) -> bool:
        return self.low <= observed <= self.high


class _Against(Comparison):
    """A comparison with one value."""

    def __init__(self, value: Number) -> None:
        self.value = value


class _Equal(_Against):
    def holds(self, observed: Number) -> bool:
        return self.value == observed


class _NotEqual(_Against):
    def holds(self, observed: Number) -> bool:
        return self.value != observed


class _Below(_Against):
    def holds(self, observed: Number) -> bool:
        return self.value > observed


class _AtMost(_Against):
    def holds(self, observed: Number) -> bool:
        return self.value >= observed


class _Above(_Against):
    def holds(self, observed: Number) -> bool:
        return self.value < observed


class _AtLeast(_Against):
    def holds(self, observed: Number) -> bool:
        return self.value <= observed


class _Between(Comparison):
    def __init__(self, low: Number, high: Number) -> None:
        self.low = low
        self.high = high

    def holds(self, observed: Number) -> bool:
        return self.low <= observed <= self.high


class _Among(Comparison):
    def __init__(self, members: frozenset[Number]) -> None:
        self.members = members

    def holds(self, observed: Number) -> bool:
        return observed in self.members


class _NotAmong(Comparison):
    def __init__(self, members: frozenset[Number]) -> None:
        self.members = members

    def holds(self, observed: Number) -> bool:
        return observed not in self.members


def comparison_for(op: Op, value: Any) -> Comparison:
    if op is Op.BETWEEN:
        low, high = value
        if type(low) is int and type(high) is int:
            return _IntBetween(low, high)
        return _Between(low, high)
    if type(value) is int:  # whole-number metrics (money is Decimal): observed is an int too
        if op is Op.GTE:
            return _IntAtLeast(value)
        if op is Op.GT:
            return _IntAtLeast(value + 1)
        if op is Op.LTE:
            return _IntAtMost(value)
        if op is Op.LT:
            return _IntAtMost(value - 1)
        if op is Op.EQ:
            return _IntBetween(value, value)
    if op is Op.IN:
        return _Among(frozenset(value))
    if op is Op.NOT_IN:
        return _NotAmong(frozenset(value))
    if op is Op.EQ:
        return _Equal(value)
    if op is Op.NE:
        return _NotEqual(value)
    if op is Op.LT:
        return _Below(value)
    if op is Op.LTE:
        return _AtMost(value)
    if op is Op.GT:
        return _Above(value)
    return _AtLeast(value)
