"""`tagstream campaigns` against a running `tagstream run --embedded`: preview, create, list, report,
and a bad file refused before anything is sent, naming the field."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.cli import main
from services.notifier.policy import load_campaign
from tests.support.campaign_kit import CAMPAIGN, NO_PLAYBOOKS, SEGMENTS, audiences, customers
from tests.support.netprobe import free_port
from tests.support.processes import EmbeddedProcess

ADMIN = "admin-key-0123456789abcdef"


def _call(url: str, method: str, path: str, body: Any) -> int:
    headers = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
    request = urllib.request.Request(url + path, data=orjson.dumps(body), headers=headers, method=method)
    with urllib.request.urlopen(request, timeout=30) as answer:
        return int(answer.status)


def _cli(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, Any]:
    code = main(["campaigns", "--url", url, "--api-key", ADMIN, *args])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else err


@pytest.mark.asyncio(loop_scope="session")
async def test_a_campaign_file_is_previewed_created_listed_and_reported_through_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    playbooks = tmp_path / "playbooks.yaml"
    playbooks.write_text(NO_PLAYBOOKS)
    env = dict(os.environ) | {
        "TAGSTREAM_INGEST__HOST": "127.0.0.1",
        "TAGSTREAM_INGEST__PORT": str(free_port()),
        "TAGSTREAM_INGEST__API_KEYS": orjson.dumps([{"key": ADMIN, "role": "admin", "name": "ops"}]).decode(),
        "TAGSTREAM_NOTIFIER__QUIET_HOURS": "00:00-00:00",  # none: the test may run at night
    }
    node = EmbeddedProcess(env, tmp_path / "node.log", data_dir=tmp_path / "data", playbooks=playbooks)
    node.start()
    try:
        await node.wait_ready()
        ids = customers(50)
        assert _call(node.url, "POST", "/v1/groups", SEGMENTS) == 201
        for tag, members in audiences(ids).items():
            body = {"group_id": "segment", "tag_id": tag, "action": "add", "customer_ids": members}
            assert _call(node.url, "POST", "/v1/manual-tags", body) == 202
        campaign = tmp_path / "campaign.yaml"
        campaign.write_text(json.dumps(CAMPAIGN, ensure_ascii=False))

        code, preview = await asyncio.to_thread(_cli, capsys, node.url, "preview", "-f", str(campaign))
        assert code == 0
        assert preview["audience"] == len(
            (set(audiences(ids)["churn_risk"]) | set(audiences(ids)["lapsed"])) - set(audiences(ids)["staff"])
        )
        code, created = await asyncio.to_thread(_cli, capsys, node.url, "create", "-f", str(campaign))
        assert (code, created["status"]) == (0, "scheduled")
        code, again = await asyncio.to_thread(_cli, capsys, node.url, "create", "-f", str(campaign))
        assert code == 1
        assert "is taken" in again["detail"]
        await asyncio.sleep(3)  # the node fans out and sends every second
        code, listed = await asyncio.to_thread(_cli, capsys, node.url, "list")
        assert [c["campaign"]["id"] for c in listed["campaigns"]] == [CAMPAIGN["id"]]
        code, report = await asyncio.to_thread(_cli, capsys, node.url, "report", CAMPAIGN["id"])
        coupon, push, _ = report["steps"]
        held = coupon["held_out"]
        assert coupon["sent"] == push["sent"] == preview["audience"] - held
        assert held == preview["holdout"]

        bad = tmp_path / "bad.yaml"
        bad.write_text(
            "id: x\naudience: {any_of: [segment/lapsed]}\nsteps: [{channel: sms, template: t, delay: 3 days}]\n"
        )
        code, error = await asyncio.to_thread(_cli, capsys, node.url, "create", "-f", str(bad))
        assert code == 2
        assert "steps.0.delay" in error
    finally:
        node.stop()


def test_the_readmes_campaign_is_a_valid_campaign() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    block = readme.split("cat > winback.yaml <<'YAML'\n", 1)[1].split("\nYAML\n", 1)[0]
    campaign = load_campaign(block, "README.md")
    assert [step.channel for step in campaign.steps] == ["coupon", "push", "sms"]
    assert campaign.holdout == Decimal("0.1")
