"""The ingest HTTP API over the real broker and Redis, with a real tagger worker: HTTP in, tags out."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from services.runtime.customers import RedisCustomers
from services.runtime.redis import redis_client
from tests.integration.shop_semantics import (
    a_manual_removal_sticks_until_cleared,
    free_orders_count_and_other_currencies_are_refused,
    resent_batches_count_once,
)
from tests.support.ingest_harness import (
    CARE,
    SEGMENT,
    VALUE,
    Stack,
    browse,
    cond,
    create_topics,
    held,
    ingest_settings,
    paid,
    rule,
    running_ingest,
    running_tagger,
    unique,
)
from tests.support.kafka_io import TopicReader

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    settings = ingest_settings(kafka_bootstrap, redis_url, f"it-ingest-{uuid.uuid4().hex[:8]}")
    await create_topics(settings)
    async with running_tagger(settings, tmp_path_factory.mktemp("tagger")), running_ingest(settings) as client:
        for group in (VALUE, CARE, SEGMENT):
            response = await client.post("/v1/groups", "admin", json=group)
            assert response.status_code == 201, response.text
        yield Stack(settings, client)


async def events_for(stack: Stack, customer: str, count: int) -> list[dict[str, Any]]:
    async with TopicReader(stack.settings.kafka.bootstrap_servers, stack.settings.topics.events) as reader:
        await reader.drain()
        return [orjson.loads(r.value) for r in reader.records if r.key == customer.encode()][:count]


async def test_events_posted_over_http_become_tags_readable_over_http(stack: Stack) -> None:
    alice = unique("alice")
    response = await stack.client.post("/v1/events", json=[paid(alice, "250.50"), paid(alice, "2000")])
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 2}
    body = await stack.client.until(f"/v1/customers/{alice}/tags", lambda b: held(b).get("value") == ["high"])
    assert [group["id"] for group in body["groups"]] == ["value", "care"]  # display order
    assert body["groups"][0]["tags"][0] | {"added_at": None} == {
        "id": "high",
        "name": "高价值",
        "added_at": None,
        "source": "rule",
    }
    history = (await stack.client.get(f"/v1/customers/{alice}/history", params={"limit": 2})).json()
    assert [(c["group_id"], c["tag_id"], c["change"]) for c in history["changes"]] == [
        ("value", "high", "added"),
        ("value", "low", "removed"),
    ]  # newest first
    assert history["changes"][0]["reason"]["conditions"][0]["observed"] == "2250.50"
    assert history["next_offset"] == 2
    rest = (await stack.client.get(f"/v1/customers/{alice}/history", params={"offset": 2})).json()
    assert rest["next_offset"] is None
    assert {c["seq"] for c in rest["changes"]} | {c["seq"] for c in history["changes"]} == set(
        range(1, 2 + len(rest["changes"]) + 1)
    )


async def test_accepted_events_are_on_the_events_topic_keyed_by_customer_with_exact_amounts(stack: Stack) -> None:
    customer = unique("exact")
    batch = [paid(customer, "19.99"), browse(customer), paid(customer, "0.0001")]
    assert (await stack.client.post("/v1/events", json=batch)).status_code == 202
    single = await stack.client.post("/v1/events", json=browse(customer))
    assert single.status_code == 202
    assert single.json() == {"accepted": 1}
    published = await events_for(stack, customer, 10)
    assert [event["event_id"] for event in published] == [event["event_id"] for event in batch] + [
        orjson.loads(single.request.content)["event_id"]
    ]
    assert [event.get("amount") for event in published] == ["19.99", None, "0.0001", None]


async def test_a_batch_with_bad_items_is_refused_whole_naming_each_index_and_field(stack: Stack) -> None:
    customer = unique("bad")
    good = paid(customer, "10")
    negative = paid(customer, "-5")
    naive = browse(customer) | {"occurred_at": "2026-11-01T10:00:00"}
    unknown = {"type": "teleport", "event_id": "x", "customer_id": customer}
    response = await stack.client.post("/v1/events", json=[good, negative, naive, unknown])
    assert response.status_code == 422
    problems = {(p["index"], p["field"]) for p in response.json()["detail"]}
    assert problems == {(1, "amount"), (2, "occurred_at"), (3, "type")}
    reasons = [p["reason"] for p in response.json()["detail"]]
    assert any("'-5'" in reason for reason in reasons)
    assert await events_for(stack, customer, 10) == []  # all or nothing: the good one was not published either


async def test_a_resent_batch_of_browses_and_orders_counts_once(stack: Stack) -> None:
    await resent_batches_count_once(stack.client)


async def test_a_free_order_counts_and_an_order_in_another_currency_is_refused_naming_the_field(stack: Stack) -> None:
    await free_orders_count_and_other_currencies_are_refused(stack.client)


async def test_a_rule_tag_removed_by_hand_stays_removed_until_cleared(stack: Stack) -> None:
    await a_manual_removal_sticks_until_cleared(stack.client)


async def test_events_dated_past_the_allowed_skew_are_refused_naming_occurred_at(stack: Stack) -> None:
    customer = unique("future")
    tomorrow = browse(customer) | {"occurred_at": (datetime.now(UTC) + timedelta(days=1)).isoformat()}
    single = await stack.client.post("/v1/events", json=tomorrow)
    assert single.status_code == 422
    [problem] = single.json()["detail"]
    assert (problem["index"], problem["field"]) == (None, "occurred_at")
    assert "ahead of the clock" in problem["reason"]
    batch = await stack.client.post("/v1/events:import", json=[paid(customer, "10"), tomorrow])
    assert [(p["index"], p["field"]) for p in batch.json()["detail"]] == [(1, "occurred_at")]
    soon = browse(customer) | {"occurred_at": (datetime.now(UTC) + timedelta(minutes=4)).isoformat()}
    assert (await stack.client.post("/v1/events", json=soon)).status_code == 202  # within the 5m skew
    assert [event["event_id"] for event in await events_for(stack, customer, 10)] == [soon["event_id"]]


async def test_imported_events_reach_the_topic_marked_as_history(stack: Stack) -> None:
    customer = unique("history")
    marked_live = paid(customer, "30") | {"source": "live"}
    assert (await stack.client.post("/v1/events:import", json=[paid(customer, "20"), marked_live])).status_code == 202
    assert (await stack.client.post("/v1/events", json=browse(customer))).status_code == 202
    assert [event["source"] for event in await events_for(stack, customer, 10)] == ["import", "import", "live"]
    body = await stack.client.until(f"/v1/customers/{customer}/tags", lambda b: held(b).get("value") == ["low"])
    assert body["groups"][0]["tags"][0]["source"] == "import"


async def test_bodies_that_are_not_events_get_422_with_the_reason(stack: Stack) -> None:
    for body in (b"", b"{not json", b"[]", b"42"):
        response = await stack.client.post("/v1/events", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 422, body
        assert response.json()["detail"][0]["reason"]


async def test_oversized_bodies_and_batches_get_413(stack: Stack) -> None:
    limit = stack.settings.ingest.max_body_bytes
    response = await stack.client.post("/v1/events", content=b" " * (limit + 1))
    assert response.status_code == 413
    customer = unique("many")
    too_many = [browse(customer) for _ in range(stack.settings.ingest.max_batch + 1)]
    response = await stack.client.post("/v1/events", json=too_many)
    assert response.status_code == 413
    assert str(stack.settings.ingest.max_batch) in response.json()["detail"]


async def test_every_role_boundary_is_enforced(stack: Stack) -> None:
    client = stack.client
    event = browse(unique("roles"))
    assert (await client.post("/v1/events", None, json=event)).status_code == 401
    assert (await client.post("/v1/events", "not-a-key-at-all-0000", json=event)).status_code == 401
    assert (await client.post("/v1/events", "viewer", json=event)).status_code == 403
    assert (await client.post("/v1/events", "operator", json=event)).status_code == 202
    assert (await client.post("/v1/events", "admin", json=event)).status_code == 202
    assert (await client.get("/v1/groups", None)).status_code == 401
    for role in ("viewer", "operator", "admin"):
        assert (await client.get("/v1/groups", role)).status_code == 200
        assert (await client.get("/v1/customers/x/tags", role)).status_code == 200
    new_group = SEGMENT | {"id": unique("roles"), "name": unique("人群")}
    assert (await client.post("/v1/groups", "viewer", json=new_group)).status_code == 403
    assert (await client.post("/v1/groups", "operator", json=new_group)).status_code == 403
    denied = await client.post("/v1/groups/value/disable", "operator")
    assert denied.status_code == 403
    assert "admin" in denied.json()["detail"]
    manual = {"group_id": "care", "tag_id": "vip", "action": "add", "customer_ids": ["roles-x"]}
    assert (await client.post("/v1/manual-tags", "viewer", json=manual)).status_code == 403
    assert (await client.put("/v1/customers/x/opt-outs/sms", "viewer")).status_code == 403
    assert (await client.post("/v1/manual-tags/import", "viewer", content=b"customer_id,tags\n")).status_code == 403
    assert (await client.post("/v1/audiences/query", None, json={"all_of": ["care/vip"]})).status_code == 401
    assert (await client.http.get("/healthz")).status_code == 200


async def test_group_lifecycle_validates_versions_reorders_disables_and_deletes(stack: Stack) -> None:
    client = stack.client
    gid = unique("tier")
    group = {
        "id": gid,
        "name": unique("等级"),
        "order": 10,
        "mode": "exclusive",
        "tagging": "auto",
        "auto_remove": True,
        "tags": [{"id": "some", "name": "有", "rule": rule(cond("order_count", "gte", 1))}],
    }
    created = await client.post("/v1/groups", "admin", json=group)
    assert created.status_code == 201
    assert created.json()["version"] == 1
    assert (await client.post("/v1/groups", "admin", json=group)).status_code == 409

    unknown_metric = group | {"tags": [{"id": "x", "name": "x", "rule": rule(cond("shoe_size", "gt", 40))}]}
    response = await client.put(f"/v1/groups/{gid}", "admin", json=unknown_metric)
    assert response.status_code == 422
    assert "metric" in response.text
    beyond = cond("browse_count", "gt", 1) | {"window": {"last": "9999d"}}
    too_long = group | {"tags": [{"id": "x", "name": "x", "rule": rule(beyond)}]}
    response = await client.put(f"/v1/groups/{gid}", "admin", json=too_long)
    assert response.status_code == 422
    assert "horizon" in response.json()["detail"][0]
    cyclic = group | {"tags": [{"id": "x", "name": "x", "rule": rule(cond("has_tag", "eq", f"{gid}-b/y"))}]}
    refers = rule(cond("has_tag", "eq", f"{gid}/x"))
    other = group | {"id": f"{gid}-b", "tags": [{"id": "y", "name": "y", "rule": refers}]}
    response = await client.post("/v1/groups", "admin", json=other)
    assert response.status_code == 422
    assert "unknown tag" in response.json()["detail"][0]
    assert (await client.get(f"/v1/groups/{gid}")).json()["version"] == 1

    replaced = await client.put(f"/v1/groups/{gid}", "admin", json=group | {"name": "新名字"})
    assert replaced.status_code == 200
    assert replaced.json()["version"] == 2
    assert (await client.get(f"/v1/groups/{gid}")).json()["name"] == "新名字"
    assert (await client.put(f"/v1/groups/{gid}", "admin", json=cyclic)).status_code == 422  # refers to a missing tag

    listed = [g["id"] for g in (await client.get("/v1/groups")).json()["groups"]]
    assert listed[:3] == ["value", "care", "segment"]
    assert gid in listed
    wanted = [gid, *[i for i in listed if i != gid]]
    reordered = await client.post("/v1/groups:reorder", "admin", json={"group_ids": wanted})
    assert reordered.status_code == 200, reordered.text
    assert [g["id"] for g in reordered.json()["groups"]] == wanted
    assert (await client.get(f"/v1/groups/{gid}")).json()["version"] == 3
    partial = await client.post("/v1/groups:reorder", "admin", json={"group_ids": [gid]})
    assert partial.status_code == 422
    assert "missing" in partial.json()["detail"][0]
    restored = await client.post("/v1/groups:reorder", "admin", json={"group_ids": [*listed]})
    assert restored.status_code == 200

    customer = unique("life")
    assert (await client.post("/v1/events", json=[paid(customer, "50")])).status_code == 202
    await client.until(f"/v1/customers/{customer}/tags", lambda b: gid in held(b))
    disabled = await client.post(f"/v1/groups/{gid}/disable", "admin")
    assert disabled.json()["disabled"] is True
    assert gid not in await client.tags_of(customer)  # hidden...
    audience = await client.post("/v1/audiences/query", json={"all_of": [f"{gid}/some"]})
    assert audience.json()["count"] == 0
    enabled = await client.post(f"/v1/groups/{gid}/enable", "admin")
    assert enabled.json()["version"] == 6
    assert (await client.tags_of(customer))[gid] == ["some"]  # ...not removed

    assert (await client.delete(f"/v1/groups/{gid}", "admin")).status_code == 204
    assert (await client.get(f"/v1/groups/{gid}")).status_code == 404
    assert gid not in await client.tags_of(customer)
    assert (await client.delete(f"/v1/groups/{gid}", "admin")).status_code == 404
    recreated = await client.post("/v1/groups", "admin", json=group)
    assert recreated.json()["version"] == 7  # versions continue past the deletion
    assert (await client.get(f"/v1/groups/{gid}")).json()["version"] == 7
    assert (await client.delete(f"/v1/groups/{gid}", "admin")).status_code == 204
    referenced = await client.delete("/v1/groups/value", "operator")
    assert referenced.status_code == 403


async def test_deleting_a_group_other_rules_refer_to_is_refused(stack: Stack) -> None:
    client = stack.client
    gid = unique("big")
    dependant = {
        "id": gid,
        "name": unique("大户"),
        "mode": "multi",
        "tagging": "auto",
        "tags": [{"id": "yes", "name": "是", "rule": rule(cond("has_tag", "eq", "value/high"))}],
    }
    assert (await client.post("/v1/groups", "admin", json=dependant)).status_code == 201
    refused = await client.delete("/v1/groups/value", "admin")
    assert refused.status_code == 422
    assert "unknown group 'value'" in refused.json()["detail"][0]
    assert (await client.delete(f"/v1/groups/{gid}", "admin")).status_code == 204


async def test_a_group_created_after_customers_exist_is_backfilled(stack: Stack) -> None:
    client = stack.client
    customer = unique("early")
    assert (await client.post("/v1/events", json=[paid(customer, "80"), paid(customer, "90")])).status_code == 202
    await client.until(f"/v1/customers/{customer}/tags", lambda b: held(b).get("value") == ["low"])
    gid = unique("repeat")
    group = {
        "id": gid,
        "name": unique("复购"),
        "order": 50,
        "mode": "multi",
        "tagging": "auto",
        "tags": [{"id": "twice", "name": "两次", "rule": rule(cond("order_count", "gte", 2))}],
    }
    assert (await client.post("/v1/groups", "admin", json=group)).status_code == 201
    await client.until(f"/v1/customers/{customer}/tags", lambda b: held(b).get(gid) == ["twice"])
    history = (await client.get(f"/v1/customers/{customer}/history")).json()["changes"]
    assert (history[0]["group_id"], history[0]["source"]) == (gid, "rule_change")
    assert (await client.delete(f"/v1/groups/{gid}", "admin")).status_code == 204


async def test_manual_tags_apply_to_many_customers_and_auto_groups_refuse_them(stack: Stack) -> None:
    client = stack.client
    first, second = unique("m1"), unique("m2")
    body = {"group_id": "care", "tag_id": "vip", "action": "add", "customer_ids": [first, second, first]}
    response = await client.post("/v1/manual-tags", json=body)
    assert response.status_code == 202, response.text
    assert response.json()["commands"] == 2
    for customer in (first, second):
        tags = await client.until(f"/v1/customers/{customer}/tags", lambda b: "care" in held(b))
        assert tags["groups"][0]["tags"][0]["source"] == "manual"
    history = (await client.get(f"/v1/customers/{first}/history")).json()["changes"]
    assert history[0]["reason"]["summary"] == "added by operator@test"

    refused = await client.post("/v1/manual-tags", json=body | {"group_id": "value", "tag_id": "high"})
    assert refused.status_code == 409
    assert "allows only automatic tagging" in refused.json()["detail"]
    missing = await client.post("/v1/manual-tags", json=body | {"tag_id": "nope"})
    assert missing.status_code == 404

    removed = await client.post("/v1/manual-tags", json=body | {"action": "remove", "customer_ids": [second]})
    assert removed.status_code == 202
    await client.until(f"/v1/customers/{second}/tags", lambda b: "care" not in held(b))


async def test_csv_import_applies_good_rows_reports_bad_ones_and_is_idempotent(stack: Stack) -> None:
    client = stack.client
    good, both, bad = unique("csv1"), unique("csv2"), unique("csv3")
    text = (
        "customer_id,tags\n"
        f"{good},人群-甲\n"
        f'{both},"人群-乙;客户关怀-贵宾"\n'
        f"{bad},人群-丁\n"
        f"{bad},会员贡献价值-高价值\n"
        ",人群-甲\n"
        f"{bad},人群-甲,extra\n"
    )
    response = await client.post("/v1/manual-tags/import", content=text.encode(), headers={"Content-Type": "text/csv"})
    assert response.status_code == 200, response.text
    summary = response.json()
    assert (summary["rows"], summary["rows_ok"], summary["rows_failed"], summary["commands"]) == (6, 2, 4, 3)
    reasons = {error["row"]: error["reason"] for error in summary["errors"]}
    assert sorted(reasons) == [4, 5, 6, 7]
    assert "names no tag" in reasons[4]
    assert "allows only automatic tagging" in reasons[5]
    assert "customer_id" in reasons[6]
    assert "2 columns" in reasons[7]
    await client.until(f"/v1/customers/{both}/tags", lambda b: held(b) == {"care": ["vip"], "segment": ["b"]})
    assert await client.tags_of(good) == {"segment": ["a"]}
    changes = len((await client.get(f"/v1/customers/{both}/history")).json()["changes"])

    again = await client.post("/v1/manual-tags/import", content=text.encode())
    assert again.json()["commands"] == 3
    # a later import for the same customer: once it shows, the re-run before it has been applied too
    later = f"customer_id,tags\n{both},人群-丙\n".encode()
    assert (await client.post("/v1/manual-tags/import", content=later)).status_code == 200
    await client.until(f"/v1/customers/{both}/tags", lambda b: held(b).get("segment") == ["b", "c"])
    history = (await client.get(f"/v1/customers/{both}/history")).json()["changes"]
    assert len(history) == changes + 1  # the re-run added nothing

    one_row = "customer_id,tags\nzz,人群-甲\n".encode()
    dry = await client.post("/v1/manual-tags/import", params={"dry_run": "true"}, content=one_row)
    assert dry.json()["dry_run"] is True
    assert (await client.get("/v1/customers/zz/tags")).json()["groups"] == []
    no_header = await client.post("/v1/manual-tags/import", content="c1,人群-甲\n".encode())
    assert no_header.status_code == 422


async def test_audiences_deduplicate_overlaps_and_page_by_cursor_over_one_snapshot(stack: Stack) -> None:
    client = stack.client
    tag = unique("aud")
    members = {name: f"{tag}-{name}" for name in ("ab", "a", "b", "abc", "c")}
    rows = {
        members["ab"]: "人群-甲;人群-乙",
        members["a"]: "人群-甲",
        members["b"]: "人群-乙",
        members["abc"]: "人群-甲;人群-乙;人群-丙",
        members["c"]: "人群-丙",
    }
    text = "customer_id,tags\n" + "".join(f'{c},"{t}"\n' for c, t in rows.items())
    assert (await client.post("/v1/manual-tags/import", content=text.encode())).json()["rows_ok"] == 5
    for customer in rows:
        await client.until(f"/v1/customers/{customer}/tags", lambda b: "segment" in held(b))

    async def audience(**query: Any) -> list[str]:
        found: list[str] = []
        response = await client.post("/v1/audiences/query", json=query | {"limit": 2})
        assert response.status_code == 200, response.text
        page = response.json()
        count = page["count"]
        while True:
            found.extend(page["customer_ids"])
            if page["cursor"] is None:
                break
            page = (await client.post("/v1/audiences/query", json={"cursor": page["cursor"], "limit": 2})).json()
        assert len(found) == count == len(set(found))  # pages never repeat a customer
        return sorted(customer for customer in found if customer.startswith(tag))

    def ids(*names: str) -> list[str]:
        return sorted(members[name] for name in names)

    assert await audience(any_of=["segment/a", "segment/b"]) == ids("ab", "a", "b", "abc")  # each once
    assert await audience(all_of=["segment/a", "segment/b"]) == ids("ab", "abc")
    assert await audience(all_of=["segment/a"], none_of=["segment/c"]) == ids("ab", "a")
    assert await audience(all_of=["segment/a"], any_of=["segment/b", "segment/c"]) == ids("ab", "abc")

    export = await client.post("/v1/audiences/export", json={"any_of": ["segment/a", "segment/b", "segment/c"]})
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    exported = [row[0] for row in csv.reader(io.StringIO(export.text))]
    assert exported[0] == "customer_id"
    assert sorted(c for c in exported[1:] if c.startswith(tag)) == ids("ab", "a", "b", "abc", "c")
    assert len(exported[1:]) == len(set(exported[1:]))

    unknown = await client.post("/v1/audiences/query", json={"all_of": ["segment/zzz"]})
    assert unknown.status_code == 422
    forged = await client.post("/v1/audiences/query", json={"cursor": "bm90IGEgY3Vyc29y"})
    assert forged.status_code == 422


async def test_opt_outs_and_profiles_are_written_where_the_notifier_reads_them(stack: Stack) -> None:
    client = stack.client
    customer = unique("consent")
    response = await client.put(f"/v1/customers/{customer}/opt-outs/sms")
    assert response.json()["opted_out"] == ["sms"]
    assert (await client.put(f"/v1/customers/{customer}/opt-outs/fax")).status_code == 422
    profile = {"name": "王小明", "phone": "+86 138 0000 0000", "timezone": "Asia/Shanghai"}
    assert (await client.put(f"/v1/customers/{customer}/profile", json=profile)).status_code == 204
    store = RedisCustomers(redis_client(stack.settings.redis), stack.settings.redis.key_prefix)
    assert await store.opted_out(customer) == frozenset({"sms"})
    assert (await store.profile(customer)).timezone == "Asia/Shanghai"
    assert (await client.delete(f"/v1/customers/{customer}/opt-outs/*")).json()["opted_out"] == []
    assert await store.opted_out(customer) == frozenset()


async def test_metrics_count_requests_by_route_template_and_events_by_outcome(stack: Stack) -> None:
    client = stack.client
    await client.get("/v1/customers/some-one/tags")
    text = (await client.http.get("/metrics")).text
    assert 'tagstream_http_requests_total{method="GET",route="/v1/customers/{customer_id}/tags",status="200"}' in text
    assert 'tagstream_ingest_events_total{outcome="accepted"}' in text
    assert 'tagstream_ingest_events_total{outcome="rejected"}' in text
    assert "tagstream_ingest_producer_buffer_bytes" in text
    assert "some-one" not in text
    assert (await client.http.get("/docs")).status_code == 200
    openapi = (await client.http.get("/openapi.json")).json()
    assert "CustomerEvent" in openapi["components"]["schemas"]
    assert {"/v1/events", "/v1/audiences/query", "/v1/manual-tags/import"} <= set(openapi["paths"])


async def test_a_restarted_service_rebuilds_the_definitions_from_the_topic(stack: Stack) -> None:
    async with running_ingest(stack.settings) as fresh:
        listed = [g["id"] for g in (await fresh.get("/v1/groups")).json()["groups"]]
        assert listed[:3] == ["value", "care", "segment"]
        assert (await fresh.get("/v1/groups/value")).json()["name"] == "会员贡献价值"


async def test_a_full_producer_buffer_answers_429_and_every_accepted_event_reaches_the_topic(
    kafka_bootstrap: str, redis_url: str, stack: Stack
) -> None:
    prefix = stack.settings.redis.key_prefix.rstrip(":")
    settings = ingest_settings(kafka_bootstrap, redis_url, prefix, producer_buffer_bytes=1024)
    customer = unique("flood")
    async with running_ingest(settings) as client:
        batches = [[browse(customer) for _ in range(10)] for _ in range(20)]
        answers = await asyncio.gather(*(client.post("/v1/events", json=batch) for batch in batches))
    statuses = [answer.status_code for answer in answers]
    assert set(statuses) <= {202, 429}
    assert 429 in statuses
    assert all(a.headers["Retry-After"] == "1" for a in answers if a.status_code == 429)
    accepted = {e["event_id"] for batch, a in zip(batches, answers, strict=True) if a.status_code == 202 for e in batch}
    on_topic = {event["event_id"] for event in await events_for(stack, customer, 1000)}
    assert on_topic == accepted


async def test_kafka_unreachable_answers_503_and_not_ready(redis_url: str) -> None:
    from tests.support.netprobe import free_port

    settings = ingest_settings(f"127.0.0.1:{free_port()}", redis_url, unique("nokafka"))
    async with running_ingest(settings, wait_ready=False) as client:
        response = await client.post("/v1/events", json=browse("c1"))
        assert response.status_code == 503
        assert (await client.http.get("/readyz")).status_code == 503
        assert (await client.get("/v1/groups")).status_code == 503
        assert (await client.http.get("/healthz")).status_code == 200


async def test_redis_unreachable_answers_503_on_reads_while_events_are_still_accepted(
    kafka_bootstrap: str, stack: Stack
) -> None:
    from tests.support.netprobe import free_port

    prefix = stack.settings.redis.key_prefix.rstrip(":")
    settings = ingest_settings(kafka_bootstrap, f"redis://127.0.0.1:{free_port()}/0", prefix)
    async with running_ingest(settings) as client:
        assert (await client.get("/v1/customers/c1/tags")).status_code == 503
        assert (await client.post("/v1/audiences/query", json={"all_of": ["care/vip"]})).status_code == 503
        assert (await client.put("/v1/customers/c1/opt-outs/sms")).status_code == 503
        assert (await client.post("/v1/events", json=browse(unique("no-redis")))).status_code == 202
