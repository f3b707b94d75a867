"""The embedded mode's local file: an append-only journal of everything that changed its state.

Each entry is one JSON line, written and fsynced before the change is acknowledged, and only after
it was checked to replay (node.py validates a write to the end before journaling it). At start the
journal is replayed in order through the same code, which rebuilds the same state (the engine is
deterministic given the clock instants recorded with each input, invariant 2). A torn last line (the
process died mid-write) was never acknowledged and is dropped on the next open. The journal holds
phone numbers and e-mail addresses: its directory is 0700 and its files 0600 (services/runtime/files.py).

A line that cannot be replayed (hand-edited, damaged on disk, or written by a version with a bug)
stops the start with its file and line (JournalError); only the operator's
`--skip-bad-journal-lines` sets such lines aside, into `<journal>.rejected`, and rewrites the
journal without them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from schemas.excerpt import excerpt
from services.runtime.files import open_private, private_directory

log = logging.getLogger("tagstream.embedded")

Entry = dict[str, Any]


class JournalError(Exception):
    """A journal line that cannot be replayed; the node does not start on it."""

    def __init__(self, path: Path, line: int, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(
            f"{path}:{line}: this journal entry cannot be replayed: {reason}. The node did not start. "
            f"Restore the file from a backup, or start once with --skip-bad-journal-lines to move every "
            f"such line to {path.name}.rejected (the writes they hold are then lost)"
        )


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None
        self.entries = 0

    @property
    def rejected_path(self) -> Path:
        return self.path.with_name(self.path.name + ".rejected")

    def replay(self) -> Iterator[tuple[int, Entry | JournalError]]:
        """Every complete line, oldest first, with its line number: the entry, or why it is not one.
        Call before `open`."""
        if not self.path.exists():
            return
        good = 0
        with self.path.open("rb") as source:
            for number, line in enumerate(source, start=1):
                if not line.endswith(b"\n"):
                    log.warning("%s: dropping a torn last entry (%d bytes, never acknowledged)", self.path, len(line))
                    break
                good += len(line)
                self.entries += 1
                yield number, self._entry(number, line)
        if good < self.path.stat().st_size:
            with self.path.open("r+b") as target:
                target.truncate(good)

    def set_aside(self, bad: dict[int, str]) -> None:
        """Move the lines numbered in `bad` (with the reason each failed) to the rejected file and
        rewrite the journal without them, atomically (a crash leaves the old or the new journal)."""
        with open_private(self.rejected_path) as rejected:
            kept = self.path.with_name(self.path.name + ".tmp")
            with self.path.open("rb") as source, open_private(kept, truncate=True) as target:
                for number, line in enumerate(source, start=1):
                    if number in bad:
                        aside = {"line": number, "reason": bad[number], "entry": line.decode(errors="replace")}
                        rejected.write(orjson.dumps(aside) + b"\n")
                    else:
                        target.write(line)
                target.flush()
                os.fsync(target.fileno())
            rejected.flush()
            os.fsync(rejected.fileno())
        os.replace(kept, self.path)
        self.entries = 0

    def open(self) -> None:
        private_directory(self.path.parent, tighten=True)
        self._file = open_private(self.path)

    def append(self, *entries: Entry) -> None:
        """Durable when it returns (flushed and fsynced)."""
        if self._file is None:
            raise RuntimeError("the journal is not open")
        self._file.write(b"".join(orjson.dumps(entry, option=orjson.OPT_UTC_Z) + b"\n" for entry in entries))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.entries += len(entries)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _entry(self, number: int, line: bytes) -> Entry | JournalError:
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError as error:
            return JournalError(self.path, number, f"not JSON ({error}): {excerpt(line)}")
        if not isinstance(entry, dict) or not isinstance(entry.get("k"), str):
            return JournalError(self.path, number, f"not a journal entry: {excerpt(line)}")
        return entry
