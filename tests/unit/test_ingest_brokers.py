"""What the broker watch concludes from the brokers' metadata (an admin client stand-in answers)."""

from __future__ import annotations

from typing import Any

from aiokafka.errors import KafkaTimeoutError, NodeNotReadyError

from services.ingest.brokers import BrokerWatch
from services.runtime.settings import KafkaSettings


class Answer:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    def to_object(self) -> dict[str, Any]:
        return self.body


class Metadata:
    """describe_topics / describe_configs as a 3-broker cluster would answer them."""

    def __init__(self, isr: dict[int, list[int]], *, min_insync: str = "2", leader: int = 1) -> None:
        self.isr = isr
        self.min_insync = min_insync
        self.leader = leader

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        return [
            {
                "topic": topic,
                "error_code": 0,
                "partitions": [
                    {"partition": p, "leader": self.leader, "replicas": [1, 2, 3], "isr": isr}
                    for p, isr in self.isr.items()
                ],
            }
            for topic in topics
        ]

    async def describe_configs(self, resources: list[Any]) -> list[Answer]:
        entries = [{"config_names": "min.insync.replicas", "config_value": self.min_insync}]
        resources_body = [{"resource_name": r.name, "config_entries": entries} for r in resources]
        return [Answer({"resources": resources_body})]

    async def close(self) -> None:
        return None


class Unreachable:
    """The admin client asking a node that is down."""

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        raise NodeNotReadyError("Attempt to send a request to node which is not ready (node id 2).")

    async def close(self) -> None:
        return None


class Probe:
    """Writes the probe record: acknowledged or not, as the cluster would."""

    def __init__(self, *, acknowledged: bool) -> None:
        self.acknowledged = acknowledged
        self.writes = 0

    async def __call__(self) -> None:
        self.writes += 1
        if not self.acknowledged:
            raise KafkaTimeoutError()


async def look(metadata: Metadata, probe: Probe | None = None) -> BrokerWatch:
    watch = BrokerWatch(KafkaSettings(), ["tagstream.events"], timeout_s=1.0, probe=probe)
    watch._admin = metadata  # type: ignore[assignment]
    await watch.check()
    return watch


async def test_a_cluster_with_one_broker_down_still_takes_writes() -> None:
    watch = await look(Metadata({0: [1, 2], 1: [2, 3], 2: [1, 3]}))
    assert (watch.writable, watch.problem) == (True, None)


async def test_two_brokers_down_leave_partitions_below_min_insync_and_writes_refused() -> None:
    watch = await look(Metadata({0: [1, 2], 1: [1], 2: [1, 3]}))
    assert watch.problem == "tagstream.events[1] has 1 in-sync replica(s), min.insync.replicas is 2"


async def test_a_partition_without_a_leader_refuses_writes() -> None:
    watch = await look(Metadata({0: [1, 2, 3]}, leader=-1))
    assert watch.problem == "tagstream.events[0] has no leader"


async def test_metadata_that_looks_fine_does_not_clear_a_failed_send_until_a_probe_write_is_acknowledged() -> None:
    # 2 of 3 combined KRaft nodes down: the survivor serves the metadata it had, full in-sync sets
    probe = Probe(acknowledged=True)
    watch = await look(Metadata({0: [1, 2, 3]}), probe)
    assert (watch.writable, probe.writes) == (True, 1)  # the start is proven by a write too
    await watch.check()
    assert probe.writes == 1  # proven: healthy checks write nothing

    probe.acknowledged = False
    watch.send_failed("a send was not acknowledged: KafkaTimeoutError")
    assert not watch.writable
    await watch.check()
    await watch.check()
    assert not watch.writable
    assert probe.writes == 3
    assert watch.problem is not None
    assert watch.problem.startswith("a probe write was not acknowledged (KafkaTimeoutError)")

    probe.acknowledged = True  # the brokers are back
    await watch.check()
    assert (watch.writable, probe.writes) == (True, 4)


async def test_brokers_that_did_not_answer_must_take_a_probe_write_before_writes_resume() -> None:
    probe = Probe(acknowledged=False)
    watch = await look(Metadata({0: [1, 2, 3]}), probe)
    assert not watch.writable  # never proven since the start
    watch._admin = Unreachable()  # type: ignore[assignment]  # the check reached a dead node
    await watch.check()
    assert watch.problem == "Kafka at 127.0.0.1:9092 did not answer: NodeNotReadyError"
    writes = probe.writes
    watch._admin = Metadata({0: [1, 2, 3]})  # type: ignore[assignment]  # the survivor's stale metadata
    await watch.check()
    assert not watch.writable
    assert probe.writes == writes + 1


async def test_no_probe_is_written_while_the_metadata_itself_shows_the_problem() -> None:
    probe = Probe(acknowledged=True)
    watch = await look(Metadata({0: [1]}), probe)
    watch.send_failed("a send was not acknowledged: KafkaTimeoutError")
    await watch.check()
    assert watch.problem == "tagstream.events[0] has 1 in-sync replica(s), min.insync.replicas is 2"
    assert probe.writes == 0


async def test_without_a_probe_the_next_check_decides_alone() -> None:
    watch = await look(Metadata({0: [1, 2, 3]}))
    watch.send_failed("a send was not acknowledged: KafkaTimeoutError")
    assert not watch.writable
    await watch.check()
    assert watch.writable
