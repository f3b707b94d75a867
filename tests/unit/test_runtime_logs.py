"""Repeated log records are held back after a burst, and the next one after the window says how many."""

from __future__ import annotations

import io
import logging

import pytest
from mode.utils.logging import ExtensionFormatter

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


def test_a_summary_line_formats_under_the_tagger_s_formatter_which_wraps_the_arguments() -> None:
    # faust's worker logs through mode's ExtensionFormatter, which turns `args=None` into `(None,)`:
    # the summary of a template with arguments then failed with "not all arguments converted"
    ticks = Ticks()
    repeats = RepeatFilter(burst=1, window_s=10.0, monotonic=ticks)
    for attempt in range(3):
        repeats.filter(record("Heartbeat failed for group %s: %s", "tagstream", f"attempt {attempt}"))
    ticks.now = 10.0
    summary = record("Heartbeat failed for group %s: %s", "tagstream", "100% of brokers down")
    assert repeats.filter(summary)
    formatted = ExtensionFormatter(io.StringIO(), fmt="%(levelname)s %(message)s").format(summary)
    assert formatted == (
        "ERROR Heartbeat failed for group tagstream: 100% of brokers down [2 more like this held back in 10s]"
    )


def test_one_filter_on_two_handlers_counts_each_record_once_and_lets_both_handlers_show_it() -> None:
    repeats = RepeatFilter(burst=2, window_s=10.0, monotonic=Ticks())
    first, second = io.StringIO(), io.StringIO()
    logger = logging.getLogger(f"tests.repeats.{id(repeats)}")
    logger.propagate = False
    for stream in (first, second):
        handler = logging.StreamHandler(stream)
        handler.addFilter(repeats)
        logger.addHandler(handler)
    for attempt in range(4):
        logger.error("Failed fetch messages from %s: attempt %d", 1, attempt)
    expected = "Failed fetch messages from 1: attempt 0\nFailed fetch messages from 1: attempt 1\n"
    assert first.getvalue() == expected
    assert second.getvalue() == expected
