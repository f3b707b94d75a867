"""Directories the services keep state in: created with their missing parents, readable by the owner only."""

from __future__ import annotations

from pathlib import Path


def private_directory(path: Path) -> Path:
    """Create `path` and any missing parent as 0700 (existing ones are left as they are); returns it.

    faust creates only the last level of the tagger's datadir, so a datadir under a parent that does
    not exist yet (a fresh volume mount point, ~/.local/share/...) stopped the worker at start.
    """
    missing = [directory for directory in (path, *path.parents) if not directory.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
        directory.chmod(0o700)  # mkdir's mode is filtered by the umask
    if not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory")
    return path
