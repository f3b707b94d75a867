"""Tag group changes as the ingest API and `tagstream tags apply` plan them: engine validation, versions."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from schemas.tags import TagGroup
from services.ingest import catalog
from services.ingest.catalog import GroupExists, InvalidDefinitions, Limits, UnknownGroup
from services.runtime.zone import day_zone
from tests.support.builders import cond, group, order_bands, value_tiers

LIMITS = Limits(horizon_days=400, today=date(2026, 11, 23))


def current() -> dict[str, TagGroup]:
    return {g.id: g for g in (value_tiers(), order_bands())}


def test_a_new_group_starts_at_version_one_whatever_the_body_says() -> None:
    new = group("fresh", [("yes", [cond("order_count", "gte", 1)])]).model_copy(update={"version": 7})
    change = catalog.create(current(), new, LIMITS)
    assert [(g.id, g.version) for g in change.upserts] == [("fresh", 1)]


def test_creating_an_existing_group_is_a_conflict() -> None:
    with pytest.raises(GroupExists, match="already exists"):
        catalog.create(current(), value_tiers(), LIMITS)


def test_replacing_bumps_the_version_and_the_path_id_must_match() -> None:
    groups = current()
    change = catalog.replace(groups, "value", value_tiers().model_copy(update={"name": "new"}), LIMITS)
    assert change.upserts[0].version == groups["value"].version + 1
    with pytest.raises(InvalidDefinitions, match="differs"):
        catalog.replace(groups, "orders", value_tiers(), LIMITS)
    with pytest.raises(UnknownGroup):
        catalog.replace(groups, "nope", value_tiers().model_copy(update={"id": "nope"}), LIMITS)


def test_windows_beyond_the_horizon_and_unknown_tags_are_rejected_with_every_problem() -> None:
    bad = group(
        "bad",
        [
            ("wide", [cond("browse_count", "gte", 1, last="500d")]),
            ("ref", [cond("has_tag", "eq", "value/nope")]),
        ],
    )
    with pytest.raises(InvalidDefinitions) as raised:
        catalog.create(current(), bad, LIMITS)
    assert len(raised.value.problems) == 2
    assert "horizon" in raised.value.problems[0]
    assert "unknown tag 'nope'" in raised.value.problems[1]


def test_absolute_windows_are_checked_in_the_shop_zone_on_its_local_date() -> None:
    # 2026-11-23T20:00Z is already 11-24 in Shanghai: the horizon's first day moves with it.
    shanghai = Limits.at(datetime(2026, 11, 23, 20, tzinfo=UTC), horizon_days=10, zone=day_zone("Asia/Shanghai"))
    assert shanghai.today == date(2026, 11, 24)
    window = {"from": "2026-11-14", "to": "2026-11-20"}
    edge = group("edge", [("t", [cond("order_count", "gte", 1) | {"window": window}])])
    with pytest.raises(InvalidDefinitions, match="before the 10-day horizon"):
        catalog.create(current(), edge, shanghai)
    utc = Limits.at(datetime(2026, 11, 23, 20, tzinfo=UTC), horizon_days=10, zone=day_zone("UTC"))
    assert catalog.create(current(), edge, utc)  # still 11-23 in UTC: 11-14 is the oldest retained day

    beijing_midnight = {"from": "2026-11-20T00:00:00+08:00", "to": "2026-11-23T00:00:00+08:00"}
    instants = group("instants", [("t", [cond("order_count", "gte", 1) | {"window": beijing_midnight}])])
    assert catalog.create(current(), instants, shanghai)
    berlin = Limits.at(datetime(2026, 11, 23, tzinfo=UTC), horizon_days=400, zone=day_zone("Europe/Berlin"))
    with pytest.raises(InvalidDefinitions, match="not the start of a day in the shop's time zone Europe/Berlin"):
        catalog.create(current(), instants, berlin)


def test_a_dependency_cycle_is_rejected() -> None:
    a = group("a", [("x", [cond("has_tag", "eq", "b/y")])])
    b = group("b", [("y", [cond("order_count", "gte", 1)])])
    groups = {"b": b, "a": a}
    cyclic = group("b", [("y", [cond("has_tag", "eq", "a/x")])])
    with pytest.raises(InvalidDefinitions, match="cycle"):
        catalog.replace(groups, "b", cyclic, LIMITS)


def test_reorder_needs_every_group_once_and_bumps_only_moved_groups() -> None:
    groups = {g.id: g for g in (value_tiers(), order_bands().model_copy(update={"order": 1}))}
    change = catalog.reorder(groups, ["orders", "value"], LIMITS)
    assert sorted((g.id, g.order, g.version) for g in change.upserts) == [("orders", 0, 2), ("value", 1, 2)]
    with pytest.raises(InvalidDefinitions) as raised:
        catalog.reorder(groups, ["value", "value", "ghost"], LIMITS)
    assert raised.value.problems == [
        "group_ids: ['value'] appear more than once",
        "group_ids: unknown groups ['ghost']",
        "group_ids: must list every group; missing ['orders']",
    ]


def test_disabling_bumps_the_version_once_and_repeating_it_changes_nothing() -> None:
    groups = current()
    change = catalog.set_disabled(groups, "value", True, LIMITS)
    assert (change.upserts[0].disabled, change.upserts[0].version) == (True, 2)
    groups["value"] = change.upserts[0]
    assert catalog.set_disabled(groups, "value", True, LIMITS).empty


def test_a_group_other_rules_refer_to_cannot_be_deleted() -> None:
    groups = current() | {"vip": group("vip", [("yes", [cond("has_tag", "eq", "value/high")])])}
    with pytest.raises(InvalidDefinitions, match="unknown group 'value'"):
        catalog.delete(groups, "value", LIMITS)
    assert catalog.delete(groups, "vip", LIMITS).deletions == ["vip"]


def test_applying_a_file_creates_replaces_and_keeps_unlisted_groups_unless_pruned() -> None:
    groups = current()
    renamed = value_tiers().model_copy(update={"name": "价值"})
    added = group("fresh", [("yes", [cond("order_count", "gte", 1)])])
    plan = catalog.apply_file(groups, [renamed, added], LIMITS, prune=False)
    assert [(g.id, g.version) for g in plan.change.upserts] == [("value", 2), ("fresh", 1)]
    assert plan.change.deletions == []
    assert plan.lines == [
        "~ value (价值): changes name, version 2",
        "+ fresh (fresh): create, version 1",
        "! orders (orders): not in the file, kept (--prune deletes it)",
    ]
    pruned = catalog.apply_file(groups, [value_tiers()], LIMITS, prune=True)
    assert pruned.change.upserts == []
    assert pruned.change.deletions == ["orders"]
    assert pruned.lines[0] == "= value (value): unchanged, version 1"


def test_a_file_defining_a_group_twice_is_rejected() -> None:
    with pytest.raises(InvalidDefinitions, match="defined twice"):
        catalog.apply_file({}, [value_tiers(), value_tiers()], LIMITS, prune=False)
