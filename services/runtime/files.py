"""State files only their owner can read: directories 0700, files 0600, whatever the umask.

What tagstream keeps on disk (the embedded journal, the tagger's RocksDB state) holds customer ids,
phone numbers and e-mail addresses. The modes are set explicitly (chmod after creating) because a
umask can only remove permissions, and a directory or file left by an older version keeps its mode.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("tagstream.files")

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600


def private_directory(path: Path) -> Path:
    """Create `path` (and missing parents) and make it 0700."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        path.chmod(DIRECTORY_MODE)
    except PermissionError:
        # e.g. a Kubernetes volume's root, owned by root and shared through the pod's fsGroup: the
        # files in it are still 0600.
        log.warning("%s: cannot make the data directory private (not its owner); its files are 0600", path)
    return path


def open_private(path: Path) -> BinaryIO:
    """`path` opened for appending in binary, created 0600 (an existing file is made 0600 too)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        os.fchmod(descriptor, FILE_MODE)
        return os.fdopen(descriptor, "ab")
    except BaseException:
        os.close(descriptor)
        raise
