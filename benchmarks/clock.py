"""The benchmark's clock: the instant written in a file, so a run moves every worker's time at once.

A worker draining a backlog stamped with last summer's dates must not wake customers at today's
wall time: its timers would move them past events still queued, and the run would no longer equal
`tagstream replay` of the same events. The harness writes the workload's first instant before a
worker starts (nothing is due then) and its last one once the backlog is drained (every flip left
fires, as the replay's end does).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path


class FileClock:
    """`now()` is the ISO 8601 instant in `path`, re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._seen: tuple[int, int] | None = None
        self._now = datetime.fromtimestamp(0, UTC)

    def now(self) -> datetime:
        stat = os.stat(self._path)
        version = (stat.st_mtime_ns, stat.st_size)
        if version != self._seen:
            self._now = datetime.fromisoformat(self._path.read_text().strip()).astimezone(UTC)
            self._seen = version
        return self._now

    @staticmethod
    def set(path: Path, moment: datetime) -> None:
        """Move the clock: written beside and renamed, so a reader never sees half an instant."""
        if moment.tzinfo is None:
            raise ValueError("the benchmark clock needs an aware instant")
        partial = path.with_suffix(".partial")
        partial.write_text(moment.astimezone(UTC).isoformat())
        os.replace(partial, path)
