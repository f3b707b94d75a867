"""Whether a write could succeed now, so ingest answers 503 at once instead of after send_timeout_s.

A write needs, for every partition of the topics ingest writes: a reachable leader and as many
in-sync replicas as the topic's `min.insync.replicas` (acks=all refuses it otherwise). The watch
reads that from the brokers' metadata every few seconds, every second while something is wrong,
and at once after a send failed; readiness and the fail-fast path follow it.

Metadata alone cannot clear a doubt. A cluster that lost its controller quorum (2 of 3 combined
KRaft nodes down) keeps serving the metadata it had from the surviving node: every partition still
shows its dead leader and a full in-sync set, while no acks=all write can succeed (measured: a fifth
of the checks reach the survivor and read "writable"). So from start, and again after any problem
(a failed send, metadata showing one, brokers not answering), writes stay refused until the metadata
looks fine and a probe write (one small record to the probe topic, acks=all) is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from services.runtime.kafka import client_options, min_insync_replicas, required_in_sync
from services.runtime.settings import KafkaSettings

log = logging.getLogger(__name__)

HEALTHY_INTERVAL_S = 5.0
FAILING_INTERVAL_S = 1.0


class BrokerWatch:
    def __init__(
        self,
        kafka: KafkaSettings,
        topics: Sequence[str],
        *,
        timeout_s: float,
        probe: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._kafka = kafka
        self._topics = list(topics)
        self._timeout_s = timeout_s
        self._probe = probe
        """Writes one record acks=all (raises when not acknowledged): the proof that clears a failed send."""
        self._unproven = probe is not None
        """No probe write acknowledged since the start or the last problem: metadata saying "fine" is not enough."""
        self.problem: str | None = "the brokers have not been checked yet"
        """Why a write cannot succeed now; None while it can."""
        self._wake = asyncio.Event()
        self._admin: AIOKafkaAdminClient | None = None

    @property
    def writable(self) -> bool:
        return self.problem is None

    def send_failed(self, reason: str) -> None:
        """A send was not acknowledged: refuse writes until a check says the brokers are fine again."""
        self._set(reason)
        self._wake.set()

    async def check(self) -> None:
        """One look at the brokers' metadata, bounded by timeout_s; then a probe write if one is owed."""
        try:
            problem = await asyncio.wait_for(self._look(), self._timeout_s)
        except (KafkaError, OSError, TimeoutError) as error:
            problem = f"Kafka at {self._kafka.bootstrap_servers} did not answer: {type(error).__name__}"
            await self._close_admin()  # a fresh client next time: it bootstraps again
        if problem is None and self._unproven and self._probe is not None:
            problem = await self._prove(self._probe)
        self._set(problem)

    async def _prove(self, probe: Callable[[], Awaitable[None]]) -> str | None:
        try:
            await probe()
        except (KafkaError, OSError, TimeoutError) as error:
            return (
                f"a probe write was not acknowledged ({type(error).__name__}) although every partition shows "
                "a leader and its in-sync replicas: the brokers' metadata is stale (controller quorum lost?)"
            )
        self._unproven = False
        return None

    async def run(self) -> None:
        """Check again every few seconds (every second while writes fail, at once after `send_failed`)
        until cancelled; `check` once first."""
        try:
            while True:
                interval = HEALTHY_INTERVAL_S if self.writable else FAILING_INTERVAL_S
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), interval)
                self._wake.clear()
                await self.check()
        finally:
            await self._close_admin()

    async def _look(self) -> str | None:
        if self._admin is None:
            admin = AIOKafkaAdminClient(**client_options(self._kafka))
            await admin.start()
            self._admin = admin
        described = await self._admin.describe_topics(self._topics)
        required = await required_in_sync(self._admin, self._topics)
        for topic in described:
            name = topic["topic"]
            if topic["error_code"] != 0 or not topic["partitions"]:
                return f"topic {name} is not available (error {topic['error_code']})"
            for partition in sorted(topic["partitions"], key=lambda p: p["partition"]):
                where = f"{name}[{partition['partition']}]"
                if partition["leader"] < 0:
                    return f"{where} has no leader"
                needed = required.get(name) or min_insync_replicas(len(partition["replicas"]))
                if len(partition["isr"]) < needed:
                    return f"{where} has {len(partition['isr'])} in-sync replica(s), min.insync.replicas is {needed}"
        return None

    def _set(self, problem: str | None) -> None:
        if problem is not None:
            self._unproven = self._probe is not None
        if (problem is None) != (self.problem is None):  # a change of state, not of wording
            if problem is None:
                log.info("Kafka takes writes again")
            else:
                log.warning("Kafka cannot take writes: %s; answering 503 at once until it can", problem)
        self.problem = problem

    async def _close_admin(self) -> None:
        if self._admin is not None:
            admin, self._admin = self._admin, None
            with contextlib.suppress(Exception):
                await admin.close()
