"""Every use of faust-streaming's private API by the tagger, in one place, pinned to faust 0.15.3.

Nothing else in the tree names a private faust attribute; the rest of the tagger uses faust's public
API and the functions and classes below. `PINS` lists each piece of faust source this module copies,
overrides, calls or relies on, with what to re-check when it changes; tests/unit/test_faust_compat.py
fails on another faust version or on any pinned source that differs (sha256 of `inspect.getsource`).

The consumer (`TaggerConsumer`, registered the supported way: `TaggerTransport.Consumer`, selected by
the broker URL scheme `tagstream://`, which pyproject.toml registers in faust's `faust.transports`
entry-point namespace) changes four things in faust's aiokafka consumer:

1. A cheaper per-message delivery step. faust's delivery loop (`Consumer._drain_messages`) hands every
   fetched message to the conductor inside `Service.wait_first(callback(message), suspend_flow.wait())`:
   four asyncio tasks and an `asyncio.wait` per message, so that a rebalance (which sets
   `suspend_flow`) can interrupt a delivery blocked on a full stream buffer, suspended flow control or
   a full producer buffer. `_drain_messages` below is faust 0.15.3's (BSD-3-Clause, see NOTICE) with
   one change: when nothing the delivery could wait on is in the way (`_deliverable_now`), the
   delivery cannot suspend (the conductor then only decodes and `put_nowait`s), so it is awaited
   directly. Otherwise it goes through `wait_first` exactly as upstream. The check and the delivery
   run without yielding to the event loop in between, so nothing can change the answer between them.
   With `Delivery.direct` off (TAGSTREAM_TAGGER__DIRECT_DELIVERY=false) every message goes through
   `wait_first`, as in faust's own loop; the two changes below stay.

2. Commits that keep up after rebalances: the workaround for robinhood/faust#625 ("Offsets not
   committed due to duplicate in _acked", open, inherited unchanged by faust-streaming). faust commits
   the end of the first run of consecutive acknowledged offsets (`_new_offset`, over `_acked`). After
   a rebalance that list can hold an offset twice (a message buffered before the rebalance and
   fetched again after it); `consecutive_numbers` ends a run at a repeat, so the committed offset
   crawls forward a few offsets per commit, thousands behind although every message was processed.
   `_new_offset` below drops the repeats before faust's computation; it cannot commit an offset that
   was not acknowledged (tests/unit/test_tagger_consumer.py).

3. A bounded wait for the batch in flight. On a rebalance and on stop faust waits in `wait_empty`
   until every message handed to an agent is acknowledged, with no limit: an agent blocked on Kafka
   (a send to a partition whose leader died) held a worker in a rebalance for minutes and made it
   ignore SIGTERM. `wait_empty` below gives up after `Delivery.revoke_wait_s`: the messages still held
   are left unacknowledged, so their offsets are not committed and they are read again by whoever
   owns the partition next (at-least-once; the effect stays exact, see docs/tagger.md).

4. Seeks on the consumer's thread. faust runs aiokafka's consumer in a thread of its own and fetches
   through that thread's method queue, but its `seek` calls aiokafka's from the caller's thread: its
   `Fetcher.seek_to` then deletes the partition's prefetched records while `fetched_records` may be
   decoding them on the consumer's thread, which fails at its own `del self._records[tp]` (KeyError:
   the fetcher crashes and the worker stops). The tagger seeks when a partition must be read again
   (services/tagger/offsets.py), typically just after a rebalance, when fetches are large: the second
   worker of tests/integration/test_tagger_rebalance.py crashed so whenever it joined before the
   first had left. `_seek` below runs the seek through the thread's method queue instead.

The producer (`TaggerProducer`) is idempotent (see its docstring). The functions write the table's
local store and changelog bookkeeping the way faust does per message, for whole batches at once.
About 400 lines on purpose: the fence is one module, and the copied delivery loop alone is 70 of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import faust
from aiokafka import AIOKafkaProducer
from faust.streams import _current_event
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.transport.drivers.aiokafka import Producer as AIOKafkaFaustProducer
from faust.transport.drivers.aiokafka import Transport as AIOKafkaTransport
from faust.types import TP, EventT, StreamT, TableT
from faust.types.stores import StoreT
from faust.types.tuples import ack_lock
from mode import Service, ServiceT

log = logging.getLogger(__name__)

FAUST_VERSION = "0.15.3"
TRANSPORT_SCHEME = "tagstream"
"""The broker URL scheme of `TaggerTransport` (pyproject.toml: entry point `faust.transports`)."""


@dataclass(frozen=True)
class Pin:
    """A piece of faust source the tagger depends on, as it was when the dependency was written."""

    target: str
    """`module:Qualified.name`, or a path inside the installed faust package for Cython sources."""
    sha256: str
    recheck: str
    """What depends on it, and what to re-check before updating `sha256`."""


PINS: tuple[Pin, ...] = (
    Pin(
        "faust.transport.consumer:Consumer._drain_messages",
        "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417",
        "TaggerConsumer._drain_messages is a copy: port the new loop, keep the direct-delivery branch",
    ),
    Pin(
        "faust.transport.consumer:Consumer._new_offset",
        "1d2c7ea89a7ad4f1a216c1d51936e569162cd66bd56f889e13fd29c910b58eb0",
        "TaggerConsumer._new_offset de-duplicates `_acked` first (robinhood/faust#625): drop the override if "
        "upstream handles repeats; else check it still reads `_acked[tp]` under `ack_lock`",
    ),
    Pin(
        "faust.transport.consumer:Consumer.ack",
        "5fcf41cf45153475de3790dc56fec1b83335956dc8b3bf7ff6bbb2b57627f03f",
        "_new_offset holds `ack_lock`, the lock `ack` appends to `_acked` under",
    ),
    Pin(
        "faust.transport.consumer:Consumer.wait_empty",
        "e4662fe24f094819add590b2d75f233840e77823b432aea6504539768572102f",
        "TaggerConsumer.wait_empty bounds it and clears `_unacked_messages`: check that is still what it waits on",
    ),
    Pin(
        "faust.transport.conductor:Conductor.__init__",
        "441bc3b1df592aa7de42538bbe499a8b43894f3a2319a325ff64200073aa64d3",
        "_deliverable_now reads `_tp_to_callback_lock` and `_topics` (the live set of subscribed channels)",
    ),
    Pin(
        "faust.transport.conductor:ConductorCompiler.build",
        "837cf521368c1ee4b22c235a2b137f665eca03d0e3e01b5ddedb65232ee73bf2",
        "_deliverable_now lists what a delivery may wait on (the pure-Python handler)",
    ),
    Pin(
        "faust/transport/_cython/conductor.pyx",
        "dde1f974267881cf8c5f7e4fd2b114a2c6d754633a2aa9a2a2fc92f93e143dba",
        "_deliverable_now lists what a delivery may wait on (the compiled handler faust uses when built)",
    ),
    Pin(
        "faust.transport.consumer:ThreadDelegateConsumer._seek",
        "4f95c631420410a5fe6ecb1eff2f9010d7cfff6861fe00d41889bb31bd7df8b1",
        "TaggerConsumer._seek runs the seek on the consumer's thread: drop the override if upstream does too",
    ),
    Pin(
        "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread.seek",
        "1498560d05f025820be906f3695710b6ac45258ea1c96ab5a403fcb38520c234",
        "TaggerConsumer._seek calls it through the thread's method queue: check it is still synchronous",
    ),
    Pin(
        "faust.transport.drivers.aiokafka:Producer._settings_extra",
        "a4c7bc41b63822236e4c9be1c49437d091f58c1b3a983eecabb7362a819aa8bd",
        "TaggerProducer merges acks=all and enable_idempotence into it: check it is still merged last",
    ),
    Pin(
        "faust.transport.drivers.aiokafka:Producer._ensure_producer",
        "5592a4bbdf2513253f98233a4eac931ded2a531a86f269cddcc33bc3f5827db5",
        "kafka_producer returns the AIOKafkaProducer through it, for record batches",
    ),
    Pin(
        "faust.stores.rocksdb:Store._set",
        "4227e561e288d9413bf663a3a67940fd4976f5484e70e49445858ce4d400d26e",
        "store_locally sets `_current_event` because this takes the partition from the current event",
    ),
    Pin(
        "faust.stores.rocksdb:Store.set_persisted_offset",
        "b4c811926678346ebb8c40486dbc46d0fbac2bbeaa592384bd955112556acf45",
        "mark_persisted records the changelog offset recovery starts from",
    ),
    Pin(
        "faust.tables.base:Collection._on_changelog_sent",
        "60122c86a120d82cffa95da4c22323e12d67fa82f3112f08ac7f8edde7c47826",
        "mark_persisted does per batch what this does per message",
    ),
    Pin(
        "faust.transport.producer:ProducerBuffer.flush_atmost",
        "4966e8c5f9b42eb97abe3f93cbc9bc566a22bdea01ae5328c5a6593414820323",
        "the changelog bypasses faust's producer buffer because its pre-commit flush gives up after 0.1 s",
    ),
    Pin(
        "faust.streams:Stream.noack_take",
        "f2cc2dbfc162d2006c94361c0ed68535c95484020849eb0d4210c1f52c4c430a",
        "noack_batches: a batch is acknowledged only by the agent, after its checkpoint (take_events acks in "
        "a `finally`, committing a batch a rebalance cut short)",
    ),
    Pin(
        "faust.agents.agent:Agent._execute_actor",
        "c750b828d2bda93ef38a5e89888b6f4de13199010cd2608a2bd7b9d1735c70e5",
        "Tagger._process_or_abandon never lets a batch fail out of the agent: the crashed actor keeps the "
        "exception, whose frames hold the batch's messages, and wait_empty then waits for them",
    ),
)


@dataclass(frozen=True)
class Delivery:
    """The tagger consumer's options (TAGSTREAM_TAGGER__DIRECT_DELIVERY, __REVOKE_WAIT_S)."""

    direct: bool = True
    revoke_wait_s: float = 30.0


