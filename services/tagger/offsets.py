"""Where each source partition stands: the offset after the last message processed.

Stored in the table with the customer states (one `\\x00position:` record per partition and batch),
so the position moves exactly when the states behind it do. The source topics are neither compacted
nor transactional, so a partition's offsets are contiguous: a message beyond the next one expected
means faust skipped some (it can, when a rebalance interrupts a delivery), and a partition with
messages past its position that makes no progress had its last messages skipped. Both are read again
from the position. No I/O here: the tagger seeks and measures with the offsets this module returns.

Unless the position is gone: when the topic's retention deleted records the tagger had not processed
(a worker far behind, or down longer than the retention), the log starts past the position, a read
from there is reset to the log start, and reading "again from the position" would repeat forever.
`lost_to_retention` tells those partitions from the log start offsets the broker reports: their
position moves to the log start and the lost range is reported, for the tagger to count and log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from faust.types import TP

log = logging.getLogger(__name__)

POSITION_PREFIX = b"\x00position:"
STUCK_CHECKS = 3
"""Checks (the lag timer's runs, 5 s apart) without progress before a partition is re-read."""

Highwater = Callable[[TP], int | None]


def position_record(tp: TP, next_offset: int) -> tuple[bytes, bytes]:
    """The table record that stores a partition's position."""
    return POSITION_PREFIX + f"{tp.topic}:{tp.partition}".encode(), b"%d" % next_offset


@dataclass(frozen=True, slots=True)
class Lost:
    """Offsets `first` to `end - 1` of `tp`, deleted by retention before the tagger processed them."""

    tp: TP
    first: int
    end: int

    @property
    def count(self) -> int:
        return self.end - self.first


class SourceOffsets:
    """Per source partition, the offset after the last one processed (and how long it has not moved)."""

    def __init__(self) -> None:
        self._next: dict[TP, int] = {}
        self._stuck: dict[TP, tuple[int, int]] = {}
        self._rewound: set[TP] = set()

    def skipped(self, tp: TP, offset: int) -> int | None:
        """The offset to read `tp` again from if a message at `offset` means faust skipped messages."""
        expected = self._next.get(tp)
        if expected is not None and offset > expected:
            log.warning(
                "%s[%d]: got offset %d, expected %d; re-reading from %d",
                tp.topic,
                tp.partition,
                offset,
                expected,
                expected,
            )
            self._rewound.add(tp)
            return expected
        return None

    def processed(self, tp: TP, offset: int) -> None:
        self._next[tp] = max(self._next.get(tp) or 0, offset + 1)

    def recover(self, key: bytes, value: bytes, active: set[int]) -> None:
        """Take the position a recovered table record holds, if it is one of an active partition."""
        topic, _, partition = key[len(POSITION_PREFIX) :].decode().rpartition(":")
        if int(partition) in active:
            self._next[TP(topic, int(partition))] = int(value)

    def keep(self, active: set[int]) -> None:
        """Forget the partitions no longer assigned to this worker."""
        self._next = {tp: offset for tp, offset in self._next.items() if tp.partition in active}

    def lags(self, highwater: Highwater) -> Iterator[tuple[TP, int]]:
        for tp, next_offset in self._next.items():
            end = highwater(tp)
            if end is not None:
                yield tp, max(0, end - next_offset)

    def suspects(self, stalled: Iterable[TP]) -> set[TP]:
        """The partitions whose position retention may have deleted: those `skipped` sent back since the
        last call, and `stalled` ones. Only these need the broker's log start: a partition whose
        position is gone shows as a jump (the read reset to the log start) or, with nothing left
        past it, as a stall."""
        suspects, self._rewound = self._rewound | set(stalled), set()
        return suspects

    def lost_to_retention(self, log_starts: Mapping[TP, int]) -> list[Lost]:
        """The partitions whose log now starts past their position (`log_starts`: the broker's log
        start offsets), each moved on to its log start. Nothing can read the records before it again."""
        lost: list[Lost] = []
        for tp, start in log_starts.items():
            expected = self._next.get(tp)
            if expected is None or start <= expected:
                continue
            log.error(
                "%s[%d]: offsets %d to %d (%d records) were deleted by the topic's retention before the "
                "tagger processed them; they are lost to it, going on from %d",
                tp.topic,
                tp.partition,
                expected,
                start - 1,
                start - expected,
                start,
            )
            self._next[tp] = start
            self._stuck.pop(tp, None)
            lost.append(Lost(tp, expected, start))
        return lost

    def stalled(self, highwater: Highwater) -> list[tuple[TP, int]]:
        """Partitions with messages past their position that made no progress in `STUCK_CHECKS` calls,
        with the offset to read them again from: the case `skipped` cannot see, faust having skipped a
        partition's *last* messages (no later message arrives to reveal the jump)."""
        stalled: list[tuple[TP, int]] = []
        for tp, next_offset in list(self._next.items()):
            end = highwater(tp)
            if end is None or end <= next_offset:
                self._stuck.pop(tp, None)
                continue
            seen = self._stuck.get(tp)
            if seen is None or seen[0] != next_offset:
                self._stuck[tp] = (next_offset, 1)
            elif seen[1] + 1 >= STUCK_CHECKS:
                log.warning("%s[%d]: no progress at %d below %d; re-reading", tp.topic, tp.partition, next_offset, end)
                self._stuck.pop(tp, None)
                stalled.append((tp, next_offset))
            else:
                self._stuck[tp] = (next_offset, seen[1] + 1)
        return stalled
