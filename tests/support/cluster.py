"""The local replicated Kafka cluster (``scripts/kafka.sh --nodes 3``) for fault tests.

Starting, stopping and crashing nodes shells out to the script (which owns ports, data and
readiness); who leads what is asked of the cluster itself through aiokafka's admin client.
Nothing happens at import time.
"""

from __future__ import annotations

from collections import Counter

from aiokafka.admin import AIOKafkaAdminClient

from tests.support.infra import START_TIMEOUT_S, STOP_TIMEOUT_S, InfraError, ScriptResult, run_script

NODES = 3


def _cluster(*args: str, timeout: float) -> ScriptResult:
    return run_script("kafka.sh", "--nodes", str(NODES), *args, timeout=timeout)


def _checked(result: ScriptResult, what: str) -> str:
    if result.returncode != 0:
        raise InfraError(f"scripts/kafka.sh {what} failed (exit {result.returncode})", result.output)
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def cluster_running() -> bool:
    return _cluster("status", timeout=STOP_TIMEOUT_S).returncode == 0


def start_cluster() -> str:
    """Start (or reuse, or resume) the 3-node cluster; its bootstrap list."""
    return _checked(_cluster("start", timeout=START_TIMEOUT_S), "--nodes 3 start")


def reset_cluster() -> None:
    """Stop every node and delete the cluster's data."""
    _checked(_cluster("reset", timeout=STOP_TIMEOUT_S), "--nodes 3 reset")


def kill_node(node_id: int) -> None:
    """SIGKILL one node (a crash: its data stays for `start_node`)."""
    _checked(run_script("kafka.sh", "kill-node", str(node_id), timeout=STOP_TIMEOUT_S), f"kill-node {node_id}")


def start_node(node_id: int) -> None:
    """Start one node again with its data; returns once it answers metadata requests."""
    _checked(run_script("kafka.sh", "start-node", str(node_id), timeout=START_TIMEOUT_S), f"start-node {node_id}")


async def partition_leaders(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition -> id of the node leading it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return {entry["partition"]: entry["leader"] for entry in described["partitions"]}


async def group_coordinator(bootstrap: str, group_id: str) -> int:
    """Id of the node coordinating the consumer group."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return int(await admin.find_coordinator(group_id))
    finally:
        await admin.close()


async def busiest_leader(bootstrap: str, topic: str) -> int:
    """The node that leads most of the topic's partitions (the lowest id on a tie)."""
    counts = Counter((await partition_leaders(bootstrap, topic)).values())
    return min(counts, key=lambda node: (-counts[node], node))
