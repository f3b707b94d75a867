"""Audiences over the in-memory read model: set algebra, one id once, stable cursor pages, expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas.tags import TagChanged
from services.embedded.readmodel import MemoryReadModel
from services.embedded.stores import MemoryAudiences
from services.ingest.ports import AudienceQuery, CursorExpired
from services.runtime.clock import ManualClock

T0 = datetime(2026, 11, 23, tzinfo=UTC)


def _held(model: MemoryReadModel, customer: str, *tags: str) -> None:
    for seq, ref in enumerate(tags, start=1):
        group, tag = ref.split("/")
        model.apply_now(
            TagChanged.model_validate(
                {
                    "customer_id": customer,
                    "group_id": group,
                    "tag_id": tag,
                    "change": "added",
                    "source": "rule",
                    "reason": {"summary": "test", "conditions": []},
                    "group_version": 1,
                    "caused_by": None,
                    "occurred_at": T0,
                    "seq": seq,
                }
            )
        )


@pytest.fixture
def audiences() -> tuple[MemoryAudiences, ManualClock]:
    model = MemoryReadModel()
    _held(model, "c1", "value/high", "interest/tea", "interest/coffee")
    _held(model, "c2", "value/high", "interest/tea")
    _held(model, "c3", "value/low", "interest/coffee")
    _held(model, "c4", "value/high", "churn/likely")
    clock = ManualClock(T0)
    return MemoryAudiences(model, 60, clock), clock


async def test_a_customer_in_several_selected_tags_counts_once(audiences: tuple[MemoryAudiences, ManualClock]) -> None:
    found = await audiences[0].query(AudienceQuery((), ("interest/tea", "interest/coffee"), ()), 10)
    assert (found.count, found.customer_ids, found.cursor) == (3, ["c1", "c2", "c3"], None)


async def test_all_any_and_none_combine_as_set_algebra(audiences: tuple[MemoryAudiences, ManualClock]) -> None:
    query = AudienceQuery(("value/high",), ("interest/tea", "churn/likely"), ("interest/coffee",))
    assert (await audiences[0].query(query, 10)).customer_ids == ["c2", "c4"]
    assert [c async for c in audiences[0].export(query)] == ["c2", "c4"]


async def test_pages_follow_the_cursor_until_the_snapshot_expires(
    audiences: tuple[MemoryAudiences, ManualClock],
) -> None:
    model, clock = audiences
    first = await model.query(AudienceQuery(("value/high",), (), ()), 2)
    assert first.customer_ids == ["c1", "c2"]
    assert first.cursor is not None
    second = await model.page(first.cursor, 2)
    assert (second.customer_ids, second.cursor) == (["c4"], None)
    clock.advance(timedelta(seconds=61))
    with pytest.raises(CursorExpired):
        await model.page(first.cursor, 2)
