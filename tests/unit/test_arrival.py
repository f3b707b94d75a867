"""One clock: the tagger evaluates an event at the record timestamp, never at the event's own date.

An event dated past the allowed skew goes to the DLQ naming `occurred_at`; one dated long before the
clock (or loaded as history) causes changes with source `import`, which playbooks ignore (no I/O).
"""

from __future__ import annotations

from datetime import timedelta

from schemas.events import event_adapter
from schemas.topics import TopicNames
from services.engine.arrival import Arrival
from services.engine.codec import decode
from services.engine.timeutil import to_us
from services.runtime.clock import ManualClock
from services.tagger.core import Incoming, TaggerCore
from tests.support.builders import at, browse, cond, engine, group, paid, value_tiers

TOPICS = TopicNames()
_EVENTS = event_adapter()


def _core() -> TaggerCore:
    churn = group("churn", [("likely", [cond("days_since_last_order", "gte", 30)])])
    return TaggerCore(
        engine(value_tiers(), churn), TOPICS, ManualClock(at(0)), Arrival.of(timedelta(minutes=5), timedelta(days=1))
    )


def _record(event: object, timestamp: object, offset: int = 0) -> Incoming:
    return Incoming(TOPICS.events, 0, offset, b"c1", _EVENTS.dump_json(event), to_us(timestamp))  # type: ignore[arg-type]


def test_an_event_is_evaluated_at_its_record_timestamp_not_at_its_own_date() -> None:
    core = _core()
    stored: dict[str, bytes] = {}
    # An order dated 40 days before it reached the topic: the customer is 40 days past it now.
    result = core.handle(_record(paid(2500, when=at(-40)), at(0)), stored.get)
    assert result.outcome == "applied"
    assert {(c.group_id, c.tag_id, c.source) for c in result.changes} == {
        ("value", "high", "import"),
        ("churn", "likely", "import"),
    }
    assert decode(result.state or b"").clock_us == to_us(at(0))


def test_an_event_dated_beyond_the_skew_goes_to_the_dlq_naming_occurred_at_and_changes_nothing() -> None:
    core = _core()
    result = core.handle(_record(browse(when=at(400)), at(0), offset=7), {}.get)
    assert result.outcome == "invalid"
    assert result.state is None
    assert result.changes == []
    letter = result.dead_letter
    assert letter is not None
    assert letter.offset == 7
    assert letter.error == "invalid"
    assert letter.reason.startswith("occurred_at 2027-04-06T09:30:00Z is 400d ahead")
    assert "ahead of the clock (2026-03-02T09:30:00Z); at most 5m is allowed" in letter.reason
    assert '"event_id"' in letter.original


def test_an_event_within_the_skew_is_live_and_its_changes_trigger_playbooks() -> None:
    result = _core().handle(_record(paid(2500, when=at(0, hours=0.08)), at(0)), {}.get)
    assert result.outcome == "applied"
    assert {c.source for c in result.changes} == {"rule"}


def test_an_event_marked_as_import_causes_import_changes_even_when_fresh() -> None:
    imported = paid(2500, when=at(0)).model_copy(update={"source": "import"})
    result = _core().handle(_record(imported, at(0)), {}.get)
    assert [c.source for c in result.changes] == ["import"]


def test_a_live_event_older_than_the_history_age_is_history() -> None:
    arrival = Arrival.of(timedelta(minutes=5), timedelta(days=1))
    event = paid(1, when=at(0))
    assert arrival.source(event, to_us(at(0)), to_us(at(1))) == "rule"  # exactly the age: still live
    assert arrival.source(event, to_us(at(0)), to_us(at(1, hours=0.01))) == "import"


def test_the_refusal_says_how_far_ahead_in_the_two_largest_units() -> None:
    arrival = Arrival.of(timedelta(minutes=5), timedelta(days=1))
    now = to_us(at(0))
    assert arrival.too_far_ahead(now + 5 * 60 * 1_000_000, now) is None  # exactly the skew: accepted
    reason = arrival.too_far_ahead(to_us(at(364, hours=23.5)), now)
    assert reason is not None
    assert "is 364d23h ahead" in reason
