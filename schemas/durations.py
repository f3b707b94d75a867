"""Durations as operators write them in settings and playbooks: `0`, `45s`, `30m`, `12h`, `3d`, `1w`."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any

from schemas.excerpt import excerpt
from schemas.limits import MAX_DURATION

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(value: Any) -> timedelta:
    """`0`, `45s`, `30m`, `12h`, `3d`, `1w` (a bare number is seconds) or a timedelta; at most MAX_DURATION."""
    seconds: float
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"a duration is a number of seconds or text like '3d', got {excerpt(value)}")
    elif isinstance(value, int) and value >= 0:
        seconds = value
    else:
        match = _DURATION.match(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"not a duration: {excerpt(value)}; write e.g. 0, 90s, 30m, 12h, 3d or 1w")
        digits = match.group(1).lstrip("0") or "0"
        seconds = int(digits) * _UNITS[match.group(2)] if len(digits) <= 12 else math.inf
    # bounded before building a timedelta: 99999999999999999999d overflows it, and 999999999d
    # overflows the instant it is added to
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"must be at most {MAX_DURATION.days}d, got {excerpt(value)}")
    return value if isinstance(value, timedelta) else timedelta(seconds=seconds)
