"""A shop's data through the HTTP API, the same checks for both modes (Kafka services and embedded).

Each check takes a client of a running app whose groups include `care` (ingest_harness.CARE) and
`value` (ingest_harness.VALUE); it creates what else it needs under unique ids.
"""

from __future__ import annotations

from typing import Any

from tests.support.ingest_harness import Client, browse, cond, held, paid, unique

_WINDOW = {"last": "30d"}


def _tag(tag_id: str, metric: str, value: int) -> dict[str, Any]:
    condition = cond(metric, "gte", value)
    if metric.endswith("browse_count") or metric == "click_count":
        condition["window"] = _WINDOW
    return {"id": tag_id, "name": tag_id, "rule": {"match": "all", "conditions": [condition]}}


def counting_group() -> dict[str, Any]:
    return {
        "id": unique("counts"),
        "name": unique("计数"),
        "mode": "multi",
        "tagging": "auto",
        "auto_remove": True,
        "tags": [
            _tag("browsed40", "browse_count", 40),
            _tag("browsed41", "browse_count", 41),
            _tag("orders2", "order_count", 2),
            _tag("orders3", "order_count", 3),
            _tag("clicked", "click_count", 1),
        ],
    }


async def resent_batches_count_once(client: Client) -> None:
    """A 40-browse batch with 2 orders, sent twice, counts 40 browses and 2 orders."""
    counts = counting_group()
    created = await client.post("/v1/groups", "admin", json=counts)
    assert created.status_code == 201, created.text
    customer = unique("resend")
    batch = [browse(customer) for _ in range(40)] + [paid(customer, "10"), paid(customer, "20")]
    for _ in range(2):
        response = await client.post("/v1/events", json=batch)
        assert response.status_code == 202, response.text
    marker = browse(customer) | {"type": "click", "target": "banner"}
    del marker["product_id"]
    assert (await client.post("/v1/events", json=marker)).status_code == 202  # after the resend, in order
    body = await client.until(f"/v1/customers/{customer}/tags", lambda b: "clicked" in held(b).get(counts["id"], []))
    assert sorted(held(body)[counts["id"]]) == ["browsed40", "clicked", "orders2"]
    deleted = await client.delete(f"/v1/groups/{counts['id']}", "admin")  # other checks list the groups
    assert deleted.status_code in (200, 204), deleted.text


async def free_orders_count_and_other_currencies_are_refused(client: Client) -> None:
    customer = unique("free")
    refused = await client.post("/v1/events", json=[paid(customer, "200"), paid(customer, "50") | {"currency": "USD"}])
    assert refused.status_code == 422
    [problem] = refused.json()["detail"]
    assert (problem["index"], problem["field"]) == (1, "currency")
    assert "'USD' is not the shop's currency 'CNY'" in problem["reason"]
    assert (await client.post("/v1/events", json=paid(customer, "0.00"))).status_code == 202
    body = await client.until(f"/v1/customers/{customer}/tags", lambda b: bool(held(b).get("value")))
    assert held(body) == {"value": ["low"], "care": ["buyer"]}  # one order, of 0: nothing of the refused batch


async def a_manual_removal_sticks_until_cleared(client: Client) -> None:
    customer = unique("sticks")
    assert (await client.post("/v1/events", json=paid(customer, "10"))).status_code == 202
    await client.until(f"/v1/customers/{customer}/tags", lambda b: held(b).get("care") == ["buyer"])
    remove = {"group_id": "care", "tag_id": "buyer", "action": "remove", "customer_ids": [customer]}
    assert (await client.post("/v1/manual-tags", json=remove)).status_code == 202
    await client.until(f"/v1/customers/{customer}/tags", lambda b: "care" not in held(b))  # commands and events
    assert (await client.post("/v1/events", json=paid(customer, "400"))).status_code == 202  # are not ordered
    body = await client.until(f"/v1/customers/{customer}/tags", lambda b: held(b).get("value") == ["mid"])
    assert "care" not in held(body)  # the next order did not give it back
    history = (await client.get(f"/v1/customers/{customer}/history")).json()["changes"]
    [removal] = [c for c in history if c["group_id"] == "care" and c["change"] == "removed"]
    assert removal["source"] == "manual"
    assert removal["reason"]["summary"].startswith("removed by operator@test")
    clear = remove | {"action": "clear"}
    assert (await client.post("/v1/manual-tags", json=clear)).status_code == 202
    await client.until(f"/v1/customers/{customer}/tags", lambda b: held(b).get("care") == ["buyer"])
