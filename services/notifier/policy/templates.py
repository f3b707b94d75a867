"""Message texts over an allow-listed context, so a template cannot reach other data.

The language (placeholders, fallbacks, a line dropped for a missing value) is schemas/templates.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from schemas.templates import PLACEHOLDERS, TOKEN


def render(text: str, context: Mapping[str, str | None]) -> str:
    """Fill the placeholders; a missing value renders its fallback, or drops its line (schemas/templates.py)."""
    kept = []
    for line in text.split("\n"):
        dropped = False

        def fill(token: re.Match[str]) -> str:
            nonlocal dropped
            if token["escaped"] is not None:
                return "$"
            name = token["braced"] or token["bare"]
            value = context.get(name) if name in PLACEHOLDERS else None
            if value:
                return value
            if token["fallback"] is not None:
                return token["fallback"]
            dropped = True
            return ""

        rendered = TOKEN.sub(fill, line)
        if not dropped:
            kept.append(rendered)
    return "\n".join(kept)
