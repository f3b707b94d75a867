"""The Kafka-mode services as separate processes on the real broker and Redis, each run in its own topics
and key prefix: what the end-to-end tests start before they talk to ingest over HTTP."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.topics import TopicNames
from tests.support.netprobe import free_port
from tests.support.processes import (
    IngestProcess,
    NotifierProcess,
    TaggerProcess,
    ingest_environment,
    notifier_environment,
    tagger_environment,
)
from tests.support.provider import SIGNING_SECRET

ADMIN = "admin-key-0123456789abcdef"
OPERATOR = "operator-key-0123456789abcdef"
KEYS = [{"key": ADMIN, "role": "admin", "name": "admin"}, {"key": OPERATOR, "role": "operator", "name": "ops"}]


@dataclass(frozen=True)
class Stack:
    prefix: str
    topics: dict[str, str]
    tagger: TaggerProcess
    ingest: IngestProcess
    notifier: NotifierProcess
    notifier_port: int


def services_stack(
    *,
    name: str,
    kafka: str,
    redis_url: str,
    workdir: Path,
    partitions: int,
    playbooks: str,
    push_url: str,
    replication_factor: int = 1,
    notifier_settings: dict[str, str] | None = None,
    tagger_settings: dict[str, str] | None = None,
) -> Stack:
    """Tagger (with its projector), ingest and notifier, not started; the notifier sends pushes to
    `push_url`, signed, with no quiet hours (a test may run at night). `notifier_settings` adds
    TAGSTREAM_NOTIFIER__* settings by name (e.g. {"ALERT_URL": ...}); `tagger_settings`: more tagger settings."""
    prefix = f"{name}-{uuid.uuid4().hex[:8]}"
    topics = {field: f"{prefix}.{field}" for field in TopicNames.model_fields}
    redis = {"TAGSTREAM_REDIS__URL": redis_url, "TAGSTREAM_REDIS__KEY_PREFIX": f"{prefix}:"}
    kafka_env = {
        "TAGSTREAM_KAFKA__PARTITIONS": str(partitions),
        "TAGSTREAM_KAFKA__REPLICATION_FACTOR": str(replication_factor),
    }
    tagger_env = tagger_environment(
        kafka, prefix, topics, partitions, workdir / "tagger", projector="true", **(tagger_settings or {})
    )
    tagger = TaggerProcess(tagger_env | redis | kafka_env, workdir / "tagger.log")
    ingest_env = ingest_environment(kafka, redis_url, prefix, topics, KEYS)
    ingest = IngestProcess(ingest_env | kafka_env, workdir / "ingest.log")
    playbooks_file = workdir / "playbooks.yaml"
    playbooks_file.write_text(playbooks)
    notifier_port = free_port()
    settings: dict[str, Any] = {
        "KAFKA__BOOTSTRAP_SERVERS": kafka,
        "KAFKA__REPLICATION_FACTOR": str(replication_factor),
        "KAFKA__PARTITIONS": str(partitions),
        "REDIS__URL": redis_url,
        "REDIS__KEY_PREFIX": f"{prefix}:",
        "NOTIFIER__GROUP_ID": f"{prefix}-notifier",
        "NOTIFIER__WEB_HOST": "127.0.0.1",
        "NOTIFIER__WEB_PORT": str(notifier_port),
        "NOTIFIER__PLAYBOOKS_FILE": str(playbooks_file),
        "NOTIFIER__PUSH_URL": push_url,
        "NOTIFIER__SIGNING_SECRET": SIGNING_SECRET,
        "NOTIFIER__QUIET_HOURS": "00:00-00:00",
    } | {f"NOTIFIER__{setting}": value for setting, value in (notifier_settings or {}).items()}
    notifier = NotifierProcess(
        notifier_environment(settings | {f"TOPICS__{field}": topic for field, topic in topics.items()}),
        workdir / "notifier.log",
    )
    return Stack(prefix, topics, tagger, ingest, notifier, notifier_port)
