"""A tagger SIGKILLed and restarted at once resumes within seconds: with static group membership
(`group_instance_id`, the pod name in the chart) it takes its partitions back without waiting for the
broker to expire the dead member's session (docs/tagger.md has the figures)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path

import orjson
import pytest

from benchmarks.workload import events as generated_events
from tests.support.processes import (
    TaggerProcess,
    produce_at_rate,
    tagger_environment,
    tagger_topics,
    wait_caught_up,
)
from tests.support.tag_streams import definitions

pytestmark = pytest.mark.asyncio(loop_scope="session")

PARTITIONS = 4
RATE = 100.0  # events per second, on every partition, for as long as a measurement may take
SESSION_TIMEOUT_S = 60.0
RESUME_BOUND_S = 45.0  # under the session timeout: only a rejoin as the same static member is that quick


async def test_a_sigkilled_tagger_restarted_at_once_resumes_before_its_session_would_expire(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    seconds = await resume_seconds(
        kafka_bootstrap, tmp_path, instance_id="tagger-0", session_timeout_s=SESSION_TIMEOUT_S
    )
    print(f"\ntagger resumed {seconds:.1f}s after SIGKILL + restart (static membership, session {SESSION_TIMEOUT_S}s)")
    assert seconds < RESUME_BOUND_S


async def resume_seconds(
    bootstrap: str, tmp_path: Path, *, instance_id: str | None, session_timeout_s: float, bound_s: float = 150.0
) -> float:
    """Seconds from a SIGKILL followed at once by a restart until the worker has processed (committed)
    everything that was on its partitions at the restart, while events keep arriving."""
    prefix = f"fault-restart-{uuid.uuid4().hex[:8]}"
    topics = await tagger_topics(bootstrap, prefix, PARTITIONS, definitions())
    tagger_settings = {"session_timeout_s": str(session_timeout_s)}
    if instance_id is not None:
        tagger_settings["group_instance_id"] = instance_id
    env = tagger_environment(bootstrap, prefix, topics, PARTITIONS, tmp_path / "data", **tagger_settings)
    tagger = TaggerProcess(env, tmp_path / "tagger.log")
    lines = [orjson.dumps(event) for event in generated_events(int(RATE * (bound_s + 90)), 500, seed=11)]
    producing = asyncio.create_task(produce_at_rate(bootstrap, topics["events"], lines, RATE))
    tagger.start()
    try:
        await tagger.wait_ready()
        await wait_caught_up(bootstrap, prefix, topics["events"], PARTITIONS, timeout=60.0)
        tagger.kill()
        tagger.start()
        restarted = time.monotonic()
        await wait_caught_up(bootstrap, prefix, topics["events"], PARTITIONS, timeout=bound_s)
        return time.monotonic() - restarted
    finally:
        producing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producing
        tagger.stop()
