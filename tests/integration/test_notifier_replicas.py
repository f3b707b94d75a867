"""Two notifier replicas as real processes, one SIGKILLed during a burst: every due step sent exactly once.

"Exactly once" here means: every expected idempotency key reached the provider with a 2xx, no other
key did, and no step was sent twice as far as a deduplicating provider can tell (distinct keys). Raw
repeated requests with one key can happen (a replica killed after the provider answered but before
it completed the job); the test reports how many, and they all carry the same key.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.notifier.policy import step_key
from tests.support.kafka_io import produce
from tests.support.netprobe import free_port
from tests.support.notifier_kit import (
    SIGNING_SECRET,
    ProviderServer,
    eventually,
    record,
    tag_changed,
    unique_topics,
)
from tests.support.processes import NotifierProcess, notifier_environment

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

TRIGGERS = 5000
PLAYBOOK = """
templates: {hello: "Hello ${name|there}"}
playbooks:
  - id: burst
    trigger: {group: value, tag: vip}
    steps: [{channel: push, template: hello}]
"""


async def test_two_replicas_and_a_sigkill_during_a_burst_send_every_due_step_exactly_once(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    providers = await ProviderServer().start()
    playbooks = tmp_path / "playbooks.yaml"
    playbooks.write_text(PLAYBOOK, encoding="utf-8")
    topics = unique_topics()
    run = uuid.uuid4().hex[:8]
    common = {
        "KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KAFKA__PARTITIONS": "4",
        "KAFKA__REPLICATION_FACTOR": "1",
        "REDIS__URL": redis_url,
        "REDIS__KEY_PREFIX": f"nt-{run}:",
        "TOPICS__TAG_CHANGES": topics.tag_changes,
        "TOPICS__NOTIFICATIONS": topics.notifications,
        "TOPICS__NOTIFICATIONS_DLQ": topics.notifications_dlq,
        "NOTIFIER__PLAYBOOKS_FILE": str(playbooks),
        "NOTIFIER__GROUP_ID": f"nt-{run}",
        "NOTIFIER__WEB_HOST": "127.0.0.1",
        "NOTIFIER__PUSH_URL": providers.url("push"),
        "NOTIFIER__SIGNING_SECRET": SIGNING_SECRET,
        "NOTIFIER__QUIET_HOURS": "off",
        "NOTIFIER__CAPS": "[]",
        "NOTIFIER__LEASE_S": "3",
        "NOTIFIER__POLL_INTERVAL_S": "0.05",
        "NOTIFIER__BATCH": "100",
    }
    replicas = [
        NotifierProcess(
            notifier_environment(common | {"NOTIFIER__WEB_PORT": str(free_port())}), tmp_path / f"notifier-{n}.log"
        )
        for n in range(2)
    ]
    try:
        for replica in replicas:
            replica.start()
        await asyncio.gather(*(replica.wait_ready() for replica in replicas))
        now = datetime.now(UTC)
        changes = [tag_changed(f"customer-{n}", "value", "vip", now, seq=1) for n in range(TRIGGERS)]
        expected = {step_key("burst", 0, change.customer_id, change.seq) for change in changes}
        started = time.monotonic()
        await produce(kafka_bootstrap, topics.tag_changes, [record(change) for change in changes])

        await eventually(lambda: len(providers.delivered()) >= TRIGGERS // 5, timeout=120, what="a fifth sent")
        sent_by_victim = await asyncio.to_thread(sent_by, replicas[0].port)
        replicas[0].kill()
        await eventually(lambda: len(providers.delivered()) >= TRIGGERS, timeout=240, what="every step sent")
        seconds = time.monotonic() - started
        await asyncio.sleep(4)  # longer than a lease: anything still to be re-sent would show by now

        delivered = providers.delivered()
        assert delivered == expected
        per_key = Counter(r.key for r in providers.requests)
        repeated = {key: count for key, count in per_key.items() if count > 1}
        assert sent_by_victim > 0  # both replicas were sending when one was killed
        print(
            f"\nthe killed replica had sent {sent_by_victim}; "
            f"{TRIGGERS} triggers: {len(delivered)} distinct idempotency keys delivered, "
            f"{len(providers.requests)} requests, {providers.duplicates()} raw duplicate requests "
            f"over {len(repeated)} keys (same key each time: deduplicated by the provider); "
            f"all delivered {seconds:.1f}s after the burst began (figure only, not asserted)"
        )
        assert all(r.status == 200 for r in providers.requests)
        assert await asyncio.to_thread(replicas[1].stop) == 0  # graceful; the providers answer on this loop meanwhile
    finally:
        for replica in replicas:
            replica.stop()
        await providers.stop()


def sent_by(port: int) -> float:
    """The replica's own count of sent pushes, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    line = 'tagstream_notifications_total{channel="push",outcome="sent",reason=""}'
    return sum(float(row.split()[-1]) for row in text.splitlines() if row.startswith(line))
