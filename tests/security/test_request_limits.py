"""Finding 4: every request body is bounded before it is read, parsed or authenticated, and the CSV
import bounds its cells and its error report and keeps the node answering meanwhile."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.security.apps import (
    ADMIN,
    AS_ADMIN,
    AS_OPERATOR,
    client,
    embedded_node,
    service_app,
    until_ready,
    write_routes,
)
from tests.support.ingest_harness import create_topics, ingest_settings, running_ingest
from tests.support.netprobe import free_port

HUGE = 141 * 1024 * 1024
"""The body of the reproduction: 141 MB took the ingest service from 82 to 496 MB RSS before its 401."""
LIMIT = 4 * 1024 * 1024
CHUNK = 64 * 1024


class Hose:
    """A body of `total` bytes made as the server pulls it (chunked: no Content-Length), counting the pull."""

    def __init__(self, total: int = HUGE) -> None:
        self.total = total
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        piece = b" " * CHUNK  # whitespace: valid JSON padding, so only the size can stop it
        while self.pulled < self.total:
            self.pulled += len(piece)
            yield piece


@pytest.fixture
def allocations() -> Iterator[None]:
    """Python's allocations traced: `tracemalloc.get_traced_memory()` then gives each request's peak."""
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


async def test_a_huge_declared_body_is_refused_on_every_route_of_the_service_before_anything_else() -> None:
    app = service_app()
    async with client(app) as http:
        for method, path in write_routes(app):
            hose = Hose()
            response = await http.request(
                method, path, content=hose, headers={"Content-Length": str(HUGE), "Content-Type": "application/json"}
            )
            assert response.status_code == 413, (method, path, response.text)
            assert "TAGSTREAM_INGEST__MAX_BODY_BYTES" in response.json()["detail"]
            assert hose.pulled == 0, (method, path)


@pytest.fixture
async def service(kafka_bootstrap: str, redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """`tagstream ingest`'s app with its lifespan running (Kafka producer and definitions, Redis reads)."""
    settings = ingest_settings(kafka_bootstrap, redis_url, f"sec-{uuid.uuid4().hex[:8]}")
    await create_topics(settings)
    async with running_ingest(settings) as running:
        yield running.http


async def test_a_huge_streamed_body_to_the_running_service_stops_at_the_limit_with_or_without_a_key(
    service: httpx.AsyncClient, allocations: None
) -> None:
    await _stream_to_every_route(service)


async def test_a_huge_streamed_body_to_the_embedded_node_stops_at_the_limit_with_or_without_a_key(
    tmp_path: Path, allocations: None
) -> None:
    async with embedded_node(tmp_path / "data") as http:
        await _stream_to_every_route(http)


async def _stream_to_every_route(http: httpx.AsyncClient) -> None:
    """141 MB, chunked, to every route that may take a body, as nobody and as an admin: at most the limit
    is pulled and held, and the answer is 413, or 401 from a route that checks the key before reading."""
    app = service_app()  # the same create_app, the same routes
    with_body = set(write_routes(app, with_body=True))
    for method, path in write_routes(app):
        for headers in ({}, AS_ADMIN):
            hose = Hose()
            tracemalloc.reset_peak()
            response = await http.request(method, path, content=hose, headers=headers)
            _, peak = tracemalloc.get_traced_memory()
            assert response.status_code < 500, (method, path, response.text)
            assert hose.pulled <= LIMIT + CHUNK, (method, path, headers)
            assert peak < 4 * LIMIT, (method, path, peak)
            if (method, path) in with_body:
                assert response.status_code in ({413} if headers else {401, 413}), (method, path)
            else:
                assert hose.pulled == 0, (method, path)  # it takes no body, and reads none
    assert (await http.get("/healthz")).status_code == 200


