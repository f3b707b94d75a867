"""`tagstream tags apply` against the real broker: a diff, a dry run, publishing, and the API agreeing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.ingest_harness import create_topics, ingest_settings, running_ingest

pytestmark = pytest.mark.integration

RULES = """
groups:
  - id: value
    name: 会员贡献价值
    mode: exclusive
    tagging: auto
    tags:
      - {id: high, name: 高价值, rule: {conditions: [{metric: total_spent, op: gte, value: 2000}]}}
  - id: care
    name: 客户关怀
    mode: multi
    tagging: manual
    tags: [{id: vip, name: 贵宾}]
"""


async def tags_apply(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    tagstream = str(Path(sys.executable).parent / "tagstream")
    return await asyncio.to_thread(
        subprocess.run, [tagstream, "tags", "apply", *args], env=env, capture_output=True, text=True, timeout=120
    )


async def test_apply_prints_the_diff_publishes_and_the_api_reads_it_back(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    prefix = f"it-apply-{uuid.uuid4().hex[:8]}"
    settings = ingest_settings(kafka_bootstrap, redis_url, prefix)
    await create_topics(settings)
    env = dict(os.environ) | {
        "TAGSTREAM_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TAGSTREAM_KAFKA__REPLICATION_FACTOR": "1",
        "TAGSTREAM_TOPICS__TAG_DEFINITIONS": settings.topics.tag_definitions,
        "TAGSTREAM_INGEST__PREVIEW_TIMEOUT_S": "2",
    }
    rules = tmp_path / "groups.yaml"
    rules.write_text(RULES, encoding="utf-8")

    dry = await tags_apply(env, "-f", str(rules), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    diff, impact, summary = dry.stdout.splitlines()[:2], dry.stdout.splitlines()[2], dry.stdout.splitlines()[3:]
    assert diff == ["+ value (会员贡献价值): create, version 1", "+ care (客户关怀): create, version 1"]
    # No tagger worker runs here: the impact is unknown, and says which partitions went unanswered.
    assert impact.startswith("impact unknown: no tagger worker answered for partitions [0, 1, 2"), impact
    assert summary == ["dry run: 2 change(s) not published"]
    quick = await tags_apply(env, "-f", str(rules), "--dry-run", "--no-impact")
    assert quick.stdout.splitlines() == [*diff, *summary]
    applied = await tags_apply(env, "-f", str(rules))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines()[-1] == "published 2 change(s)"

    rules.write_text(RULES.replace("value: 2000", "value: 3000").replace("  - id: care", "  - id: care2"))
    changed = await tags_apply(env, "-f", str(rules))
    assert changed.stdout.splitlines() == [
        "~ value (会员贡献价值): changes tags, version 2",
        "+ care2 (客户关怀): create, version 1",
        "! care (客户关怀): not in the file, kept (--prune deletes it)",
        "published 2 change(s)",
    ]
    pruned = await tags_apply(env, "-f", str(rules), "--prune")
    assert pruned.stdout.splitlines() == [
        "= value (会员贡献价值): unchanged, version 2",
        "= care2 (客户关怀): unchanged, version 1",
        "- care (客户关怀): delete",
        "published 1 change(s)",
    ]
    async with running_ingest(settings) as client:
        groups = (await client.get("/v1/groups")).json()["groups"]
        assert [(g["id"], g["version"]) for g in groups] == [("care2", 1), ("value", 2)]

    rules.write_text(RULES.replace("metric: total_spent", "metric: shoe_size"))
    invalid = await tags_apply(env, "-f", str(rules))
    assert invalid.returncode == 1
    assert "groups.0.tags.0.rule.conditions.0" in invalid.stderr
