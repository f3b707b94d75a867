"""Repeated log records held back: an outage must not turn into hundreds of identical lines a second.

During a broker outage aiokafka logs every failed connect, metadata refresh and fetch (about 100
ERROR lines a second from one tagger); the first ones say everything the rest do. `RepeatFilter`
lets the first `burst` records of a kind through per window and, with the next one after the
window, says how many it held back. A kind is the logger, the level and the message *template*
(`record.msg`, before its arguments), so "connect to node 1 failed: refused" and "... timed out"
are one kind. Records below WARNING always pass. `hold_back_repeats` puts one filter on several
handlers, so a record reaches it once per handler: the decision is made once per record.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

_MAX_KINDS = 1000  # f-string messages make a kind per text: bound the table, not the logging


@dataclass(slots=True)
class _Window:
    started: float
    passed: int = 0
    held: int = 0


class RepeatFilter(logging.Filter):
    def __init__(
        self, *, burst: int = 3, window_s: float = 30.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        if burst < 1 or window_s <= 0:
            raise ValueError(f"burst must be at least 1 and window_s positive, got {burst} and {window_s}")
        self._burst = burst
        self._window_s = window_s
        self._monotonic = monotonic
        self._windows: dict[tuple[str, int, str], _Window] = {}
        # weak: a record can hold a traceback, and with it every frame's locals
        self._last: tuple[weakref.ref[logging.LogRecord], bool] | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        if self._last is not None and self._last[0]() is record:
            return self._last[1]  # the same record at the next handler: counted once, decided alike
        passed = self._decide(record)
        self._last = (weakref.ref(record), passed)
        return passed

    def _decide(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.levelno, str(record.msg))
        now = self._monotonic()
        window = self._windows.get(kind)
        if window is None or now - window.started >= self._window_s:
            held = window.held if window is not None else 0
            if window is None and len(self._windows) >= _MAX_KINDS:
                self._windows.pop(next(iter(self._windows)))
            window = self._windows[kind] = _Window(started=now)
            if held:
                record.msg = f"{record.getMessage()} [{held} more like this held back in {self._window_s:.0f}s]"
                # (), not None: formatters that wrap args (mode's ExtensionFormatter, the tagger's) turn
                # None into (None,), and "%" then fails with "not all arguments converted"
                record.args = ()
        if window.passed < self._burst:
            window.passed += 1
            return True
        window.held += 1
        return False


def hold_back_repeats(logger: logging.Logger | None = None, *, burst: int = 3, window_s: float = 30.0) -> None:
    """Put one RepeatFilter on every handler of `logger` (the root logger by default)."""
    target = logger or logging.getLogger()
    repeats = RepeatFilter(burst=burst, window_s=window_s)
    for handler in target.handlers:
        if not any(isinstance(existing, RepeatFilter) for existing in handler.filters):
            handler.addFilter(repeats)
