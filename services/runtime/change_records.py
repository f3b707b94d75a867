"""Tag-change records as the projector writes them, validated completely at a fraction of a model's cost.

The tagger writes every change as compact JSON in the contract's field order (services/engine/changes.py):

    {"schema_version":1,"customer_id":C  MIDDLE  ,"caused_by":X,"occurred_at":"T","seq":N}

where MIDDLE is `,"group_id":…,"tag_id":…,"change":…,"source":…,"reason":{…},"group_version":V`. The
middle repeats across customers (a shop's rules give a few thousand distinct ones, observed values
included); the customer, cause and instant repeat across the changes of one event; only `seq` is
new in every record. Validating each record whole as `TagChanged` was most of the projector's CPU,
so `ChangeDecoder` validates a record of that shape in its pieces: the middle by `TagChanged` itself
beside placeholder values for the other fields, the customer and tail by those three fields of
`TagChanged` alone; and a piece it has validated before is not validated again.

Why the pieces' verdicts are the whole record's: `TagChanged` checks nothing across its fields, so a
document is valid exactly when each field's JSON is, and each field's value depends on its own JSON
only. The pieces are cut at key boundaries a JSON string cannot hold unescaped (inside a string a
quote is always `\\"`), and a record is taken apart only when:
- `C` is a plain JSON string (no quote or backslash inside),
- the middle names none of the outer keys (`schema_version`, `customer_id`, `caused_by`,
  `occurred_at`, `seq`) anywhere, so no piece can override another's field,
- the tail holds exactly the `caused_by` and `occurred_at` keys before `"seq":N}`, N a plain integer
  (no sign, fraction or leading zero) within the contract's bound.
Anything else, and any piece that fails, goes to `TagChanged.model_validate_json` on the whole record,
which decides (and words the error). So this never accepts a record the model refuses, and gives
the values the model gives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError, create_model

from schemas.common import Contract
from schemas.limits import MAX_SEQ
from schemas.tags import TagChanged
from services.engine.timeutil import to_us
from services.runtime.history_codec import (
    CAUSED_MARKER,
    GROUP_MARKER,
    RECORD_START,
    cut_observed,
    event_bytes,
    headed_entry,
    split_change,
)

_SEQ = b',"seq":'
_DIGITS = re.compile(rb"[1-9][0-9]{0,18}")
_PLAIN_STRING = re.compile(rb'"[^"\\]*"')
_OUTER_KEYS = (b'"schema_version":', b'"customer_id":', b'"caused_by":', b'"occurred_at":', b'"seq":')
_SOME_CUSTOMER = b'"c"'
_SOME_TAIL = b',"caused_by":null,"occurred_at":"2026-01-01T00:00:00Z","seq":1}'
"""A valid customer and tail, beside which a record's middle is validated."""
_MIDDLES_KEPT = 16_384
_OCCURRENCES_KEPT = 4_096


@dataclass(frozen=True, slots=True)
class Middle:
    """What a record's middle says: the change itself, and its history entry's head and slots
    (history_codec.py, format 2)."""

    group_id: str
    tag_id: str
    change: str
    source: str
    group_version: int
    head: bytes
    slots: bytes


@dataclass(frozen=True, slots=True)
class Occurrence:
    """Who and when: shared by the changes of one event (or one timer run) for one customer."""

    customer_id: str
    caused_by: str | None
    occurred_us: int
    event: bytes
    """The instant and `caused_by` as a history entry holds them."""


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One tag change, valid by the contract, in the pieces the read model writes."""

    seq: int
    occurrence: Occurrence
    middle: Middle

    @property
    def customer_id(self) -> str:
        return self.occurrence.customer_id

    @property
    def head(self) -> bytes:
        return self.middle.head

    def entry(self, head_number: int, *, same_event: bool = False) -> bytes:
        """The history entry (history_codec.headed_entry; format 3 with `same_event`)."""
        middle, event = self.middle, None if same_event else self.occurrence.event
        return headed_entry(middle.head, head_number, self.seq, event, middle.slots)


def change_record(change: TagChanged, record: bytes | None = None) -> ChangeRecord:
    """A validated change in the read model's pieces; `record`: the JSON it was validated from."""
    split = split_change(change, record)
    occurrence = Occurrence(change.customer_id, change.caused_by, to_us(change.occurred_at), split.event)
    middle = Middle(
        change.group_id, change.tag_id, change.change, change.source, change.group_version, split.head, split.slots
    )
    return ChangeRecord(change.seq, occurrence, middle)


