"""Finding 10: what the product keeps on disk (the embedded journal: phones, e-mails) is readable by
its owner only, whatever the umask, including a data directory left by an older version."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from services.embedded.node import JOURNAL_FILE
from services.ingest.importer import Importer, Response
from tests.security.apps import AS_OPERATOR, embedded_node

PROFILE = {"name": "韩梅梅", "phone": "+86 139 0000 0001", "email": "meimei@example.cn", "timezone": "Asia/Shanghai"}


@pytest.fixture(params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_embedded_journal_is_0600_in_a_0700_directory(tmp_path: Path, umask: int) -> None:
    data = tmp_path / "shop" / "data"
    async with embedded_node(data) as http:
        assert (await http.put("/v1/customers/c1/profile", json=PROFILE, headers=AS_OPERATOR)).status_code == 204
    journal = data / JOURNAL_FILE
    assert "+86 139 0000 0001" in journal.read_text(encoding="utf-8")
    assert (_mode(data), _mode(journal)) == (0o700, 0o600)


async def test_a_data_directory_from_an_older_version_is_made_private_at_start(tmp_path: Path, umask: int) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    (data / JOURNAL_FILE).write_bytes(b'{"k":"opt_out","c":"c1","ch":"sms"}\n')
    (data / JOURNAL_FILE).chmod(0o644)
    async with embedded_node(data) as http:
        assert (await http.get("/v1/customers/c1/opt-outs", headers=AS_OPERATOR)).json()["opted_out"] == ["sms"]
    assert (_mode(data), _mode(data / JOURNAL_FILE)) == (0o700, 0o600)


async def test_lines_an_operator_sets_aside_stay_private_and_so_does_the_rewritten_journal(
    tmp_path: Path, umask: int
) -> None:
    data = tmp_path / "data"
    async with embedded_node(data) as http:
        assert (await http.put("/v1/customers/c1/profile", json=PROFILE, headers=AS_OPERATOR)).status_code == 204
    journal = data / JOURNAL_FILE
    with journal.open("ab") as damaged:
        damaged.write(b'{"k":"opt_out","c":"c2","ch":"sms", "phone": "+86 139 0000 0002"\n')
    async with embedded_node(data, skip_bad_journal_lines=True):
        pass
    rejected = [path for path in data.iterdir() if path != journal]
    assert rejected, "the damaged line was set aside somewhere"
    assert "+86 139 0000 0002" in rejected[0].read_text(encoding="utf-8")
    assert {path.name: _mode(path) for path in data.iterdir()} == {path.name: 0o600 for path in data.iterdir()}


def test_the_history_import_state_file_is_0600(tmp_path: Path, umask: int) -> None:
    history = tmp_path / "history.jsonl"
    history.write_bytes(b'{"not": "an event"}\n')
    state = tmp_path / "history.jsonl.import-state.json"
    refused = orjson.dumps({"detail": [{"index": 0, "field": "type", "reason": "unknown"}]})
    Importer(history, state, lambda body: Response(422, refused), batch=1).run()
    assert _mode(state) == 0o600