def _rss_peak_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _stream_unauthenticated(port: int, path: str, total: int) -> int:
    """PUT `total` bytes chunked without a key, as a client would; the answer's status."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            f"PUT {path} HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        piece = f"{CHUNK:x}\r\n".encode() + b" " * CHUNK + b"\r\n"
        sock.setblocking(True)
        try:
            while sent < total:
                sock.sendall(piece)
                sent += CHUNK
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: what a client sees
        answer = b""
        try:
            while b"\r\n" not in answer:
                more = sock.recv(4096)
                if not more:
                    break
                answer += more
        except ConnectionResetError:
            pass
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


async def test_the_running_embedded_node_answers_a_141_mb_body_with_413_and_its_memory_stays_flat(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = dict(os.environ) | {
        "TAGSTREAM_INGEST__HOST": "127.0.0.1",
        "TAGSTREAM_INGEST__PORT": str(port),
        "TAGSTREAM_INGEST__API_KEYS": orjson.dumps([{"key": ADMIN, "role": "admin", "name": "a"}]).decode(),
    }
    log = (tmp_path / "node.log").open("wb")
    tagstream = Path(sys.executable).parent / "tagstream"
    node = subprocess.Popen(
        [str(tagstream), "run", "--data-dir", str(tmp_path / "data"), "--log-level", "warning"],
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        await until_ready(f"http://127.0.0.1:{port}", lambda: node.poll() is None, tmp_path / "node.log")
        before = _rss_peak_kib(node.pid)
        status = await asyncio.to_thread(_stream_unauthenticated, port, "/v1/customers/c1/profile", HUGE)
        after = _rss_peak_kib(node.pid)
        assert status == 413
        print(f"embedded node peak RSS: {before} KiB before, {after} KiB after a {HUGE} byte body")
        assert after - before < 48 * 1024, f"peak RSS grew from {before} to {after} KiB"
        async with httpx.AsyncClient(timeout=5) as http:
            assert (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
    finally:
        node.terminate()
        node.wait(timeout=30)
        log.close()


GROUP = {
    "id": "club",
    "name": "会员俱乐部",
    "mode": "multi",
    "tagging": "manual",
    "tags": [{"id": "gold", "name": "金卡"}],
}


async def test_a_csv_cell_over_the_field_limit_is_a_422_naming_its_line(tmp_path: Path) -> None:
    async with embedded_node(tmp_path / "data") as http:
        assert (await http.post("/v1/groups", json=GROUP, headers=AS_ADMIN)).status_code == 201
        text = "customer_id,tags\nc1,会员俱乐部-金卡\nc2," + "x" * (128 * 1024 + 1) + "\n"
        response = await http.post("/v1/manual-tags/import", content=text.encode(), headers=AS_OPERATOR)
        assert response.status_code == 422, response.text
        assert "line 3" in response.json()["detail"]
        assert len(response.content) < 1000


async def test_an_oversized_cell_within_csvs_own_limit_fails_its_row_with_a_short_reason(tmp_path: Path) -> None:
    async with embedded_node(tmp_path / "data") as http:
        assert (await http.post("/v1/groups", json=GROUP, headers=AS_ADMIN)).status_code == 201
        text = "customer_id,tags\n" + "y" * 100_000 + ",会员俱乐部-金卡\nc2,会员俱乐部-金卡\n"
        summary = (await http.post("/v1/manual-tags/import", content=text.encode(), headers=AS_OPERATOR)).json()
        assert (summary["rows_ok"], summary["rows_failed"]) == (1, 1)
        assert summary["errors"][0]["row"] == 2
        assert len(orjson.dumps(summary["errors"])) < 1000


async def test_four_mb_of_bad_rows_answer_a_short_report_while_healthz_keeps_answering(tmp_path: Path) -> None:
    bad_rows = [f"客户-{n:07d},不存在的组-不存在的标签-{'z' * 40}" for n in range(60_000)]
    text = "customer_id,tags\n" + "\n".join(bad_rows) + "\n"
    assert len(text.encode()) > 4 * 1024 * 1024
    async with embedded_node(tmp_path / "data", max_body_bytes=16 * 1024 * 1024) as http:
        assert (await http.post("/v1/groups", json=GROUP, headers=AS_ADMIN)).status_code == 201
        importing = asyncio.create_task(http.post("/v1/manual-tags/import", content=text.encode(), headers=AS_OPERATOR))
        slowest = 0.0
        while not importing.done():
            started = time.perf_counter()
            assert (await http.get("/healthz")).status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
            await asyncio.sleep(0.05)
        response = await importing
    summary = response.json()
    assert response.status_code == 200
    assert (summary["rows"], summary["rows_ok"], summary["rows_failed"]) == (60_000, 0, 60_000)
    assert len(summary["errors"]) == 100
    assert summary["errors_omitted"] == 59_900
    assert len(response.content) < 64 * 1024
    assert slowest < 1.0, f"/healthz took {slowest:.2f}s during the import"
