"""Finding 7: ids refuse control characters and invisible formatting characters (log forgery, ids
that display as other ids), with a 422 naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.tags import TagCommand
from services.runtime.settings import ApiKey
from tests.security.node import OPERATOR, count_rule, group, order, running_node

UNSAFE = {
    "newline": "c1\n2026-11-23 INFO forged line",
    "carriage-return": "c1\r",
    "nul": "c1\x00",
    "escape": "c1\x1b[31m",
    "delete": "c1\x7f",
    "c1-next-line": "c1\x85",
    "line-separator": "c1\u2028",
    "paragraph-separator": "c1\u2029",
    "right-to-left-override": "c1\u202e",
    "isolate": "c1\u2066",
    "byte-order-mark": "\ufeffc1",
}


@pytest.mark.parametrize("customer_id", UNSAFE.values(), ids=UNSAFE.keys())
async def test_an_event_whose_ids_hold_unsafe_characters_gets_422_naming_the_field(
    tmp_path: Path, customer_id: str
) -> None:
    async with running_node(tmp_path) as running:
        refused = await running.post("/v1/events", order(customer_id, "e1"), key=OPERATOR)
        product = order("c1", "e2", items=[{"product_id": f"p{customer_id}", "quantity": 1, "price": "1"}])
        refused_item = await running.post("/v1/events", product, key=OPERATOR)
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["field"] == "customer_id"
    assert refused_item.status_code == 422
    assert refused_item.json()["detail"][0]["field"] == "items.0.product_id"


async def test_manual_tags_and_customer_routes_refuse_unsafe_ids(tmp_path: Path) -> None:
    async with running_node(tmp_path) as running:
        assert (await running.post("/v1/groups", group(count_rule(1)))).status_code == 201
        body = {"group_id": "g", "tag_id": "t", "action": "add", "customer_ids": ["c1", "c2\nforged"]}
        manual = await running.post("/v1/manual-tags", body, key=OPERATOR)
        opt_out = await running.http.put(
            "/v1/customers/c1%0Aforged/opt-outs/sms", headers={"Authorization": f"Bearer {OPERATOR}"}
        )
    assert manual.status_code == 422
    assert manual.json()["detail"][0]["loc"] == ["body", "customer_ids", 1]
    assert opt_out.status_code == 422
    assert opt_out.json()["detail"][0]["loc"] == ["path", "customer_id"]


def test_ordinary_shop_ids_stay_valid() -> None:
    for customer_id in ("c-1", "李雷", "user@example.com", "SKU 12/34", "é", "👩‍👩‍👧"):
        command = TagCommand(
            command_id="m1",
            customer_id=customer_id,
            group_id="g",
            tag_id="t",
            action="add",
            actor="ops@shop",
            occurred_at="2026-11-23T08:30:00Z",  # type: ignore[arg-type]  # validated like JSON input
        )
        assert command.customer_id == customer_id


def test_a_tag_command_from_kafka_with_an_unsafe_actor_is_invalid() -> None:
    with pytest.raises(ValidationError, match="actor"):
        TagCommand.model_validate_json(
            '{"command_id":"m1","customer_id":"c1","group_id":"g","tag_id":"t","action":"add",'
            '"actor":"ops\\u2028forged","occurred_at":"2026-11-23T08:30:00Z"}'
        )


@pytest.mark.parametrize(
    "name", [UNSAFE["newline"], UNSAFE["right-to-left-override"], ""], ids=["newline", "rlo", "empty"]
)
def test_an_api_key_whose_name_the_contracts_would_refuse_as_an_actor_stops_the_start(name: str) -> None:
    with pytest.raises(ValidationError) as refused:
        ApiKey(key="k" * 32, role="operator", name=name)  # type: ignore[arg-type]
    assert refused.value.errors()[0]["loc"] == ("name",)
