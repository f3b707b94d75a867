"""Which characters ids and short texts may hold: the one definition shared by the contracts (checked by
pydantic's core) and the error wording (`schemas.excerpt`)."""

from __future__ import annotations

from typing import Final

UNSAFE_CHARACTERS: Final = "\\x00-\\x1F\\x7F-\\x9F\\u061C\\u200E\\u200F\\u2028-\\u202E\\u2066-\\u2069\\uFEFF"
"""C0 and C1 controls, DEL, line/paragraph separators and the bidi marks, embeddings, overrides and
isolates (and a stray BOM): characters that forge log lines or make one id display as another."""

SAFE_TEXT_PATTERN: Final = f"^[^{UNSAFE_CHARACTERS}]*$"
"""Ids and short texts match this, checked by pydantic's core rather than by a Python validator (a call
per id of every event on the replay's hot path); `schemas.excerpt.problems` words a mismatch as
SAFE_TEXT_MESSAGE."""

SAFE_TEXT_MESSAGE: Final = "must not contain control or invisible formatting characters"