class TaggerFaustApp(faust.App):
    """faust's App, carrying the options of the consumer its transport creates: faust instantiates
    the consumer itself, and the app is its only link to configuration."""

    def __init__(self, id: str, *, delivery: Delivery, **options: Any) -> None:
        self.delivery = delivery
        super().__init__(id, **options)


def store_locally(table: TableT[bytes, bytes], partition: int, key: bytes, value: bytes) -> None:
    """Write a value to the table's local store (RocksDB: the partition's database), not the changelog.

    faust's RocksDB store takes the partition from the event being processed (`_current_event`); a
    stand-in carrying only the partition lets a batch be written without per-record faust events."""
    current = _PartitionOnly(partition)
    token = _current_event.set(cast(Any, weakref.ref(current)))
    try:
        table.data[key] = value
    finally:
        _current_event.reset(token)


def mark_persisted(table: TableT[bytes, bytes], changelog: TP, offset: int) -> None:
    """Record that the local store holds the changelog up to `offset`, as faust does per message
    (`Collection._on_changelog_sent`), so recovery reads only what is newer."""
    cast("StoreT[bytes, bytes]", table.data).set_persisted_offset(changelog, offset)


def kafka_producer(app: faust.App) -> AIOKafkaProducer:
    """The AIOKafkaProducer inside faust's producer, for record batches (faust has no batch API)."""
    producer: AIOKafkaProducer = app.producer._ensure_producer()  # type: ignore[attr-defined]
    return producer