class ChangeDecoder:
    """Validates tag-change records (module docstring), remembering the pieces it has seen. One per
    consumer: not shared between threads."""

    def __init__(self) -> None:
        self._middles: dict[bytes, Middle] = {}
        self._occurrences: dict[bytes, Occurrence] = {}

    def decode(self, record: bytes) -> ChangeRecord:
        """Raises pydantic's ValidationError for a record `TagChanged` refuses."""
        found = self._in_pieces(record)
        if found is not None:
            return found
        return change_record(TagChanged.model_validate_json(record), record)

    def _in_pieces(self, record: bytes) -> ChangeRecord | None:
        if not record.startswith(RECORD_START):
            return None
        middle_at = record.find(GROUP_MARKER, len(RECORD_START))
        tail_at = record.rfind(CAUSED_MARKER)
        seq_at = record.rfind(_SEQ)
        if middle_at < 0 or tail_at < middle_at or seq_at < tail_at or not record.endswith(b"}"):
            return None
        digits = record[seq_at + len(_SEQ) : -1]
        if _DIGITS.fullmatch(digits) is None:
            return None
        seq = int(digits)
        if seq > MAX_SEQ:
            return None
        who = record[len(RECORD_START) : middle_at] + record[tail_at:seq_at]
        occurrence = self._occurrences.get(who)
        if occurrence is None:
            occurrence = _occurrence(record[len(RECORD_START) : middle_at], record[tail_at:seq_at])
            if occurrence is None:
                return None
            if len(self._occurrences) >= _OCCURRENCES_KEPT:
                self._occurrences.clear()
            self._occurrences[who] = occurrence
        what = record[middle_at:tail_at]
        middle = self._middles.get(what)
        if middle is None:
            middle = _middle(what)
            if middle is None:
                return None
            if len(self._middles) >= _MIDDLES_KEPT:
                self._middles.clear()
            self._middles[what] = middle
        return ChangeRecord(seq, occurrence, middle)


_WHO_AND_WHEN = ("customer_id", "caused_by", "occurred_at")
_FIELDS: dict[str, Any] = {
    name: (TagChanged.model_fields[name].annotation, TagChanged.model_fields[name]) for name in _WHO_AND_WHEN
}
_WhoAndWhen = create_model("_WhoAndWhen", __base__=Contract, **_FIELDS)
"""`TagChanged`'s own definitions of those three fields (type, bounds, validators), alone: a third of
the model's cost."""


def _occurrence(customer: bytes, tail: bytes) -> Occurrence | None:
    """The customer (`"…"`) and the tail before `,"seq":` (`,"caused_by":X,"occurred_at":"T"`), or
    None when they are not that or not valid."""
    if _PLAIN_STRING.fullmatch(customer) is None or tail.count(b',"') != 2:
        return None
    try:
        valid = _WhoAndWhen.model_validate_json(b'{"customer_id":' + customer + tail + b"}")
    except ValidationError:
        return None
    customer_id, caused_by, occurred_at = (getattr(valid, name) for name in _WHO_AND_WHEN)
    us = to_us(occurred_at)
    return Occurrence(customer_id, caused_by, us, event_bytes(us, caused_by))


def _middle(middle: bytes) -> Middle | None:
    if any(key in middle for key in _OUTER_KEYS):
        return None
    try:
        change = TagChanged.model_validate_json(RECORD_START + _SOME_CUSTOMER + middle + _SOME_TAIL)
    except ValidationError:
        return None
    head, slots = cut_observed(middle)
    return Middle(change.group_id, change.tag_id, change.change, change.source, change.group_version, head, slots)
