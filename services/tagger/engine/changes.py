"""Tag changes as the engine emits them: a light record, serialised straight to the TagChanged JSON.

The engine can emit several changes per event; building pydantic models for each (and their
reasons) cost more than the rest of the evaluation. `Change.to_json()` writes exactly the JSON of
`schemas.tags.TagChanged` (tests hold the two together) and `to_message()` gives the validated model
for in-process consumers.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import orjson

from schemas.common import SCHEMA_VERSION
from schemas.tags import ChangeSource, Condition, TagChanged
from services.tagger.engine.timeutil import from_us

Outcome = tuple[Condition, Any, bool]
"""A condition, the customer's observed value (None when absent) and whether it matched."""


@dataclass(frozen=True, slots=True)
class Change:
    customer_id: str
    group_id: str
    tag_id: str
    change: Literal["added", "removed"]
    source: ChangeSource
    summary: str
    outcomes: tuple[Outcome, ...]
    group_version: int
    caused_by: str | None
    occurred_us: int
    seq: int

    def to_json(self) -> bytes:
        return orjson.dumps(self._document(), default=_default, option=orjson.OPT_UTC_Z)

    def to_message(self) -> TagChanged:
        return TagChanged.model_validate_json(self.to_json())

    def _document(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "customer_id": self.customer_id,
            "group_id": self.group_id,
            "tag_id": self.tag_id,
            "change": self.change,
            "source": self.source,
            "reason": {
                "summary": self.summary,
                "conditions": [
                    _outcome(condition, observed, matched) for condition, observed, matched in self.outcomes
                ],
            },
            "group_version": self.group_version,
            "caused_by": self.caused_by,
            "occurred_at": from_us(self.occurred_us),
            "seq": self.seq,
        }


def _outcome(condition: Condition, observed: Any, matched: bool) -> dict[str, Any]:
    window = condition.window
    return {
        "metric": condition.metric,
        "op": condition.op,
        "value": condition.value,
        "window": None
        if window is None
        else {
            "last": window.last,
            "from": None if window.from_ is None else window.from_.isoformat(),
            "to": None if window.to is None else window.to.isoformat(),
        },
        "observed": observed,
        "matched": matched,
    }


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} in a tag change")