def noack_batches(stream: StreamT[bytes], size: int, within: float) -> AsyncIterator[Sequence[EventT[bytes]]]:
    """Batches of events that stay unacknowledged until the agent acknowledges them (`Stream.noack_take`,
    missing from faust's `StreamT` stub)."""
    batches: AsyncIterator[Sequence[EventT[bytes]]] = cast(Any, stream).noack_take(size, within=within)
    return batches


class TaggerProducer(AIOKafkaFaustProducer):
    """faust's aiokafka producer, idempotent: a batch of tag changes retried by the client is written once.

    faust asks aiokafka for an idempotent producer only inside transactions (`exactly_once`), and the
    tagger runs at-least-once (services/tagger/app.py): without it, a batch whose acknowledgement was
    lost (a broker failing over) is written again by aiokafka's own retry, and consumers see the same
    changes twice under new offsets. `_settings_extra` is merged last into the AIOKafkaProducer's options.
    """

    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class TaggerConsumer(AIOKafkaConsumer):
    """faust's aiokafka consumer with the three changes in the module's docstring."""

    def _delivery(self) -> Delivery:
        app = self.app
        if not isinstance(app, TaggerFaustApp):
            raise TypeError(
                f"the {TRANSPORT_SCHEME}:// transport serves the tagger's app only "
                f"(services.tagger.faust_app.faust_app), not {type(app).__name__}"
            )
        return app.delivery

    async def wait_empty(self) -> None:
        revoke_wait_s = self._delivery().revoke_wait_s
        try:
            await asyncio.wait_for(super().wait_empty(), revoke_wait_s)
        except TimeoutError:
            held = len(self._unacked_messages)
            log.warning(
                "%d messages still unacknowledged after %.0fs (TAGSTREAM_TAGGER__REVOKE_WAIT_S): going on without "
                "them; they are not committed and will be read again",
                held,
                revoke_wait_s,
            )
            self._unacked_messages.clear()

    async def _seek(self, partition: TP, offset: int) -> None:
        # On the consumer's thread, between two fetches: faust calls aiokafka's `seek` on the caller's
        # thread, whose `Fetcher.seek_to` deletes the partition's prefetched records while
        # `fetched_records` may be iterating them on the consumer's thread (KeyError, fetcher crashed).
        thread = self._thread
        await thread.call_thread(_sync_call, thread.seek, partition, offset)

    def _new_offset(self, tp: TP) -> int | None:
        with ack_lock:  # the lock faust's `ack` holds while it appends to these
            acked = self._acked[tp]
            if len(acked) > 1:
                distinct = sorted(set(acked))
                if len(distinct) != len(acked):
                    acked[:] = distinct
            offset: int | None = super()._new_offset(tp)
            return offset

    async def _drain_messages(self, fetcher: ServiceT) -> None:
        callback = self.callback
        getmany = self.getmany
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        deliverable_now = _deliverable_now(self) if self._delivery().direct else _never

        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for

        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                ait = cast(AsyncIterator[Any], getmany(timeout=1.0))

                # Sleeping because sometimes getmany is called in a loop never releasing to the event loop
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in ait:
                        num_since_yield += 1
                        if num_since_yield > yield_every:
                            await sleep(0)
                            num_since_yield = 0

                        offset = message.offset
                        r_offset = get_read_offset(tp)
                        if r_offset is None or offset >= r_offset:
                            gap = offset - (r_offset or 0)
                            # We have a gap in income messages
                            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                                await self._add_gap(tp, r_offset + 1, offset)
                            if commit_every is not None and self._n_acked >= commit_every:
                                self._n_acked = 0
                                await self.commit()
                            if deliverable_now():
                                await callback(message)  # cannot suspend: see the module's docstring
                            else:
                                await self.wait_first(callback(message), self.suspend_flow.wait())
                            set_read_offset(tp, offset)
                        else:
                            self.log.dev(
                                "DROPPED MESSAGE ROFF %r: k=%r v=%r",
                                offset,
                                message.key,
                                message.value,
                            )
                    unset_flag(flag_consumer_fetching)

        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                # we're already stopping so ignore
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(flag_consumer_fetching)


