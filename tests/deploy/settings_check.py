"""Do the environment variables a manifest sets load as valid tagstream settings?

Shared by the chart and docker-compose tests: a renamed or mistyped setting is caught here, not at
3 a.m. in a crash-looping pod.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from pydantic import BaseModel

from services.runtime.settings import Settings

PREFIX = "TAGSTREAM_"
# Sections whose services are being written on other branches: their variables are checked once their
# settings class is on Settings (then this set shrinks to nothing and the check covers them).
PENDING_SECTIONS = frozenset({"ingest", "notifier"}) - set(Settings.model_fields)


def unknown_settings(env: Mapping[str, str]) -> list[str]:
    """TAGSTREAM_* names that match no settings field (pydantic-settings would silently ignore them)."""
    unknown = []
    for name in env:
        if not name.startswith(PREFIX):
            continue
        section, _, field = name.removeprefix(PREFIX).lower().partition("__")
        if section in PENDING_SECTIONS:
            continue
        model = Settings.model_fields.get(section)
        annotation = model.annotation if model else None
        if not (
            isinstance(annotation, type) and issubclass(annotation, BaseModel) and field in annotation.model_fields
        ):
            unknown.append(name)
    return unknown


def load(env: Mapping[str, str]) -> Settings:
    """Settings() as the service would build them from exactly this environment."""
    with _only_environment(env):
        return Settings()


@contextmanager
def _only_environment(env: Mapping[str, str]) -> Iterator[None]:
    saved = {name: value for name, value in os.environ.items() if name.startswith(PREFIX)}
    for name in saved:
        del os.environ[name]
    os.environ.update(env)
    try:
        yield
    finally:
        for name in env:
            os.environ.pop(name, None)
        os.environ.update(saved)
