"""How a tag change is kept in a customer's history list in Redis: about a third of its JSON.

A history entry is the change's JSON without what the key already says (`customer_id`) or what is
constant (`schema_version`), deflated with a preset dictionary of the words every change repeats,
behind a one-byte format tag: binary, so readers fetch it undecoded (ReadModel.history) whatever the
client's `decode_responses`. A 490-byte change is kept in ~125 bytes; the history is most of the
read model's memory. The dictionary is part of the format: a different one needs a new tag, and
entries under the old tag stay readable.
"""

from __future__ import annotations

import zlib

import orjson

from schemas.tags import TagChanged

_FORMAT = b"\x01"
_DICTIONARY = (
    b'{"group_id":"","tag_id":"","change":"added","change":"removed","source":"rule","source":"time",'
    b'"source":"rule_change","source":"manual","source":"import","reason":{"summary":"","conditions":'
    b'[{"metric":"","op":"gte","op":"lte","value":,"window":null,"window":{"last":"30d"},"observed":null,'
    b'"matched":true},{"metric":"order_count","op":"eq","matched":false}]},"group_version":,'
    b'"caused_by":null,"caused_by":"","occurred_at":"2026-12-01T00:00:00.000000Z","seq":'
)
_OMITTED = {"customer_id", "schema_version"}
_LEVEL = 6
_RAW_DEFLATE = -15


class HistoryEntryInvalid(ValueError):
    """A history entry this code did not write (another format, or damaged)."""


def pack_change(change: TagChanged) -> bytes:
    document = orjson.dumps(change.model_dump(mode="json", exclude=_OMITTED))
    deflate = zlib.compressobj(_LEVEL, zlib.DEFLATED, _RAW_DEFLATE, zdict=_DICTIONARY)
    return _FORMAT + deflate.compress(document) + deflate.flush()


def unpack_change(customer_id: str, entry: bytes) -> TagChanged:
    if not entry.startswith(_FORMAT):
        raise HistoryEntryInvalid(f"history entry of customer {customer_id!r}: unknown format {entry[:12]!r}")
    try:
        inflate = zlib.decompressobj(_RAW_DEFLATE, zdict=_DICTIONARY)
        document = orjson.loads(inflate.decompress(entry[1:]) + inflate.flush())
    except (ValueError, zlib.error) as error:
        raise HistoryEntryInvalid(f"history entry of customer {customer_id!r}: {error} in {entry[:24]!r}") from None
    document["customer_id"] = customer_id
    return TagChanged.model_validate(document)