class TaggerTransport(AIOKafkaTransport):
    """faust's aiokafka transport with the tagger's consumer and producer (broker URLs `tagstream://`)."""

    Consumer = TaggerConsumer
    Producer = TaggerProducer


def source_of(target: str) -> str:
    """The installed source of a `Pin.target`."""
    if "/" in target:
        return (Path(faust.__file__).parent.parent / target).read_text()
    module_name, _, qualified = target.partition(":")
    found: Any = importlib.import_module(module_name)
    for name in qualified.split("."):
        found = getattr(found, name)
    return inspect.getsource(found)


def source_digest(target: str) -> str:
    return hashlib.sha256(source_of(target).encode()).hexdigest()


class _PartitionOnly:
    """What faust's RocksDB store reads from the current event: `event.message.partition`."""

    __slots__ = ("__weakref__", "partition")

    def __init__(self, partition: int) -> None:
        self.partition = partition

    @property
    def message(self) -> _PartitionOnly:
        return self


async def _sync_call(function: Callable[..., None], *args: Any) -> None:
    function(*args)


def _never() -> bool:
    return False


def _deliverable_now(consumer: Any) -> Callable[[], bool]:
    """A check that the conductor's delivery of the next message cannot wait on anything.

    What the conductor's per-partition handler (`ConductorCompiler.build`, or its compiled
    `ConductorHandler`) and `Conductor.on_message` may wait on: the callback lock (held while the
    subscriptions are rebuilt), flow control (suspended during a rebalance), faust's producer buffer
    (over `max_messages`), and a channel queue that is full. The rebalance's `suspend_flow` is checked
    too, as upstream's `wait_first` would return on it.
    """
    app = consumer.app
    conductor = app.topics
    suspend_flow = consumer.suspend_flow
    flow_control = app.flow_control
    lock = conductor._tp_to_callback_lock
    channels = conductor._topics  # the live set of subscribed channels
    buffer = app.producer.buffer

    def deliverable_now() -> bool:
        return (
            not suspend_flow.is_set()
            and flow_control.is_active()
            and not lock.locked()
            and buffer.size <= buffer.max_messages
            and not any(channel.queue.full() for channel in channels)
        )

    return deliverable_now
