"""The tagger's consumer computes the offset to commit past repeated acknowledgements (no I/O)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP
from intervaltree import IntervalTree

from services.tagger.faust_compat import TaggerConsumer

TOPIC_PARTITION = TP("events", 0)


def _bookkeeping(consumer: Any, acked: list[int], committed: int | None) -> Any:
    """Only the state faust's `_new_offset` reads, as `Consumer.__init__` builds it."""
    consumer._gap = defaultdict(IntervalTree)
    consumer._acked = defaultdict(list)
    consumer._acked_index = defaultdict(set)
    consumer._committed_offset = defaultdict(lambda: None)
    consumer._acked[TOPIC_PARTITION] = list(acked)
    consumer._acked_index[TOPIC_PARTITION] = set(acked)
    consumer._committed_offset[TOPIC_PARTITION] = committed
    return consumer


def test_repeated_acknowledgements_do_not_hold_the_commit_back() -> None:
    # After a rebalance faust's list can hold an offset twice (buffered before, fetched again after).
    acked = [100, 101, 101, 102, 103, 103, 104]
    ours = _bookkeeping(TaggerConsumer.__new__(TaggerConsumer), acked, committed=100)
    assert ours._new_offset(TOPIC_PARTITION) == 105  # everything acknowledged, in one commit
    upstream = _bookkeeping(AIOKafkaConsumer.__new__(AIOKafkaConsumer), acked, committed=100)
    assert upstream._new_offset(TOPIC_PARTITION) == 102  # faust stops at the first repeat


def test_a_missing_offset_still_stops_the_commit() -> None:
    ours = _bookkeeping(TaggerConsumer.__new__(TaggerConsumer), [100, 101, 101, 103, 104], committed=100)
    assert ours._new_offset(TOPIC_PARTITION) == 102  # 102 was never acknowledged: nothing past it commits
