"""The playbooks in force: the file, reloaded when it changes, or the set last replaced over the API.

A Kubernetes ConfigMap mount swaps a symlink rather than rewriting the file, so the check compares
what `stat` says about the target (inode, size, mtime), not only the mtime. A file that fails to
load keeps the previous playbooks in force, and is logged and counted. Once a set has been replaced
over the API (`PUT /v1/playbooks`, kept in the PlaybookStore) it is in force instead of the file,
and every replica picks up a newer version at its next check, in both modes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from services.notifier.metrics import NotifierMetrics
from services.notifier.policy import PlaybookError, PlaybookSet, load_playbooks
from services.runtime.playbooks import PlaybookStore, StoredPlaybooks

log = logging.getLogger("tagstream.notifier.playbooks")


class PlaybookFile:
    def __init__(self, path: Path, metrics: NotifierMetrics | None = None) -> None:
        """Loads the file now: a notifier must not start on a bad playbooks file (raises PlaybookError)."""
        self.path = path
        self._metrics = metrics
        self._seen = self._stamp()
        self.from_file = self._load()
        self._store: PlaybookStore | None = None
        self.stored: StoredPlaybooks | None = None
        self._count()

    @property
    def current(self) -> PlaybookSet:
        return self.stored.playbooks if self.stored is not None else self.from_file

    def __call__(self) -> PlaybookSet:
        return self.current

    async def follow(self, store: PlaybookStore) -> None:
        """Use the sets replaced over the API from now on (read now, then at every check)."""
        self._store = store
        await self.refresh()

    async def refresh(self) -> bool:
        """Read the store; True when a newer version is in force."""
        if self._store is None:
            return False
        try:
            stored = await self._store.current()
        except Exception as error:  # Redis briefly away: keep what is in force, try at the next check
            log.warning("kept the playbooks in force: cannot read the stored ones: %s", error)
            return False
        if stored is None or (self.stored is not None and stored.version == self.stored.version):
            return False
        self.stored = stored
        log.info(
            "playbooks version %d in force (%d playbooks, by %s)",
            stored.version,
            len(stored.playbooks.playbooks),
            stored.actor,
        )
        self._count()
        return True

    def poll(self) -> bool:
        """Reload if the file changed; True when new playbooks are in force."""
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        self._seen = stamp
        try:
            self.from_file = self._load()
        except (OSError, PlaybookError) as error:
            log.error("kept the previous playbooks: %s", error)
            if self._metrics is not None:
                self._metrics.playbook_errors.inc()
            return False
        log.info("loaded %d playbooks from %s", len(self.from_file.playbooks), self.path)
        if self.stored is not None:
            log.warning("%s changed, but the playbooks replaced over the API stay in force", self.path)
        self._count()
        return True

    async def watch(self, interval_s: float, stopping: asyncio.Event) -> None:
        """Poll every `interval_s` until `stopping` is set (or the task is cancelled)."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval_s)
            self.poll()
            await self.refresh()

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
