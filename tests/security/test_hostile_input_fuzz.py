"""Hostile generated input to every write route of an embedded node and to every file parser: each
answer is a 4xx (or a 2xx) and each parser error a clear one, never a 5xx or a crash, each input
handled in bounded time and memory, and the node restarts afterwards with everything it accepted.

Bounded for the suite (a fixed number of examples, derandomised, a few seconds); for a longer run
set e.g. TAGSTREAM_FUZZ_EXAMPLES=2000.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.tags import TagGroup
from services.engine.codec import encode
from services.ingest.manual import ImportFileError, ManualTagging, plan_import
from services.notifier.policy import PlaybookError, load_playbooks
from services.runtime.definitions import RulesFileError, parse_groups
from tests.security import hostile
from tests.security.node import ADMIN, Running, running_node

EXAMPLES = int(os.environ.get("TAGSTREAM_FUZZ_EXAMPLES", "25"))
SECONDS_PER_INPUT = 5.0  # generous: tracemalloc slows pure-Python parsing several times, and CI is shared
PEAK_BYTES_PER_INPUT = 64 * 1024 * 1024
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

Request = tuple[str, str, Any]
"""(method, path, body): a JSON value, CSV bytes, or None."""

_IDS = st.one_of(st.sampled_from(["vip", "c1", "c3"]), hostile.UNSAFE_TEXT, st.just("x" * 300)).map(
    lambda text: quote(text, safe="")
)
_EVENT = st.one_of(*(hostile.mutated(event) for event in hostile.EVENTS))
REQUESTS: st.SearchStrategy[Request] = st.one_of(
    st.tuples(
        st.sampled_from(["POST"]),
        st.sampled_from(["/v1/events", "/v1/events:import"]),
        st.one_of(_EVENT, st.lists(_EVENT, min_size=1, max_size=3)),
    ),
    st.tuples(st.just("POST"), st.just("/v1/groups"), hostile.mutated(hostile.GROUP)),
    st.tuples(st.just("PUT"), _IDS.map(lambda group: f"/v1/groups/{group}"), hostile.mutated(hostile.GROUP)),
    st.tuples(
        st.just("POST"),
        st.tuples(_IDS, st.sampled_from(["disable", "enable"])).map(lambda pair: f"/v1/groups/{pair[0]}/{pair[1]}"),
        st.none(),
    ),
    st.tuples(st.just("DELETE"), _IDS.map(lambda group: f"/v1/groups/{group}"), st.none()),
    st.tuples(st.just("POST"), st.just("/v1/groups:reorder"), hostile.mutated(hostile.REORDER)),
    st.tuples(st.just("POST"), st.just("/v1/manual-tags"), hostile.mutated(hostile.MANUAL)),
    st.tuples(st.just("POST"), st.sampled_from(["/v1/manual-tags/import", "/v1/manual-tags/import?dry_run=true"]),
              hostile.csv_files()),
    st.tuples(st.just("PUT"), _IDS.map(lambda customer: f"/v1/customers/{customer}/profile"),
              hostile.mutated(hostile.PROFILE)),
    st.tuples(
        st.sampled_from(["PUT", "DELETE"]),
        st.tuples(_IDS, st.sampled_from(["sms", "*", "fax"])).map(lambda p: f"/v1/customers/{p[0]}/opt-outs/{p[1]}"),
        st.none(),
    ),
    st.tuples(
        st.just("POST"),
        st.sampled_from(["/v1/audiences/query", "/v1/audiences/export"]),
        hostile.mutated(hostile.AUDIENCE),
    ),
)  # fmt: skip


@FUZZ
@given(requests=st.lists(REQUESTS, min_size=1, max_size=6))
def test_hostile_requests_to_every_write_route_get_4xx_in_bounded_time_and_memory_and_lose_nothing(
    requests: list[Request],
) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        asyncio.run(_session(Path(data_dir), requests))


async def _session(data_dir: Path, requests: list[Request]) -> None:
    async with running_node(data_dir) as running:
        assert (await _send(running, ("POST", "/v1/groups", hostile.GROUP))).status_code == 201
        assert (await _send(running, ("POST", "/v1/events", hostile.EVENTS))).status_code == 202
        for request in requests:
            with bounded(f"{request[0]} {request[1][:80]}"):
                answer = await _send(running, request)
            assert answer.status_code < 500, (request[0], request[1][:200], answer.text[:2000])
            assert len(answer.content) < 256 * 1024
        before = await _snapshot(running)
    async with running_node(data_dir) as restarted:
        assert await _snapshot(restarted) == before


async def _send(running: Running, request: Request) -> Any:
    method, path, body = request
    headers = {"Authorization": f"Bearer {ADMIN}"}
    if isinstance(body, bytes):
        headers["Content-Type"] = "text/csv"
        content = body
    else:
        headers["Content-Type"] = "application/json"
        content = b"" if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return await running.http.request(method, path, content=content, headers=headers)


async def _snapshot(running: Running) -> dict[str, Any]:
    """Everything a restart must bring back: definitions, every customer's state, tags, consent."""
    node = running.node
    customers = [*sorted(node.tagger.replay.states), "c1", "c3"]
    return {
        "groups": {group_id: group.model_dump() for group_id, group in node.tagger.groups.items()},
        "versions": dict(node.versions),
        "states": {customer: encode(state) for customer, state in node.tagger.replay.states.items()},
        "tags": {customer: await node.readmodel.current_tags(customer) for customer in customers},
        "opted_out": {customer: await node.customers.opted_out(customer) for customer in customers},
        "profiles": {customer: (await node.customers.profile(customer)).model_dump() for customer in customers},
    }


@FUZZ
@given(text=hostile.yaml_documents("groups", [hostile.GROUP]))
def test_hostile_rules_files_are_read_or_refused_clearly(text: str) -> None:
    _read_or_refused(lambda: parse_groups(text, "rules.yaml"), RulesFileError)


@FUZZ
@given(text=hostile.yaml_documents("", hostile.PLAYBOOKS))
def test_hostile_playbooks_files_are_read_or_refused_clearly(text: str) -> None:
    _read_or_refused(lambda: load_playbooks(text, "playbooks.yaml"), PlaybookError)


@FUZZ
@given(data=hostile.csv_files())
def test_hostile_csv_imports_are_planned_or_refused_clearly(data: bytes) -> None:
    now = datetime(2026, 11, 23, tzinfo=UTC)
    tagging = ManualTagging({"vip": TagGroup.model_validate(hostile.GROUP)}, horizon_days=400)
    plan = _read_or_refused(lambda: plan_import(data, tagging, actor="ops@shop", now=now), ImportFileError)
    for error in getattr(plan, "errors", []):
        assert len(error.reason) < 600


def _read_or_refused(read: Callable[[], Any], refusal: type[Exception]) -> Any:
    with bounded("parse"):
        try:
            return read()
        except refusal as error:
            message = str(error)
    assert 0 < len(message) < 2000, message[:3000]
    return None


@contextmanager
def bounded(what: str) -> Iterator[None]:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        yield
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < SECONDS_PER_INPUT, f"{what}: {elapsed:.1f}s"
    assert peak < PEAK_BYTES_PER_INPUT, f"{what}: peak {peak / 2**20:.0f} MiB"


pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")
