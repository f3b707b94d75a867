"""Which audience query a request becomes: unknown tags refused, disabled groups' tags held by nobody."""

from __future__ import annotations

import pytest
from fastapi import HTTPException

from schemas.tags import TagGroup
from services.ingest.api.reads import AudienceRequest, effective_query
from services.ingest.ports import AudienceQuery
from tests.support.builders import group


def groups() -> dict[str, TagGroup]:
    on = group("on", [("a", None), ("b", None)], mode="multi", tagging="manual")
    off = group("off", [("x", None)], tagging="manual", disabled=True)
    return {"on": on, "off": off}


def test_a_query_over_enabled_groups_is_kept_with_duplicates_dropped() -> None:
    request = AudienceRequest(all_of=["on/a", "on/a"], any_of=["on/b"], none_of=["off/x"])
    assert effective_query(request, groups()) == AudienceQuery(all_of=("on/a",), any_of=("on/b",), none_of=())


def test_requiring_a_disabled_groups_tag_selects_nobody() -> None:
    assert effective_query(AudienceRequest(all_of=["on/a", "off/x"]), groups()) is None
    assert effective_query(AudienceRequest(any_of=["off/x"]), groups()) is None
    assert effective_query(AudienceRequest(any_of=["off/x", "on/b"]), groups()) == AudienceQuery((), ("on/b",), ())


def test_unknown_tags_and_a_query_with_only_exclusions_are_refused() -> None:
    with pytest.raises(HTTPException) as unknown:
        effective_query(AudienceRequest(all_of=["on/zz", "nope/a"]), groups())
    assert unknown.value.status_code == 422
    assert "nope/a" in str(unknown.value.detail)
    assert "on/zz" in str(unknown.value.detail)
    with pytest.raises(HTTPException, match="at least one"):
        effective_query(AudienceRequest(none_of=["on/a"]), groups())
