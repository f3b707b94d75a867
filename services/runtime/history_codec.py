"""How a tag change is kept in a customer's history in Redis: ~15 bytes for a ~420-byte change.

A history entry is binary behind a one-byte format tag, so readers fetch it undecoded
(ReadModel.history) whatever the client's `decode_responses`.

Format 2 (written now) splits a change in two. Its **head** — group, tag, change, source, the
reason without the observed values, group version — repeats across customers: a shop's rules give a
few hundred distinct heads, so each is kept once in the read model's head table
(`ts:heads`, readmodel.py) and an entry names it by a small number. The entry holds the rest: the
head's number, `seq`, the instant, `caused_by` and, per condition, the observed value and whether it
matched (a small int and the flag in one byte). The head is the change's own JSON between
`customer_id` and `caused_by` with each condition's `"observed":…,"matched":…` cut out, so a reader
puts the JSON back together and validates it like any record, and the projector builds an entry from
the record's bytes without a model dump. A head the table cannot take (full, or too long) is written
inline (number 0).

Format 3 is format 2 without the instant and `caused_by`, for a change with the same instant and
cause as the entry before it in the customer's history (the changes of one event): the projector
writes it for the second and later changes of one event in a run, and a history string never starts
with one (the script that cuts the oldest entries gives the new first one its instant and cause back).
`history_entries` hands out format 2 entries only.

Format 1 (written before): the change's JSON without `customer_id` and `schema_version`, deflated with
a preset dictionary; still read. The dictionary is part of that format.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from schemas.tags import TagChanged
from services.engine.timeutil import from_us, to_us

FORMAT_DEFLATED = 1
FORMAT_HEADED = 2
MAX_HEAD_BYTES = 4096
"""Longer heads (a reason of many long conditions) are written inline, never into the head table."""
INLINE = 0
"""The head number of an entry that carries its head."""

_SLOT = b"\x00"
"""Where a head had a condition's observed value (JSON never holds a raw NUL)."""
_OBSERVED = b',"observed":'
_MATCHED = b',"matched":'
RECORD_START = b'{"schema_version":1,"customer_id":'
GROUP_MARKER = b',"group_id":'
CAUSED_MARKER = b',"caused_by":'
_OCCURRED = b',"occurred_at":"'
_SMALL_INTS = 126
"""Observed values 0..125 are kept in the slot's byte; others as their JSON."""
_INT = re.compile(rb"0|[1-9][0-9]?|1[01][0-9]|12[0-5]")

_FORMAT_1 = b"\x01"
_FORMAT_2 = b"\x02"
_FORMAT_3 = b"\x03"
_DICTIONARY = (
    b'{"group_id":"","tag_id":"","change":"added","change":"removed","source":"rule","source":"time",'
    b'"source":"rule_change","source":"manual","source":"import","reason":{"summary":"","conditions":'
    b'[{"metric":"","op":"gte","op":"lte","value":,"window":null,"window":{"last":"30d"},"observed":null,'
    b'"matched":true},{"metric":"order_count","op":"eq","matched":false}]},"group_version":,'
    b'"caused_by":null,"caused_by":"","occurred_at":"2026-12-01T00:00:00.000000Z","seq":'
)
_RAW_DEFLATE = -15


class HistoryEntryInvalid(ValueError):
    """A history entry this code did not write (another format, or damaged), or one naming a head
    the table lacks."""


@dataclass(frozen=True, slots=True)
class SplitChange:
    """A change as format 2 keeps it: the head (table's) and the body (the entry's, after the head's number)."""

    head: bytes
    seq: int
    event: bytes
    """The instant and `caused_by` (`event_bytes`), left out of a format 3 entry."""
    slots: bytes

    def entry(self, head_number: int, *, same_event: bool = False) -> bytes:
        """The entry naming its head by number, or carrying it (INLINE); `same_event`: of format 3, for
        a change with the instant and `caused_by` of the entry written before it."""
        return headed_entry(self.head, head_number, self.seq, None if same_event else self.event, self.slots)


def headed_entry(head: bytes, head_number: int, seq: int, event: bytes | None, slots: bytes) -> bytes:
    """An entry of format 2 naming its head by number, or carrying it (INLINE); of format 3 when
    `event` is None (the instant and cause of the entry before it)."""
    named = b"\x00" + varint(len(head)) + head if head_number == INLINE else varint(head_number)
    if event is None:
        return _FORMAT_3 + named + varint(seq) + slots
    return _FORMAT_2 + named + varint(seq) + event + slots


