"""The embedded node in process, on a manual clock: the notifier's policy from settings, and metrics that
count live work once — a restart's replay of the journal is not counted again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

from schemas.tags import TagGroup
from services.embedded.node import EmbeddedNode
from services.notifier.ports import Message
from services.runtime.clock import ManualClock
from services.runtime.customers import Profile
from services.runtime.definitions_feed import definition_record
from services.runtime.settings import NotifierSettings, Settings
from tests.support.payloads import order, value_group

PLAYBOOKS = """
templates:
  hello: "Hello ${name|there}"
playbooks:
  - id: welcome-high
    trigger: {group: value, tag: high, on: added}
    steps:
      - {channel: sms, template: hello}
      - {channel: sms, template: hello, delay: 2s}
"""


class Recorder:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def send(self, message: Message) -> int:
        self.sent.append(message)
        return 1

    async def close(self) -> None:
        return None


async def test_a_restarted_node_counts_only_what_happens_after_its_journal_is_replayed(tmp_path: Path) -> None:
    playbooks = tmp_path / "playbooks.yaml"
    playbooks.write_text(PLAYBOOKS)
    settings = Settings(notifier=NotifierSettings(quiet_hours="off", caps=("sms:1/1d",)))
    clock = ManualClock(datetime.now(UTC))
    recorder = Recorder()
    live = CollectorRegistry()
    node = EmbeddedNode(
        settings, tmp_path / "data", clock, registry=live, playbooks=playbooks, providers={"sms": recorder}, tick_s=3600
    )
    await node.start()
    topics = settings.topics
    await node.publish(topics.tag_definitions, [definition_record(TagGroup.model_validate(value_group()))])
    await node.customers.set_profile("c1", Profile(name="李雷", phone="+86 138 0000 0001"))
    await node.publish(topics.events, [(b"c1", orjson.dumps(order("c1", "2500")))])
    await node.tick()
    clock.advance(timedelta(seconds=3))
    await node.tick()
    await node.stop()

    assert [message.step for message in recorder.sent] == [0]  # the cap of one SMS a day held the second
    assert _count(live, "tagstream_notifications_total", channel="sms", outcome="suppressed", reason="cap") == 1
    assert _count(live, "tagstream_events_processed_total", kind="order_paid", outcome="applied") == 1
    assert _count(live, "tagstream_tag_changes_total", group="value", tag="high", change="added", source="rule") == 1
    assert _count(live, "tagstream_projector_changes_total", outcome="applied") == 1

    restarted = CollectorRegistry()
    again = EmbeddedNode(
        settings, tmp_path / "data", clock, registry=restarted, playbooks=playbooks, providers={"sms": recorder}
    )
    await again.start()
    await again.stop()
    assert await again.readmodel.current_tags("c1") == {"value": ["high"]}
    assert _count(restarted, "tagstream_events_processed_total", kind="order_paid", outcome="applied") == 0
    assert (
        _count(restarted, "tagstream_tag_changes_total", group="value", tag="high", change="added", source="rule") == 0
    )
    assert _count(restarted, "tagstream_definitions_groups") == 1  # gauges say how things are now
    assert restarted.get_sample_value("tagstream_consumer_lag", {"topic": topics.events, "partition": "0"}) == 0
    assert len(recorder.sent) == 1


def _count(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value
