"""The tagger's `faust.Worker`: faust's own logging set-up, then repeated records held back; once
started, what it built to start is kept out of the garbage collector's scans, and full collections
are paced (`FULL_COLLECTION_AFTER`)."""

from __future__ import annotations

import gc
import logging

import faust

from services.runtime.logs import hold_back_repeats

FULL_COLLECTION_AFTER: int = 100
"""Collections of the middle generation between two full ones (CPython's default is 10).

A full collection walks every long-lived object the start-up freeze did not cover: the states kept
decoded (services/tagger/decoded.py) and the engine's windows: 12-50 ms of the event loop for 3,000
to 10,000 customers. At the default pace one came every 2-4 s under load, each holding up the next few
hundred events; at 100, about every 40 s at 8,000 events/s, and reference cycles wait that much longer
to be freed (docs/performance.md: latency)."""


class TaggerWorker(faust.Worker):
    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        super().on_setup_root_logger(logger, level)
        if level:
            # faust lowers the root logger to DEBUG at WARNING and above, for its start-up spinner to turn
            # on every record; then every debug call of aiokafka (per send, per response) builds a record
            # that no handler shows
            logger.setLevel(level)
        hold_back_repeats(logger)  # a broker outage: ~100 identical aiokafka ERROR lines a second

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        # Once, when the tables are recovered and the app runs: its modules, faust's services and the
        # rules live as long as the process. Frozen, they are no longer walked by full collections, only
        # what processing keeps; and those wait for more young ones than CPython's default.
        gc.collect()
        gc.freeze()
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, FULL_COLLECTION_AFTER)
