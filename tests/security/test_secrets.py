"""Finding 9: no secret setting's value reaches an error message or a log line.

Every kind of settings error pydantic can raise is provoked with a recognisable secret in the
environment, and the start-up output of each command that reads settings is searched for it. Those
commands run as the operator runs them: a child process, its stdout and stderr together.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import orjson
import pytest

from tests.security.apps import until_ready
from tests.support.netprobe import free_port

SECRET = "HUNTER2-7f3a9c-do-not-print-me"
SHORT = "HUNTER2-short"
"""A too-short API key: it was echoed whole in the start-up error."""

COMMANDS = {
    "ingest": ["ingest"],
    "notifier": ["notifier"],
    "embedded": ["run", "--data-dir", "{tmp}/data"],
}

CASES: dict[str, tuple[dict[str, str], str]] = {
    # name: (environment, the variable the error must name instead)
    "api key too short": (
        {"TAGSTREAM_INGEST__API_KEYS": orjson.dumps([{"key": SHORT, "role": "admin", "name": "me"}]).decode()},
        "TAGSTREAM_INGEST__API_KEYS",
    ),
    "api key entry missing a field": (
        {"TAGSTREAM_INGEST__API_KEYS": orjson.dumps([{"key": SECRET, "name": "me"}]).decode()},
        "TAGSTREAM_INGEST__API_KEYS",
    ),
    "api key entry with an unknown field": (
        {"TAGSTREAM_INGEST__API_KEYS": orjson.dumps([{"key": SECRET, "role": "admin", "name": "m", "x": 1}]).decode()},
        "TAGSTREAM_INGEST__API_KEYS",
    ),
    "api keys that are not JSON": ({"TAGSTREAM_INGEST__API_KEYS": f'[{{"key": "{SECRET}"'}, "TAGSTREAM_INGEST"),
    "a section's own check failing": (
        {"TAGSTREAM_KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "TAGSTREAM_KAFKA__SASL_PASSWORD": SECRET},
        "TAGSTREAM_KAFKA",
    ),
    "a secret of the wrong type": (
        {"TAGSTREAM_KAFKA": orjson.dumps({"sasl_password": [SECRET]}).decode()},
        "TAGSTREAM_KAFKA__SASL_PASSWORD",
    ),
    "a section with an unknown field beside a secret": (
        {"TAGSTREAM_REDIS": orjson.dumps({"password": SECRET, "pasword": SECRET}).decode()},
        "TAGSTREAM_REDIS__PASWORD",
    ),
    "a signing secret too short": ({"TAGSTREAM_NOTIFIER__SIGNING_SECRET": SHORT}, "TAGSTREAM_NOTIFIER__SIGNING_SECRET"),
    "another setting wrong beside valid secrets": (
        {
            "TAGSTREAM_NOTIFIER__PUSH_AUTH": f"Bearer {SECRET}",
            "TAGSTREAM_NOTIFIER__SIGNING_SECRET": SECRET + SECRET,
            "TAGSTREAM_REDIS__PASSWORD": SECRET,
            "TAGSTREAM_NOTIFIER__CONCURRENCY": "99",
        },
        "TAGSTREAM_NOTIFIER__CONCURRENCY",
    ),
    "a password inside a URL": ({"TAGSTREAM_REDIS__URL": f"http://:{SECRET}@redis:6379/0"}, "TAGSTREAM_REDIS__URL"),
}


def _environment(extra: dict[str, str]) -> dict[str, str]:
    kept = {name: value for name, value in os.environ.items() if not name.startswith("TAGSTREAM_")}
    return kept | {"TAGSTREAM_INGEST__HOST": "127.0.0.1", "TAGSTREAM_INGEST__PORT": str(free_port())} | extra


async def _start_up(command: list[str], env: dict[str, str], tmp: Path) -> tuple[int, str]:
    tagstream = Path(sys.executable).parent / "tagstream"
    child = await asyncio.create_subprocess_exec(
        str(tagstream),
        *(part.format(tmp=tmp) for part in command),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
    )
    output, _ = await asyncio.wait_for(child.communicate(), timeout=120)
    assert child.returncode is not None
    return child.returncode, output.decode(errors="replace")


@pytest.mark.parametrize("case", list(CASES))
async def test_a_settings_error_names_the_variable_and_never_prints_the_secret(case: str, tmp_path: Path) -> None:
    extra, variable = CASES[case]
    runs = await asyncio.gather(
        *(_start_up(command, _environment(extra), tmp_path / name) for name, command in COMMANDS.items())
    )
    for name, (code, output) in zip(COMMANDS, runs, strict=True):
        assert code == 2, (name, output)
        assert variable in output, (name, output)
        assert SECRET not in output, (name, output)
        assert SHORT not in output, (name, output)


async def test_a_key_file_with_a_short_key_is_reported_without_it(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    keys.write_bytes(orjson.dumps([{"key": SHORT, "role": "admin", "name": "me"}]))
    env = _environment({"TAGSTREAM_INGEST__API_KEYS_FILE": str(keys)})
    for name in ("ingest", "embedded"):
        code, output = await _start_up(COMMANDS[name], env, tmp_path / name)
        assert code == 2, output
        assert str(keys) in output, output
        assert SHORT not in output, output


async def test_a_running_embedded_node_logs_none_of_its_secrets(tmp_path: Path) -> None:
    port = free_port()
    env = _environment(
        {
            "TAGSTREAM_INGEST__PORT": str(port),
            "TAGSTREAM_INGEST__API_KEYS": orjson.dumps([{"key": SECRET, "role": "admin", "name": "me"}]).decode(),
            "TAGSTREAM_NOTIFIER__SMS_URL": "http://127.0.0.1:9/sms",
            "TAGSTREAM_NOTIFIER__SMS_AUTH": f"Bearer {SECRET}",
            "TAGSTREAM_NOTIFIER__SIGNING_SECRET": SECRET + SECRET,
        }
    )
    tagstream = Path(sys.executable).parent / "tagstream"
    log = tmp_path / "node.log"
    with log.open("wb") as sink:
        child = await asyncio.create_subprocess_exec(
            str(tagstream),
            *("run", "--data-dir", str(tmp_path / "data"), "--log-level", "debug"),
            env=env,
            stdout=sink,
            stderr=sink,
        )
    try:
        await until_ready(f"http://127.0.0.1:{port}", lambda: child.returncode is None, log)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            wrong = await http.get("/v1/customers/c1/tags", headers={"Authorization": "Bearer wrong"})
            assert wrong.status_code == 401
            right = await http.get("/v1/customers/c1/tags", headers={"Authorization": f"Bearer {SECRET}"})
            assert right.status_code == 200
    finally:
        child.send_signal(signal.SIGTERM)
        await asyncio.wait_for(child.wait(), timeout=30)
    output = log.read_text(errors="replace")
    assert "GET /v1/customers/c1/tags" in output  # the access log was on, and it was read
    assert SECRET not in output
