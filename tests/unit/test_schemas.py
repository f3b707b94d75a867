import json
from decimal import Decimal

import pytest
from pydantic import ValidationError

from schemas.events import OrderPaid, event_adapter
from schemas.generate import SCHEMA_DIR, documents, render
from schemas.tags import TagChanged

ORDER = {
    "type": "order_paid",
    "event_id": "e1",
    "customer_id": "c1",
    "occurred_at": "2026-11-23T08:00:00+08:00",
    "order_id": "o1",
    "amount": "199.90",
    "currency": "CNY",
    "items": [{"product_id": "sku-1", "quantity": 2, "price": "99.95"}],
    "points_earned": 19,
}


def test_events_are_told_apart_by_type_and_times_normalised_to_utc():
    event = event_adapter().validate_python(ORDER)
    assert isinstance(event, OrderPaid)
    assert event.occurred_at.isoformat() == "2026-11-23T00:00:00+00:00"
    assert event.amount == Decimal("199.90")


def test_money_is_serialised_as_a_decimal_string():
    event = event_adapter().validate_python(ORDER)
    dumped = json.loads(event.model_dump_json())
    assert dumped["amount"] == "199.90"
    assert dumped["items"][0]["price"] == "99.95"


@pytest.mark.parametrize(
    ("change", "field", "shown"),
    [
        ({"occurred_at": "2026-11-23T08:00:00"}, "occurred_at", "timezone"),
        ({"amount": "-1"}, "amount", "-1"),
        ({"amount": "1.123456"}, "amount", "1.123456"),
        ({"currency": "yuan"}, "currency", "yuan"),
        ({"customer_id": ""}, "customer_id", ""),
        ({"type": "order_shipped"}, "type", "order_shipped"),
        ({"unexpected": 1}, "unexpected", "1"),
    ],
)
def test_invalid_events_name_the_field_and_the_offending_value(change, field, shown):
    with pytest.raises(ValidationError) as caught:
        event_adapter().validate_python(ORDER | change)
    [problem] = caught.value.errors()
    named_by_location = field in [str(part) for part in problem["loc"]]
    named_by_message = f"'{field}'" in problem["msg"]  # a bad discriminator has no location
    assert named_by_location or named_by_message
    assert shown in str(caught.value)


def test_a_refund_amount_must_be_positive():
    refund = {
        "type": "order_refunded",
        "event_id": "e",
        "customer_id": "c",
        "occurred_at": ORDER["occurred_at"],
        "order_id": "o1",
        "amount": "0",
    }
    with pytest.raises(ValidationError, match="greater than 0"):
        event_adapter().validate_python(refund)


def test_the_committed_json_schemas_match_the_models():
    expected = documents()
    committed = {path.name for path in SCHEMA_DIR.glob("*.json")}
    assert committed == set(expected), "run `python -m schemas.generate` and commit schemas/json"
    for name, document in expected.items():
        assert (SCHEMA_DIR / name).read_text(encoding="utf-8") == render(document), (
            f"{name} drifted from the models: run `python -m schemas.generate` and commit it"
        )


def test_every_contract_carries_its_schema_version():
    for name, document in documents().items():
        properties = document.get("properties") or {}
        if name in {"tag-changed.json", "tag-command.json"}:
            assert "schema_version" in properties
    assert TagChanged.model_fields["schema_version"].default == 1
