"""The projector's decoder of tag-change records: the model's verdict and values, in pieces."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.limits import MAX_SEQ
from schemas.tags import TagChanged
from services.runtime.change_records import ChangeDecoder, ChangeRecord, change_record
from services.runtime.history_codec import INLINE, split_change
from tests.support.history_entries import hostile_changes, shop_change


def _tagger_record(change: TagChanged) -> bytes:
    """The change's JSON as the tagger writes it (services/engine/changes.py: orjson's, compact)."""
    return orjson.dumps(change.model_dump(mode="json"), option=orjson.OPT_UTC_Z)


def _shop_records() -> list[bytes]:
    """A shop's event: three changes for one customer (one event), another customer, a timer's change."""
    first = shop_change(customer_id="c-1", caused_by="e-1", source="rule", change="added", seq=7)
    second = shop_change(customer_id="c-1", caused_by="e-1", source="rule", tag_id="vip", seq=8)
    third = shop_change(customer_id="c-1", caused_by="e-1", source="rule", group_id="value", seq=9)
    other = shop_change(customer_id="顾客-上海-002", caused_by="e-2", seq=1)
    timer = shop_change(customer_id="c-1", caused_by=None, source="time", seq=10)
    return [_tagger_record(change) for change in (first, second, third, other, timer, *hostile_changes())]


def _verdict(record: bytes) -> ChangeRecord | str:
    """What the model says of a record: its change in pieces, or "refused"."""
    try:
        change = TagChanged.model_validate_json(record)
    except ValidationError:
        return "refused"
    return change_record(change, record)


def _decoded(decoder: ChangeDecoder, record: bytes) -> ChangeRecord | str:
    try:
        return decoder.decode(record)
    except ValidationError:
        return "refused"


def test_the_taggers_records_are_taken_in_pieces_with_the_models_values_and_entries() -> None:
    decoder = ChangeDecoder()
    for record in _shop_records() * 2:  # the second time from the pieces remembered
        change = TagChanged.model_validate_json(record)
        pieces = decoder._in_pieces(record)

        assert pieces is not None, record[:80]
        assert pieces == change_record(change, record)
        assert (pieces.customer_id, pieces.seq, pieces.occurrence.caused_by) == (
            change.customer_id,
            change.seq,
            change.caused_by,
        )
        split = split_change(change)
        for number in (INLINE, 3, 300):
            assert pieces.entry(number) == split.entry(number)
            assert pieces.entry(number, same_event=True) == split.entry(number, same_event=True)


def test_one_events_changes_share_their_who_and_when_and_a_rules_changes_share_their_middle() -> None:
    decoder = ChangeDecoder()
    first, second, third, other, timer = (decoder.decode(record) for record in _shop_records()[:5])

    assert first.occurrence is second.occurrence is third.occurrence
    assert other.occurrence != first.occurrence
    assert timer.occurrence != first.occurrence
    assert first.middle is not second.middle
    assert decoder.decode(_shop_records()[0]).middle is first.middle


_SHOP = _tagger_record(shop_change(customer_id="c-1", caused_by="e-1", seq=7))

# Records the tagger does not write, each against a piece's edge: the model decides them all.
_EDGES = [
    _SHOP.replace(b'"seq":7}', b'"seq":07}'),
    _SHOP.replace(b'"seq":7}', b'"seq":7.0}'),
    _SHOP.replace(b'"seq":7}', b'"seq":-7}'),
    _SHOP.replace(b'"seq":7}', b'"seq":0}'),
    _SHOP.replace(b'"seq":7}', b'"seq":%d}' % MAX_SEQ),
    _SHOP.replace(b'"seq":7}', b'"seq":%d}' % (MAX_SEQ + 1)),
    _SHOP.replace(b'"seq":7}', b'"seq":"7"}'),
    _SHOP.replace(b'"seq":7}', b'"seq":7} '),
    _SHOP.replace(b'"seq":7}', b'"seq":7,"seq":8}'),
    _SHOP.replace(b'"group_id"', b'"seq":9,"group_id"'),
    _SHOP.replace(b'"group_version"', b'"customer_id":"c-2","group_version"'),
    _SHOP.replace(b'"group_version"', b'"caused_by":"e-9","group_version"'),
    _SHOP.replace(b'"group_version"', b'"occurred_at":"2030-01-01T00:00:00Z","group_version"'),
    _SHOP.replace(b'"group_version"', b'"schema_version":2,"group_version"'),
    _SHOP.replace(b'"group_version"', b'"extra":1,"group_version"'),
    _SHOP.replace(b'"c-1"', b'"c\\u002d1"'),
    _SHOP.replace(b'"c-1"', b'"c-1","tag_id":"x"'),
    _SHOP.replace(b'"c-1"', b'"c-1","customer_id":"c-2"'),
    _SHOP.replace(b'"c-1"', b'""'),
    _SHOP.replace(b'"c-1"', b"null"),
    _SHOP.replace(b'"e-1"', b'"e-1","caused_by":"e-2"'),
    _SHOP.replace(b'"e-1"', b'"e-1","extra":1'),
    _SHOP.replace(b'"e-1"', b"null"),
    _SHOP.replace(b'"e-1"', b"7"),
    _SHOP.replace(b'"e-1"', b'"e\\":1"'),
    _SHOP.replace(b'"caused_by":"e-1",', b""),
    _SHOP.replace(b'Z"', b'+08:00"'),
    _SHOP.replace(b'Z"', b'"'),
    _SHOP.replace(b'T16:00:00.000001Z"', b'"'),
    _SHOP.replace(b'"occurred_at":"2026', b'"occurred_at":"0001'),
    _SHOP.replace(b'"schema_version":1', b'"schema_version":2'),
    _SHOP.replace(b'"schema_version":1,', b'"schema_version":1, '),
    _SHOP.replace(b'"observed":"0.00"', b'"observed":{"seq":1}'),
    _SHOP.replace(b'"observed":"0.00"', b'"observed":"\\"seq\\":1"'),
    _SHOP.replace(b'"change":"removed"', b'"change":"moved"'),
    _SHOP.replace(b'"group_version":12', b'"group_version":0'),
    _SHOP.replace(b'"window":{"last":"30d"', b'"window":{"last":"0d"'),
    _SHOP[:-1],
    _SHOP + b"}",
    b"[" + _SHOP + b"]",
    _SHOP.replace(b'"c-1"', b'"\xff"'),
    b"",
]


def test_records_at_every_pieces_edge_get_the_models_verdict_and_values() -> None:
    assert len({_verdict(record) == "refused" for record in _EDGES}) == 2  # both verdicts occur
    for record in _EDGES:
        for decoder in (ChangeDecoder(), _warm()):
            assert _decoded(decoder, record) == _verdict(record), record


def _warm() -> ChangeDecoder:
    """A decoder that has seen the shop's records: their pieces remembered."""
    decoder = ChangeDecoder()
    for record in [_SHOP, *_shop_records()]:
        decoder.decode(record)
    return decoder


