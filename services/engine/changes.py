"""Tag changes as the engine emits them: a light record, serialised straight to the TagChanged JSON.

The engine can emit several changes per event; building pydantic models for each (and their
reasons) cost more than the rest of the evaluation. `TagChange.to_json()` writes exactly the JSON of
`schemas.tags.TagChanged` (tests hold the two together) and `to_message()` gives the validated model
for in-process consumers.

Serialising is per change and a replay writes several per event, so the JSON is assembled from
pieces and the pieces that repeat are serialised once: the group/tag/change/source labels, summaries,
a condition's `metric`/`op`/`value`/`window` (per Condition object) and the latest instant. Every
piece is orjson's own output, so the bytes are exactly those of `orjson.dumps` of the whole document
(`_outcome` is that document's condition entry). Any change here must keep replay outputs
byte-identical: compare `tagstream replay --changes` output before and after.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final, Literal

import orjson

from schemas.common import SCHEMA_VERSION
from schemas.tags import ChangeSource, Condition, TagChanged
from services.engine.timeutil import DAY_US, SECOND_US, days_us, from_us

ConditionOutcome = tuple[Condition, Any, bool]
"""A condition, the customer's observed value (None when absent) and whether it matched."""


class TagChange:
    """One tag flip, immutable by convention. A plain class with slots rather than a named tuple or
    a frozen dataclass: compiled, building one is a direct call and its fields are read as native
    attributes (a named tuple's fields are checked and unboxed per read and building one goes
    through `tuple.__new__`; a frozen dataclass's `__init__` sets each field through `object.__setattr__`)."""

    __slots__ = (
        "caused_by",
        "change",
        "customer_id",
        "group_id",
        "group_version",
        "occurred_us",
        "outcomes",
        "seq",
        "source",
        "summary",
        "tag_id",
    )

    def __init__(
        self,
        customer_id: str,
        group_id: str,
        tag_id: str,
        change: Literal["added", "removed"],
        source: ChangeSource,
        summary: str,
        outcomes: tuple[ConditionOutcome, ...],
        group_version: int,
        caused_by: str | None,
        occurred_us: int,
        seq: int,
    ) -> None:
        self.customer_id = customer_id
        self.group_id = group_id
        self.tag_id = tag_id
        self.change: Literal["added", "removed"] = change
        self.source: ChangeSource = source
        self.summary = summary
        self.outcomes = outcomes
        self.group_version = group_version
        self.caused_by = caused_by
        self.occurred_us = occurred_us
        self.seq = seq

    def fields(self) -> tuple[Any, ...]:
        """Every field, in contract order."""
        return (
            self.customer_id,
            self.group_id,
            self.tag_id,
            self.change,
            self.source,
            self.summary,
            self.outcomes,
            self.group_version,
            self.caused_by,
            self.occurred_us,
            self.seq,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TagChange) and self.fields() == other.fields()

    def __hash__(self) -> int:
        return hash(self.fields())

    def __repr__(self) -> str:
        return (
            f"TagChange({self.customer_id!r}, {self.group_id!r}/{self.tag_id!r} {self.change}, "
            f"source={self.source!r}, seq={self.seq}, at={self.occurred_us}, caused_by={self.caused_by!r}, "
            f"summary={self.summary!r})"
        )

    def to_json(self) -> bytes:
        return serialise(self, b"")

    def to_json_line(self) -> bytes:
        """`to_json()` and a newline, for JSON-lines output."""
        return serialise(self, b"\n")

    def to_message(self) -> TagChanged:
        return TagChanged.model_validate_json(self.to_json())


def json_line(change: TagChange) -> bytes:
    """`change.to_json_line()` as a plain function, for callers that write many."""
    return serialise(change, b"\n")


def serialise(change: TagChange, end: bytes) -> bytes:
    """The TagChanged document exactly as `orjson.dumps` writes it (compact, keys in contract order,
    Decimals as strings, the instant with a Z), assembled from cached pieces, then `end`."""
    customer_id = change.customer_id
    group_id = change.group_id
    tag_id = change.tag_id
    kind = change.change
    source = change.source
    summary = change.summary
    outcomes = change.outcomes
    version = change.group_version
    caused_by = change.caused_by
    us = change.occurred_us
    seq = change.seq
    if len(outcomes) == 1:  # most changes: one condition, no list to build and join
        condition, observed, matched = outcomes[0]
        conditions = _outcome_json(condition, observed, matched)
    else:
        conditions = b",".join(
            [_outcome_json(condition, observed, matched) for condition, observed, matched in outcomes]
        )
    head = _HEADS.get((group_id, tag_id, kind, source, summary))
    if head is None:
        head = _head(group_id, tag_id, kind, source, summary)
    last = _LAST
    if last.customer_id != customer_id:
        last.customer_id = customer_id
        last.start = _HEAD + _dumps(customer_id)
    if last.caused_by != caused_by or last.us != us:
        if last.caused_by != caused_by:
            last.caused_by = caused_by
            last.caused_json = _dumps(caused_by)
        if last.us != us:
            last.us = us
            last.instant_json = _instant_json(us)
        last.tail = b"%b%b%b%b%b" % (_CAUSED_BY, last.caused_json, _OCCURRED_AT, last.instant_json, _SEQ)
    return b'%b%b%b]},"group_version":%d%b%d}%b' % (last.start, head, conditions, version, last.tail, seq, end)


_dumps: Final = orjson.dumps
"""Compiled, a Final name is a C static: no module attribute lookup per call."""
_CAUSED_BY: Final = b',"caused_by":'
_OCCURRED_AT: Final = b',"occurred_at":'
_SEQ: Final = b',"seq":'


