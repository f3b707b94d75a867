"""The playbooks file, reloaded when it changes, without a restart.

A Kubernetes ConfigMap mount swaps a symlink rather than rewriting the file, so the check compares
what `stat` says about the target (inode, size, mtime), not only the mtime. A file that fails to
load keeps the previous playbooks in force, and is logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from services.notifier.metrics import NotifierMetrics
from services.notifier.policy import PlaybookError, PlaybookSet, load_playbooks

log = logging.getLogger("tagstream.notifier.playbooks")


class PlaybookFile:
    def __init__(self, path: Path, metrics: NotifierMetrics | None = None) -> None:
        """Loads the file now: a notifier must not start on a bad playbooks file (raises PlaybookError)."""
        self.path = path
        self._metrics = metrics
        self._seen = self._stamp()
        self.current = self._load()
        self._count()

    def __call__(self) -> PlaybookSet:
        return self.current

    def poll(self) -> bool:
        """Reload if the file changed; True when new playbooks are in force."""
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        self._seen = stamp
        try:
            self.current = self._load()
        except (OSError, PlaybookError) as error:
            log.error("kept the previous playbooks: %s", error)
            if self._metrics is not None:
                self._metrics.playbook_errors.inc()
            return False
        log.info("loaded %d playbooks from %s", len(self.current.playbooks), self.path)
        self._count()
        return True

    async def watch(self, interval_s: float, stopping: asyncio.Event) -> None:
        """Poll every `interval_s` until `stopping` is set (or the task is cancelled)."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval_s)
            self.poll()

    def _load(self) -> PlaybookSet:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as error:
            raise PlaybookError(f"{self.path}: cannot read: {error.strerror}") from None
        return load_playbooks(text, str(self.path))

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def _count(self) -> None:
        if self._metrics is not None:
            self._metrics.playbooks.set(len(self.current.playbooks))