_TOKENS = [
    b'"',
    b"\\",
    b",",
    b":",
    b"}",
    b"{",
    b"0",
    b"9",
    b" ",
    b"null",
    b'"seq":',
    b',"seq":1',
    b',"caused_by":',
    b',"customer_id":"x"',
    b',"group_id":',
    b'"observed":',
    b"\\u0041",
    "顾".encode(),
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(min_value=0, max_value=len(_shop_records()) - 1),
    edits=st.lists(
        st.tuples(st.floats(min_value=0, max_value=1), st.integers(0, 3), st.sampled_from(_TOKENS)),
        min_size=1,
        max_size=3,
    ),
)
@example(index=0, edits=[(0.99, 0, b',"seq":1')])
def test_any_edit_of_a_record_gets_the_models_verdict_and_values(
    index: int, edits: list[tuple[float, int, bytes]]
) -> None:
    record = _shop_records()[index]
    for where, cut, token in edits:
        at = int(where * len(record))
        record = record[:at] + token + record[at + cut :]

    assert _decoded(_warm(), record) == _verdict(record)
    assert _decoded(ChangeDecoder(), record) == _verdict(record)


def test_a_refused_record_raises_the_models_error_for_the_whole_record() -> None:
    record = _SHOP.replace(b'"change":"removed"', b'"change":"moved"')

    with pytest.raises(ValidationError) as raised:
        _warm().decode(record)

    assert "change" in str(raised.value)


def test_a_timers_change_at_a_whole_millisecond_keeps_its_shorter_instant() -> None:
    at = datetime(2026, 12, 31, 16, 0, 0, 123_000, tzinfo=UTC)
    record = _tagger_record(shop_change(caused_by=None, occurred_at=at))

    decoded = ChangeDecoder().decode(record)

    assert decoded.occurrence.occurred_us == int(at.timestamp() * 1_000_000)
    assert decoded.entry(5) == split_change(TagChanged.model_validate_json(record)).entry(5)
