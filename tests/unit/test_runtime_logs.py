"""Repeated log records are held back after a burst, and the next one after the window says how many."""

from __future__ import annotations

import logging

import pytest

from services.runtime.logs import RepeatFilter


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, *args: object, level: int = logging.ERROR, name: str = "aiokafka") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_an_outage_s_identical_errors_pass_three_per_window_and_the_next_window_counts_the_rest() -> None:
    ticks = Ticks()
    repeats = RepeatFilter(burst=3, window_s=30.0, monotonic=ticks)
    passed = []
    for second in range(30):  # 100 a second, as a tagger logged with its broker down
        ticks.now = float(second)
        for attempt in range(100):
            line = record("Unable connect to node with id %s: %s", 1, f"[Errno 111] attempt {attempt}")
            if repeats.filter(line):
                passed.append(line.getMessage())
    assert len(passed) == 3
    ticks.now = 30.0
    summary = record("Unable connect to node with id %s: %s", 1, "[Errno 111]")
    assert repeats.filter(summary)
    assert (
        summary.getMessage() == "Unable connect to node with id 1: [Errno 111] [2997 more like this held back in 30s]"
    )


def test_kinds_are_counted_apart_and_info_records_always_pass() -> None:
    repeats = RepeatFilter(burst=1, window_s=10.0, monotonic=Ticks())
    assert repeats.filter(record("Failed fetch messages from %s", 1))
    assert not repeats.filter(record("Failed fetch messages from %s", 1))
    assert repeats.filter(record("Unable to update metadata from %s", [1]))
    assert repeats.filter(record("Failed fetch messages from %s", 1, name="aiokafka.consumer.fetcher"))
    assert repeats.filter(record("Failed fetch messages from %s", 1, level=logging.WARNING))
    assert all(repeats.filter(record("rebalancing", level=logging.INFO)) for _ in range(10))


def test_a_filter_without_a_burst_is_refused() -> None:
    with pytest.raises(ValueError, match="burst must be at least 1"):
        RepeatFilter(burst=0)
