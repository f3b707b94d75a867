"""State the services keep on disk, readable by its owner only: directories 0700, files 0600.

What tagstream keeps on disk (the embedded journal: phone numbers and e-mail addresses; the tagger's
RocksDB state) is private whatever the umask: modes are set explicitly after creating, because a
umask can only remove permissions.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("tagstream.files")

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600


def private_directory(path: Path, *, tighten: bool = False) -> Path:
    """Create `path` and any missing parent as 0700 (existing ones are left as they are); returns it.

    faust creates only the last level of the tagger's datadir, so a datadir under a parent that does
    not exist yet (a fresh volume mount point, ~/.local/share/...) stopped the worker at start.
    `tighten` makes an existing `path` 0700 too: the embedded node's data directory, which an older
    version created 0755.
    """
    missing = [directory for directory in (path, *path.parents) if not directory.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=DIRECTORY_MODE, exist_ok=True)
        directory.chmod(DIRECTORY_MODE)  # mkdir's mode is filtered by the umask
    if not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory")
    if tighten and stat.S_IMODE(path.stat().st_mode) != DIRECTORY_MODE:
        try:
            path.chmod(DIRECTORY_MODE)
        except PermissionError:  # not its owner (a volume's root shared through a group): its files are 0600
            log.warning("%s: cannot make the data directory private (not its owner); its files are 0600", path)
    return path


def open_private(path: Path, *, truncate: bool = False) -> BinaryIO:
    """`path` opened for appending in binary (`truncate`: emptied first), created 0600; an existing
    file is made 0600 too."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else os.O_APPEND)
    descriptor = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(descriptor, FILE_MODE)
        return os.fdopen(descriptor, "wb" if truncate else "ab")
    except BaseException:
        os.close(descriptor)
        raise