def split_change(change: TagChanged, record: bytes | None = None) -> SplitChange:
    """`change` split for format 2, from `record` (the JSON it was validated from) when that has the
    tagger's shape, else from the change's own JSON."""
    if record is not None:
        split = _split(change, record)
        if split is not None:
            return split
    split = _split(change, change.model_dump_json().encode())
    if split is None:  # pydantic writes the contract's field order, compact: never expected
        raise ValueError(f"tag change of customer {change.customer_id!r} (seq {change.seq}) does not split")
    return split


def head_number(entry: bytes) -> int | None:
    """The head number a format 2 entry names; None for other entries (format 1, inline heads)."""
    if not entry.startswith(b"\x02") or len(entry) < 2 or entry[1] == INLINE:
        return None
    try:
        return _read_varint(entry, 1)[0]
    except IndexError:
        return None


def framed(entry: bytes) -> bytes:
    """The entry as a history string holds it: behind its length."""
    return varint(len(entry)) + entry


def history_string(entries: Sequence[bytes]) -> bytes:
    """A customer's history as the read model keeps it (layout 3): the entry count, then each entry
    framed, oldest first. The projector's script appends to it and cuts the oldest past the limit."""
    return varint(len(entries)) + b"".join(framed(entry) for entry in entries)


def history_entries(customer_id: str, history: bytes) -> list[bytes]:
    """The entries of a history string, newest first; those of format 3 given their instant and cause
    (as format 2)."""
    try:
        count, at = _read_varint(history, 0)
        entries = []
        event = b""
        for _ in range(count):
            size, at = _read_varint(history, at)
            if at + size > len(history):
                raise ValueError("an entry is cut short")
            entry = history[at : at + size]
            at += size
            if entry.startswith(_FORMAT_3):
                if not event:
                    raise ValueError("an entry of format 3 follows none of format 2")
                start = _event_at(entry)
                entry = _FORMAT_2 + entry[1:start] + event + entry[start:]
            if entry.startswith(_FORMAT_2):
                start = _event_at(entry)
                event = entry[start : _event_end(entry, start)]
            else:
                event = b""
            entries.append(entry)
    except (IndexError, ValueError) as error:
        raise HistoryEntryInvalid(f"history of customer {customer_id!r}: {error} in {history[:24]!r}") from None
    if at != len(history):
        raise HistoryEntryInvalid(f"history of customer {customer_id!r}: {len(history) - at} bytes after its entries")
    entries.reverse()
    return entries


def unpack_change(customer_id: str, entry: bytes, heads: Mapping[int, bytes] | None = None) -> TagChanged:
    """The change an entry keeps; `heads`: the head table's entries it names (format 2)."""
    if entry.startswith(_FORMAT_1):
        return _unpack_deflated(customer_id, entry)
    if not entry.startswith(b"\x02"):
        raise HistoryEntryInvalid(f"history entry of customer {customer_id!r}: unknown format {entry[:12]!r}")
    try:
        document = _document(customer_id, entry, heads or {})
    except (IndexError, ValueError) as error:
        raise HistoryEntryInvalid(f"history entry of customer {customer_id!r}: {error} in {entry[:24]!r}") from None
    return TagChanged.model_validate_json(document)


def _split(change: TagChanged, record: bytes) -> SplitChange | None:
    """The split, when `record` is `{"schema_version":1,"customer_id":…,` up to
    `,"caused_by":…,"occurred_at":"…","seq":N}`: the middle then holds every other field, so the
    head with the body's fields puts together a document that validates to the same change. (Inside
    a JSON string a quote is escaped, so the markers found are keys, and a `,"` is never inside a
    string: the tail's three are its three keys' own, whatever `caused_by` holds.)"""
    if not record.startswith(RECORD_START):
        return None
    middle_at = record.find(GROUP_MARKER, len(RECORD_START))
    tail_at = record.rfind(CAUSED_MARKER)
    tail = record[tail_at:]
    if middle_at < 0 or tail_at < middle_at or tail.count(b',"') != 3 or _OCCURRED not in tail:
        return None
    if not tail.endswith(b'","seq":%d}' % change.seq):
        return None
    middle = record[middle_at:tail_at]
    cut = _CUTS.get(middle)
    if cut is None:
        cut = cut_observed(middle)
        if len(_CUTS) >= _CUTS_KEPT:
            _CUTS.clear()
        _CUTS[middle] = cut
    head, slots = cut
    return SplitChange(head, change.seq, event_bytes(to_us(change.occurred_at), change.caused_by), slots)


def event_bytes(us: int, caused_by: str | None) -> bytes:
    """A change's instant (µs; whole milliseconds in fewer bytes) and `caused_by` as an entry holds them."""
    when = us // 1000 * 2 + 1 if us % 1000 == 0 else us * 2
    if caused_by is None:
        return varint(when) + b"\x00"
    caused = caused_by.encode()
    return b"%b%b%b" % (varint(when), varint(len(caused) + 1), caused)


