"""Pure parts of the ingest API: API keys and roles, and reading event bodies."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr

from services.ingest.api.events import parse_events
from services.ingest.auth import KeyFileError, load_keys
from services.runtime.settings import ApiKey, IngestSettings


def key(secret: str, role: str, name: str) -> ApiKey:
    return ApiKey(key=SecretStr(secret), role=role, name=name)  # type: ignore[arg-type]


def test_keys_identify_their_caller_and_roles_nest_admin_over_operator_over_viewer() -> None:
    keys = load_keys(IngestSettings(api_keys=[key("v" * 20, "viewer", "dash"), key("a" * 20, "admin", "ops")]))
    viewer, admin = keys.identify("v" * 20), keys.identify("a" * 20)
    assert viewer is not None
    assert admin is not None
    assert (viewer.name, viewer.may("viewer"), viewer.may("operator")) == ("dash", True, False)
    assert (admin.may("viewer"), admin.may("operator"), admin.may("admin")) == (True, True, True)
    assert keys.identify("v" * 19) is None
    assert keys.identify("") is None


def test_keys_are_also_read_from_a_mounted_file_and_a_bad_file_names_the_problem(tmp_path: Path) -> None:
    mounted = tmp_path / "keys.json"
    mounted.write_text(json.dumps([{"key": "k" * 20, "role": "operator", "name": "importer"}]))
    keys = load_keys(IngestSettings(api_keys=[key("v" * 20, "viewer", "dash")], api_keys_file=mounted))
    assert len(keys) == 2
    found = keys.identify("k" * 20)
    assert found is not None
    assert found.role == "operator"
    mounted.write_text(json.dumps([{"key": "short", "role": "root", "name": "x"}]))
    with pytest.raises(KeyFileError) as raised:
        load_keys(IngestSettings(api_keys_file=mounted))
    assert "0.key" in str(raised.value)
    assert "0.role" in str(raised.value)
    assert "short" not in str(raised.value)


def test_an_event_body_is_one_object_or_a_list_and_amounts_stay_exact_decimals() -> None:
    event = {
        "type": "order_paid",
        "event_id": "e1",
        "customer_id": "c1",
        "occurred_at": "2026-11-01T10:00:00+08:00",
        "order_id": "o1",
        "amount": 0.1,
        "currency": "CNY",
    }
    [one], errors = parse_events(json.dumps(event).encode())
    assert errors == []
    assert one.amount == Decimal("0.1")  # from the JSON text, not a float's 0.1000000000000000055...
    many, errors = parse_events(json.dumps([event, event | {"event_id": "e2"}]).encode())
    assert [e.event_id for e in many] == ["e1", "e2"]
    assert many[0].occurred_at.isoformat() == "2026-11-01T02:00:00+00:00"


def test_every_bad_item_is_named_by_index_and_field() -> None:
    good = {"type": "click", "event_id": "e", "customer_id": "c", "occurred_at": "2026-11-01T00:00:00Z", "target": "x"}
    body = json.dumps([good, good | {"target": ""}, {"type": "nope"}, 5, good | {"customer_id": None}]).encode()
    events, errors = parse_events(body)
    assert events == []
    assert [(e.index, e.field) for e in errors] == [(1, "target"), (2, "type"), (3, "(event)"), (4, "customer_id")]