def _instant_json(us: int) -> bytes:
    """The JSON of `from_us(us)` exactly as orjson writes it with OPT_UTC_Z: the date as orjson
    writes it (cached per day), then HH:MM:SS, then .ffffff when there are microseconds, then Z.
    Building a datetime (and a timedelta) per instant cost more than the rest of a change."""
    last = _LAST
    day = us // DAY_US
    start = days_us(day)
    if day != last.day:
        whole = orjson.dumps(from_us(start), option=orjson.OPT_UTC_Z)
        last.day = day
        last.day_json = whole[: whole.index(b"T") + 1]
    seconds = (us - start) // SECOND_US
    micro = us - start - seconds * SECOND_US
    hours = seconds // 3600
    minutes = seconds // 60 - hours * 60
    seconds = seconds - (hours * 60 + minutes) * 60
    two = _TWO_DIGITS  # zero-padded pieces concatenated: compiled, `%02d` formatting is a generic call
    if micro:
        return b'%b%b:%b:%b.%06dZ"' % (last.day_json, two[hours], two[minutes], two[seconds], micro)
    return last.day_json + two[hours] + b":" + two[minutes] + b":" + two[seconds] + b'Z"'


_TWO_DIGITS: Final = [b"%02d" % number for number in range(100)]


class _Last:
    """The pieces consecutive changes usually share (the same customer, cause and instant: the
    changes of one event or one timer), serialised once: the document up to the customer id, and
    from the cause to the sequence number."""

    def __init__(self) -> None:
        self.customer_id = ""
        self.start = _HEAD + orjson.dumps("")
        self.caused_by: str | None = None
        self.caused_json = orjson.dumps(None)
        self.us = 0
        self.instant_json = orjson.dumps(from_us(0), option=orjson.OPT_UTC_Z)
        self.day = 0
        self.day_json = self.instant_json[: self.instant_json.index(b"T") + 1]
        self.tail = b"%b%b%b%b%b" % (_CAUSED_BY, self.caused_json, _OCCURRED_AT, self.instant_json, _SEQ)


_HEAD: Final = b'{"schema_version":' + orjson.dumps(SCHEMA_VERSION) + b',"customer_id":'
_HEADS: Final[dict[tuple[str, str, str, str, str], bytes]] = {}
_MAX_CACHED: Final = 10_000
"""Bound on each cache below: they hold what repeats across changes (labels, summaries, condition
JSON), which is bounded by the rule book, but a cache must not grow with odd inputs forever."""


def _head(group_id: str, tag_id: str, change: str, source: str, summary: str) -> bytes:
    """The labels and the summary, up to the conditions' list: one cached piece per combination."""
    key = (group_id, tag_id, change, source, summary)
    found = _HEADS.get(key)
    if found is None:
        if len(_HEADS) >= _MAX_CACHED:
            _HEADS.clear()
        found = _HEADS[key] = b"".join(
            (
                b',"group_id":',
                orjson.dumps(group_id),
                b',"tag_id":',
                orjson.dumps(tag_id),
                b',"change":',
                orjson.dumps(change),
                b',"source":',
                orjson.dumps(source),
                b',"reason":{"summary":',
                orjson.dumps(summary),
                b',"conditions":[',
            )
        )
    return found


def _outcome(condition: Condition, observed: Any, matched: bool) -> dict[str, Any]:
    window = condition.window
    named = {} if condition.name is None else {"name": condition.name}  # as ConditionOutcome writes it
    found: dict[str, Any] = {
        "metric": condition.metric,
        **named,
        "op": condition.op,
        "value": condition.value,
        "window": None
        if window is None
        else {
            "last": window.last,
            "from": None if window.from_ is None else window.from_.isoformat(),
            "to": None if window.to is None else window.to.isoformat(),
        },
    }
    # the cycle metrics' parameters, only where a condition has them (ConditionOutcome leaves them out)
    if condition.cycle is not None:
        found["cycle"] = condition.cycle
    if condition.periods is not None:
        found["periods"] = condition.periods
    found["observed"] = observed
    found["matched"] = matched
    return found


_MATCHED: Final = (b',"matched":false}', b',"matched":true}')
_PREFIXES: Final[dict[int, tuple[Condition, bytes]]] = {}
"""id(condition) -> (the condition, its outcome JSON up to the observed value). Holding the condition
keeps its id from being reused while the entry exists."""


def _outcome_json(condition: Condition, observed: Any, matched: bool) -> bytes:
    cached = _PREFIXES.get(id(condition))
    if cached is None or cached[0] is not condition:
        if len(_PREFIXES) >= _MAX_CACHED:
            _PREFIXES.clear()  # many rule book reloads: start over rather than grow without bound
        whole = orjson.dumps(_outcome(condition, None, False), default=_default, option=orjson.OPT_UTC_Z)
        prefix = whole[: whole.rindex(b"null")]  # up to the observed value (the last null)
        cached = _PREFIXES[id(condition)] = (condition, prefix)
    if type(observed) is int:  # counts, most observed values: %d writes what orjson writes
        return b"%b%d%b" % (cached[1], observed, _MATCHED[matched])
    if type(observed) is Decimal:  # money: the string _default gives; it never needs escaping
        return b'%b"%b"%b' % (cached[1], str(observed).encode(), _MATCHED[matched])
    observed_json = orjson.dumps(observed, default=_default, option=orjson.OPT_UTC_Z)
    return cached[1] + observed_json + _MATCHED[matched]


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} in a tag change")


_LAST: Final = _Last()