_CUTS: dict[bytes, tuple[bytes, bytes]] = {}
"""Recent middles and their cuts: a shop's changes repeat a few thousand middles (a rule's reason
with the same observed values), so most records are cut without a scan."""
_CUTS_KEPT = 16_384


def cut_observed(middle: bytes) -> tuple[bytes, bytes]:
    """The middle's pieces around each condition's `,"observed":X,"matched":B` and the slots that
    put them back: a byte `k << 1 | matched` (k 0: null, 1: JSON follows, 2..127: the int k - 2).
    Inside a JSON string a quote is escaped, so the markers found are the conditions' keys."""
    pieces: list[bytes] = []
    slots = bytearray()
    start = 0
    at = middle.find(_OBSERVED)
    while at >= 0:
        matched_at = middle.find(_MATCHED, at)
        if matched_at < 0:
            break
        after = matched_at + len(_MATCHED)
        if middle.startswith(b"true", after):
            matched, end = 1, after + 4
        elif middle.startswith(b"false", after):
            matched, end = 0, after + 5
        else:  # not a condition's pair (an observed object holding the marker): left in the head
            at = middle.find(_OBSERVED, after)
            continue
        observed = middle[at + len(_OBSERVED) : matched_at]
        pieces.append(middle[start:at])
        if observed == b"null":
            slots.append(matched)
        elif _INT.fullmatch(observed):
            slots.append((int(observed) + 2) << 1 | matched)
        else:
            slots.append(2 | matched)
            slots += varint(len(observed)) + observed
        start = end
        at = middle.find(_OBSERVED, end)
    pieces.append(middle[start:])
    return _SLOT.join(pieces), bytes(slots)


def _document(customer_id: str, entry: bytes, heads: Mapping[int, bytes]) -> bytes:
    number, at = _read_varint(entry, 1)
    if number == INLINE:
        size, at = _read_varint(entry, at)
        head = entry[at : at + size]
        if len(head) != size:
            raise ValueError("the inline head is cut short")
        at += size
    else:
        found = heads.get(number)
        if found is None:
            raise ValueError(f"head {number} is not in the head table")
        head = found
    seq, at = _read_varint(entry, at)
    when, at = _read_varint(entry, at)
    us = when // 2 * 1000 if when & 1 else when // 2
    caused_size, at = _read_varint(entry, at)
    caused_by: str | None = None
    if caused_size:
        caused_by = entry[at : at + caused_size - 1].decode()
        at += caused_size - 1
    pieces = head.split(_SLOT)
    parts = [RECORD_START, orjson.dumps(customer_id), pieces[0]]
    for piece in pieces[1:]:
        slot = entry[at]
        at += 1
        kind = slot >> 1
        if kind == 0:
            observed = b"null"
        elif kind == 1:
            size, at = _read_varint(entry, at)
            observed = entry[at : at + size]
            at += size
        else:
            observed = b"%d" % (kind - 2)
        parts += [_OBSERVED, observed, _MATCHED, b"true" if slot & 1 else b"false", piece]
    if at != len(entry):
        raise ValueError(f"{len(entry) - at} bytes after the change")
    instant = from_us(us).isoformat().encode()
    parts += [CAUSED_MARKER, orjson.dumps(caused_by), _OCCURRED, instant, b'","seq":%d}' % seq]
    return b"".join(parts)


def _event_at(entry: bytes) -> int:
    """Where a format 2 entry's instant starts (after its head number, inline head and seq); a
    format 3 entry's would start there."""
    number, at = _read_varint(entry, 1)
    if number == INLINE:
        size, at = _read_varint(entry, at)
        at += size
    return _read_varint(entry, at)[1]


def _event_end(data: bytes, start: int) -> int:
    """Where the instant and `caused_by` starting at `start` end."""
    at = _read_varint(data, start)[1]
    caused_size, at = _read_varint(data, at)
    return at + max(caused_size - 1, 0)


def _unpack_deflated(customer_id: str, entry: bytes) -> TagChanged:
    try:
        inflate = zlib.decompressobj(_RAW_DEFLATE, zdict=_DICTIONARY)
        document = orjson.loads(inflate.decompress(entry[1:]) + inflate.flush())
    except (ValueError, zlib.error) as error:
        raise HistoryEntryInvalid(f"history entry of customer {customer_id!r}: {error} in {entry[:24]!r}") from None
    document["customer_id"] = customer_id
    return TagChanged.model_validate(document)


def varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits a byte, low first (seq up to 2**63 - 1 takes 9 bytes)."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise ValueError("a number longer than 9 bytes")
