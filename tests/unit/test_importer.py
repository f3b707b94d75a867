"""`tagstream import`: counts per outcome, and a resumed import loses no line and counts none twice.

The HTTP API is replaced by a fake server that validates like the import route (no I/O but the
input and state files in a temporary folder).
"""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from services.ingest.api.events import parse_events
from services.ingest.importer import Importer, ImportFailed, Interrupted, Response, default_state_path


class FakeServer:
    """Answers like POST /v1/events:import; goes down after `up_for` requests when told to."""

    def __init__(self, up_for: int | None = None) -> None:
        self.up_for = up_for
        self.requests = 0
        self.accepted: list[str] = []

    def __call__(self, body: bytes) -> Response:
        self.requests += 1
        if self.up_for is not None and self.requests > self.up_for:
            raise ConnectionRefusedError("connection refused")
        events, errors = parse_events(body)
        if errors:
            detail = [error.model_dump() for error in errors]
            return Response(422, orjson.dumps({"detail": detail}))
        self.accepted.extend(event.event_id for event in events)
        return Response(202, orjson.dumps({"accepted": len(events)}))


def _history(path: Path, lines: int) -> Path:
    rows = []
    for number in range(1, lines + 1):
        event = {
            "type": "order_paid",
            "event_id": f"e{number}",
            "customer_id": f"c{number % 7}",
            "occurred_at": "2026-09-01T23:30:00+08:00",
            "order_id": f"o{number}",
            "amount": "0" if number % 5 == 0 else "88.80",  # free orders too
            "currency": "CNY",
        }
        rows.append(orjson.dumps(event))
        if number % 9 == 0:
            rows.append(orjson.dumps(event))  # a resent line
        if number % 13 == 0:
            rows.append(orjson.dumps(event | {"event_id": f"bad{number}", "amount": "-1"}))
        if number % 17 == 0:
            rows.append(b"{not json")
    path.write_bytes(b"\n".join(rows) + b"\n")
    return path


def _importer(source: Path, server: FakeServer, batch: int = 10) -> Importer:
    return Importer(
        source,
        default_state_path(source),
        server,
        batch=batch,
        attempts=2,
        sleep=lambda _: None,
        progress=io.StringIO(),
    )


def test_an_import_counts_accepted_duplicate_and_rejected_lines_with_reasons(tmp_path: Path) -> None:
    server = FakeServer()
    progress = _importer(_history(tmp_path / "events.jsonl", 100), server).run()
    assert (progress.accepted, progress.duplicate, progress.rejected) == (100, 11, 7 + 5)
    assert server.accepted == [f"e{number}" for number in range(1, 101)]
    assert progress.reasons["amount: Input should be greater than or equal to 0 (got '-1')"] == 7
    assert progress.reasons["(line): not a JSON object with an event_id"] == 5
    assert progress.done


def test_an_interrupted_import_resumes_without_losing_or_double_counting_a_line(tmp_path: Path) -> None:
    source = _history(tmp_path / "events.jsonl", 100)
    down = FakeServer(up_for=4)
    with pytest.raises(Interrupted, match="run the import again to resume"):
        _importer(source, down).run()
    saved = orjson.loads(default_state_path(source).read_bytes())
    assert saved["accepted"] == len(down.accepted) > 0
    assert not saved["done"]

    back = FakeServer()
    progress = _importer(source, back).run()
    assert down.accepted + back.accepted == [f"e{number}" for number in range(1, 101)]  # each once, in order
    assert (progress.accepted, progress.duplicate, progress.rejected) == (100, 11, 12)
    assert _importer(source, FakeServer()).run().accepted == 100  # done: a third run sends nothing


def test_a_resent_line_after_the_resume_point_is_still_a_duplicate(tmp_path: Path) -> None:
    source = _history(tmp_path / "events.jsonl", 20)
    source.write_bytes(source.read_bytes() + source.read_bytes().splitlines(keepends=True)[0])
    with pytest.raises(Interrupted):
        _importer(source, FakeServer(up_for=1)).run()
    progress = _importer(source, FakeServer()).run()
    assert (progress.accepted, progress.duplicate) == (20, 3)


def test_an_input_changed_before_the_resume_point_is_refused(tmp_path: Path) -> None:
    source = _history(tmp_path / "events.jsonl", 40)
    with pytest.raises(Interrupted):
        _importer(source, FakeServer(up_for=2)).run()
    source.write_bytes(source.read_bytes().replace(b'"e3"', b'"E3"'))
    with pytest.raises(ImportFailed, match="changed since"):
        _importer(source, FakeServer()).run()
    assert _importer(source, FakeServer()).run(restart=True).accepted == 40


def test_a_rate_spaces_the_batches_so_the_run_never_sends_faster(tmp_path: Path) -> None:
    source = _history(tmp_path / "events.jsonl", 100)
    now = [0.0]
    sent_at: list[tuple[float, int]] = []
    server = FakeServer()

    def send(body: bytes) -> Response:
        sent_at.append((now[0], len(orjson.loads(body))))
        return server(body)

    def sleep(seconds: float) -> None:
        now[0] += seconds

    importer = Importer(
        source, default_state_path(source), send, batch=10, rate=50.0, sleep=sleep, clock=lambda: now[0]
    )
    assert importer.run().accepted == 100
    # the server answers at once, so each request goes exactly when the events before it fit the rate:
    # never sooner (the cap), never later (no time lost); a batch resent without its 422'd lines counts again
    sent = 0
    for at, size in sent_at:
        assert at == pytest.approx(sent / 50.0)
        sent += size
    assert sent > 100
    assert len(sent_at) > 10
