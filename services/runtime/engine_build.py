"""Which build of the engine this process runs: mypyc-compiled extensions or pure Python.

Python imports a C extension in preference to the .py beside it, so an in-place build
(`scripts/compile-engine.sh`) that is older than later edits would silently run old code. That
script records the SHA-256 of every source it compiled in `SOURCES_MANIFEST` (at the root the
packages are imported from); a source that no longer matches makes the build *stale*, which the
benchmarks and the test suite refuse. Installed wheels carry no manifest: nobody edits those.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
from dataclasses import dataclass
from pathlib import Path

SOURCES_MANIFEST = ".compiled-engine.sha256"
"""`sha256sum` lines (digest, two spaces, path relative to the import root) of the compiled sources."""
_PACKAGES = ("schemas", "services")


@dataclass(frozen=True)
class EngineBuild:
    compiled: tuple[str, ...]
    """Modules loaded from C extensions (dotted names), sorted."""
    stale: tuple[str, ...]
    """Compiled modules whose .py changed since they were compiled in place."""

    @property
    def kind(self) -> str:
        return "mypyc" if self.compiled else "python"

    def describe(self) -> str:
        if not self.compiled:
            return "pure Python"
        text = f"compiled with mypyc ({len(self.compiled)} modules)"
        if self.stale:
            text += (
                f"; STALE: {', '.join(self.stale)} changed after compiling "
                "(scripts/compile-engine.sh rebuilds, --clean goes back to pure Python)"
            )
        return text


def engine_build(root: Path | None = None) -> EngineBuild:
    """Look at what the import root holds (default: where this package was imported from)."""
    if root is None:
        root = Path(__file__).resolve().parents[2]
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    compiled: list[str] = []
    for package in _PACKAGES:
        folder = root / package
        if folder.is_dir():
            for path in folder.rglob("*.so"):
                if path.name.endswith(suffixes) and "__mypyc" not in path.name:  # not mypyc's runtime library
                    relative = path.relative_to(root)
                    stem = path.name.split(".", 1)[0]
                    compiled.append(".".join((*relative.parent.parts, stem)))
    return EngineBuild(tuple(sorted(compiled)), tuple(sorted(_stale(root))) if compiled else ())


def _stale(root: Path) -> list[str]:
    manifest = root / SOURCES_MANIFEST
    if not manifest.exists():
        return []
    stale = []
    for line in manifest.read_text().splitlines():
        digest, _, name = line.partition("  ")
        source = root / name
        if not source.exists() or hashlib.sha256(source.read_bytes()).hexdigest() != digest:
            stale.append(name.removesuffix(".py").replace("/", "."))
    return stale
