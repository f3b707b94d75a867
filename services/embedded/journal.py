"""The embedded mode's local file: an append-only journal of everything that changed its state.

Each entry is one JSON line, written and fsynced before the change is acknowledged. At start the
journal is replayed in order through the same code, which rebuilds the same state (the engine is
deterministic given the clock instants recorded with each input, invariant 2). A torn last line (the
process died mid-write) was never acknowledged and is dropped on the next open. It holds phone numbers
and e-mail addresses: the directory is 0700 and the file 0600 (services/runtime/files.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from services.runtime.files import open_private, private_directory

log = logging.getLogger("tagstream.embedded")

Entry = dict[str, Any]


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None
        self.entries = 0

    def replay(self) -> Iterator[Entry]:
        """Every complete entry, oldest first; call before `open`."""
        if not self.path.exists():
            return
        good = 0
        with self.path.open("rb") as source:
            for line in source:
                if not line.endswith(b"\n"):
                    log.warning("%s: dropping a torn last entry (%d bytes, never acknowledged)", self.path, len(line))
                    break
                good += len(line)
                self.entries += 1
                yield orjson.loads(line)
        if good < self.path.stat().st_size:
            with self.path.open("r+b") as target:
                target.truncate(good)

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
