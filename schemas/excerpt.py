"""How errors quote what they refuse: a short excerpt, never the whole value.

Every validation message (HTTP 422 bodies, CLI errors, dead letters) goes through `excerpt`, so a
hostile document cannot turn its own error into megabytes (a YAML alias bomb's repr is ~80 MB)
and control characters reach logs escaped, as repr writes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from pydantic import ValidationError

from schemas.limits import EXCERPT_CHARS
from schemas.safe_text import SAFE_TEXT_MESSAGE, SAFE_TEXT_PATTERN

PERSONAL_FIELDS: Final = frozenset({"gender", "birth_date", "region", "family", "custom"})
"""Fields of `profile_updated` whose values are personal data: errors name them, never quote them."""
WITHHELD: Final = "(withheld: personal data)"

_MESSAGE_CHARS = 3 * EXCERPT_CHARS
_WIDE_INT_BITS = 256


def excerpt(value: object, limit: int = EXCERPT_CHARS) -> str:
    """`repr(value)` cut to `limit` characters; containers and very wide integers are described instead."""
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > _WIDE_INT_BITS:
        return f"an integer of {value.bit_length()} bits"  # repr of a huge int is slow, or refused
    if isinstance(value, str | bytes):
        value = value[: limit + 1]
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def problems(error: ValidationError | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """pydantic's errors (or FastAPI's list of them) with every `input` cut to an excerpt, or withheld
    under a personal field (PERSONAL_FIELDS), and no `ctx` (it may hold the value)."""
    found = []
    listed = error.errors(include_url=False) if isinstance(error, ValidationError) else error
    for problem in listed:
        shown: dict[str, Any] = {
            "loc": list(problem["loc"]),
            "msg": _short(_message(problem)),
            "type": problem["type"],
        }
        if problem["type"] != "missing":
            personal = not PERSONAL_FIELDS.isdisjoint(part for part in problem["loc"] if isinstance(part, str))
            shown["input"] = WITHHELD if personal else excerpt(problem.get("input"))
        found.append(shown)
    return found


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem: the dotted path to the field, what is wrong, and an excerpt of the value."""
    lines = []
    for problem in problems(error):
        where = ".".join(str(part) for part in problem["loc"]) or "(document)"
        got = f" (got {problem['input']})" if "input" in problem else ""
        lines.append(f"{where}: {problem['msg']}{got}")
    return "; ".join(lines)


def _message(problem: Mapping[str, Any]) -> str:
    context = problem.get("ctx")
    if problem["type"] == "string_pattern_mismatch" and context and context.get("pattern") == SAFE_TEXT_PATTERN:
        return SAFE_TEXT_MESSAGE  # not pydantic's "should match pattern" quoting the whole character class
    return str(problem["msg"])


def _short(message: str) -> str:
    return message if len(message) <= _MESSAGE_CHARS else message[: _MESSAGE_CHARS - 1] + "…"
