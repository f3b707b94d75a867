"""A quixstreams application around `TaggerCore`: what a user who wrote the tagger on quixstreams pays.

    python -m benchmarks.peers.quix_worker CLOCK_FILE READY_FILE   # settings from TAGSTREAM_*

Needs the `bench` extra (quixstreams, pinned; in a venv of its own). The events and ticks
topics are concatenated into one dataframe whose stateful step runs the core; the customer's state
is one value in quixstreams' RocksDB store (changelog-backed). Tag changes and dead letters go to a
streaming sink that produces them as they come and waits for their acknowledgement in `flush()`,
which quixstreams' checkpoint calls before it produces the state changelog, flushes the producer and
commits the offsets (`checkpointing/checkpoint.py`, at-least-once): the tagger's order, changes
acknowledged, then state, then offsets. Commits every second, as the tagger's.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from quixstreams import Application, State, message_context
from quixstreams.sinks.base import BaseSink
from quixstreams.state.rocksdb import RocksDBOptions

from benchmarks.peers.common import PeerWorker, Timers
from services.runtime.partitioning import partition_for
from services.runtime.settings import Settings
from services.tagger.core import Incoming

COMMIT_INTERVAL_S = 1.0
_STATE = b"customer"  # bytes: quixstreams uses a bytes key as it is
Outgoing = tuple[str, bytes, bytes]


def producer_config(bootstrap: str) -> dict[str, Any]:
    # murmur2 as the Java and aiokafka clients: keys land where the tagger's producers put them
    return {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 5,
        "partitioner": "murmur2_random",
    }


class KafkaOutput(BaseSink):  # type: ignore[misc, unused-ignore]  # BaseSink is Any without the bench extra
    """Produces each outgoing record at once; `flush()` returns only when Kafka acknowledged all."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__()
        self._producer = Producer(producer_config(bootstrap))
        self._failed: list[KafkaError] = []

    def add(self, value: Any, key: Any, timestamp: int, headers: Any, topic: str, partition: int, offset: int) -> None:
        out_topic, out_key, out_value = value
        self._producer.produce(out_topic, out_value, out_key, on_delivery=self._delivered)
        self._producer.poll(0)

    def flush(self) -> None:
        left = self._producer.flush(60)
        if left or self._failed:
            failed, self._failed = self._failed, []
            raise RuntimeError(f"{left} records unacknowledged, {len(failed)} failed: {failed[:3]}")

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failed.append(error)


def build(worker: PeerWorker) -> Application:
    settings = worker.settings
    topics = settings.topics
    bootstrap = settings.kafka.bootstrap_servers
    core = worker.core()
    timers = Timers(worker.clock, settings.kafka.partitions)
    lock = threading.Lock()
    app = Application(
        broker_address=bootstrap,
        consumer_group=settings.tagger.app_id,
        auto_offset_reset="earliest",
        commit_interval=COMMIT_INTERVAL_S,
        processing_guarantee="at-least-once",
        state_dir=str(settings.tagger.datadir),
        # the core's states are bytes already: stored as they are, not as JSON
        rocksdb_options=RocksDBOptions(dumps=_same, loads=_same),
        producer_extra_config={key: value for key, value in producer_config(bootstrap).items() if key != "acks"},
        loglevel="WARNING",
    )
    events = app.dataframe(app.topic(topics.events, key_deserializer="bytes", value_deserializer="bytes"))
    ticks = app.dataframe(app.topic(topics.tagger_ticks, key_deserializer="bytes", value_deserializer="bytes"))
    ready: list[bool] = []

    def step(value: bytes, key: bytes, timestamp: int, headers: Any, state: State[Any, Any]) -> list[Outgoing]:
        if not ready:
            worker.signal_ready()
            ready.append(True)
        context = message_context()
        incoming = Incoming(
            topic=context.topic,
            partition=context.partition,
            offset=context.offset,
            key=key,
            value=value,
            timestamp_us=timestamp * 1000,
        )
        try:
            result = core.handle(incoming, lambda _customer: state.get(_STATE))
        except Exception as error:  # as the tagger: a bug dead-letters the record, never stalls
            result = core.failed(incoming, error)
        outgoing: list[Outgoing] = [
            (topics.tag_changes, change.customer_id.encode(), change.to_json()) for change in result.changes
        ]
        if result.dead_letter is not None:
            outgoing.append((topics.events_dlq, key or b"", result.dead_letter.model_dump_json().encode()))
        if result.customer_id is not None and result.state is not None:
            state.set(_STATE, result.state)
            with lock:
                timers.schedule(result.customer_id, result.next_check_us)
        return outgoing

    events.concat(ticks).apply(step, stateful=True, metadata=True, expand=True).sink(KafkaOutput(bootstrap))
    _start_timers(timers, lock, bootstrap, topics.tagger_ticks, settings)
    return app


def _start_timers(timers: Timers, lock: threading.Lock, bootstrap: str, topic: str, settings: Settings) -> None:
    """The tagger's timer task: every `timer_interval_s`, a tick for each customer due (a thread:
    quixstreams' `run()` owns the main one)."""
    producer = Producer(producer_config(bootstrap))
    partitions, interval = settings.kafka.partitions, settings.tagger.timer_interval_s

    def wake() -> None:
        while True:
            time.sleep(interval)
            with lock:
                due = timers.due()
            for key, value in due:
                producer.produce(topic, value, key, partition=partition_for(key, partitions))
            producer.flush(60)

    threading.Thread(target=wake, name="timers", daemon=True).start()


def _same(value: Any) -> Any:
    return value


def main(argv: list[str]) -> int:
    build(PeerWorker.from_arguments(argv)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
