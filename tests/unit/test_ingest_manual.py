"""Manual tags: the engine's refusals before publishing, and the CSV import (pure)."""

from __future__ import annotations

import pytest

from schemas.tags import TagGroup
from services.ingest.manual import ImportFileError, ManualTagging, command_id, plan_import
from tests.support.builders import T0, command, cond, group, value_tiers


def groups() -> dict[str, TagGroup]:
    segment = TagGroup.model_validate(
        {
            "id": "segment",
            "name": "人群",
            "mode": "multi",
            "tagging": "manual",
            "tags": [{"id": "a", "name": "甲"}, {"id": "b", "name": "乙-二"}],
        }
    )
    care = group("care", [("vip", None), ("buyer", [cond("order_count", "gte", 1)])], tagging="both")
    off = group("off", [("x", None)], tagging="manual", disabled=True)
    return {g.id: g for g in (value_tiers(), segment, care, off)}


def tagging() -> ManualTagging:
    return ManualTagging(groups(), horizon_days=400)


def test_the_engine_decides_which_manual_commands_are_refused() -> None:
    rules = tagging()
    assert rules.refusal(command("care", "vip", when=T0)) is None
    assert "allows only automatic tagging" in (rules.refusal(command("value", "high", when=T0)) or "")
    assert "disabled" in (rules.refusal(command("off", "x", when=T0)) or "")
    assert "has no tag" in (rules.refusal(command("care", "nope", when=T0)) or "")


def test_command_ids_are_deterministic_per_customer_tag_and_action() -> None:
    assert command_id("import", "c1", "g", "t", "add") == command_id("import", "c1", "g", "t", "add")
    assert command_id("import", "c1", "g", "t", "add") != command_id("import", "c2", "g", "t", "add")
    assert command_id("import", "c1", "g", "t", "add").startswith("import-")


def test_an_import_resolves_group_and_tag_names_even_when_a_name_holds_a_dash() -> None:
    data = '\ufeffcustomer_id,tags\nc1,人群-甲\nc2,"人群-乙-二；care-vip"\n'.encode()
    plan = plan_import(data, tagging(), actor="ops", now=T0)
    assert plan.errors == []
    assert [(c.customer_id, c.group_id, c.tag_id, c.source) for c in plan.commands] == [
        ("c1", "segment", "a", "import"),
        ("c2", "segment", "b", "import"),
        ("c2", "care", "vip", "import"),
    ]
    again = plan_import(data, tagging(), actor="ops", now=T0)
    assert [c.command_id for c in again.commands] == [c.command_id for c in plan.commands]


def test_bad_rows_are_reported_with_their_line_and_reason_and_good_rows_still_count() -> None:
    data = "customer_id,tags\nc1,人群-甲\nc2,人群-丙\nc3,value-high\n\nc4,\nc5,人群-甲,x\n".encode()
    plan = plan_import(data, tagging(), actor="ops", now=T0)
    assert (plan.rows, plan.rows_ok, len(plan.commands)) == (5, 1, 1)
    assert [(e.row, e.customer_id) for e in plan.errors] == [(3, "c2"), (4, "c3"), (6, "c4"), (7, "c5")]
    assert "names no tag" in plan.errors[0].reason
    assert "allows only automatic tagging" in plan.errors[1].reason
    assert "no tag given" in plan.errors[2].reason
    assert "2 columns" in plan.errors[3].reason


def test_a_file_without_the_header_or_not_in_utf8_is_refused_whole() -> None:
    with pytest.raises(ImportFileError, match="header"):
        plan_import("c1,人群-甲\n".encode(), tagging(), actor="ops", now=T0)
    with pytest.raises(ImportFileError, match="UTF-8"):
        plan_import("customer_id,tags\nc1,人群-甲\n".encode("gbk"), tagging(), actor="ops", now=T0)
