"""Bounds on the two waits a tagger worker can otherwise sit in for good.

1. A rebalance that never ends (faust waits in `Consumer.wait_empty` for messages an agent holds):
   `RebalanceWatch` records when the current rebalance began, through faust's
   sensor hooks, and `liveness` fails the worker's /healthz once it has lasted longer than
   TAGSTREAM_TAGGER__REBALANCE_STUCK_S, so Kubernetes' livenessProbe restarts it. A restart is safe:
   the tagger repeats at most an identical change (see docs/tagger.md, delivery).
2. A shutdown that never ends (SIGTERM while faust waits on the same things): `exit_after` ends the
   process from a thread once TAGSTREAM_TAGGER__SHUTDOWN_TIMEOUT_S have passed since the stop
   began; a thread, so a blocked event loop cannot hold it back.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from faust.sensors import Sensor

log = logging.getLogger(__name__)

Monotonic = Callable[[], float]


@dataclass(frozen=True)
class Liveness:
    alive: bool
    rebalancing_for_s: float | None
    """Seconds the current rebalance has lasted (None: not rebalancing)."""
    limit_s: float

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": "ok" if self.alive else "stuck"}
        if self.rebalancing_for_s is not None:
            body["rebalancing_for_s"] = round(self.rebalancing_for_s, 1)
            body["rebalance_stuck_s"] = self.limit_s
        return body


def liveness(started: float | None, now: float, limit_s: float) -> Liveness:
    """Alive unless a rebalance that started at `started` has lasted more than `limit_s`."""
    if started is None:
        return Liveness(True, None, limit_s)
    lasted = max(0.0, now - started)
    return Liveness(lasted <= limit_s, lasted, limit_s)


class RebalanceWatch(Sensor):
    """faust sensor: when the rebalance in progress began. It ends when faust has taken the new
    assignment (`on_rebalance_return`), before the tables are recovered: restoring a large state is
    progress, bounded by the chart's startupProbe, and must not make the worker look stuck."""

    def __init__(self, clock: Monotonic = time.monotonic, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._clock = clock
        self.began: float | None = None

    def on_rebalance_start(self, app: Any) -> dict[str, Any]:
        if self.began is None:  # a rebalance restarted before it ended is still the same wait
            self.began = self._clock()
        return {"time_start": self.began}

    def on_rebalance_return(self, app: Any, state: dict[str, Any]) -> None:
        self.began = None

    def liveness(self, limit_s: float) -> Liveness:
        return liveness(self.began, self._clock(), limit_s)


def exit_after(seconds: float, code: int = 1, exit: Callable[[int], Any] = os._exit) -> threading.Timer:
    """Start a daemon timer that ends the process with `code` unless it has exited by then."""

    def expire() -> None:
        log.error("still stopping after %.0fs (TAGSTREAM_TAGGER__SHUTDOWN_TIMEOUT_S): exiting now", seconds)
        logging.shutdown()
        exit(code)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    return timer
