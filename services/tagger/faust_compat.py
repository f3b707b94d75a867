"""Every use of faust-streaming's private API by the tagger, in one place, pinned to faust 0.15.3.

Nothing else in the tree names a private faust attribute; the rest of the tagger uses faust's public
API and the functions and classes below. `PINS` lists each piece of faust source this module copies,
overrides, calls or relies on, with what to re-check when it changes; tests/unit/test_faust_compat.py
fails on another faust version or on any pinned source that differs (sha256 of `inspect.getsource`).

The consumer (`TaggerConsumer`, registered the supported way: `TaggerTransport.Consumer`, selected by
the broker URL scheme `tagstream://`, which pyproject.toml registers in faust's `faust.transports`
entry-point namespace) changes five things in faust's aiokafka consumer:

1. The source topics' records go to the processor in batches. faust's delivery loop
   (`Consumer._drain_messages` over `getmany`) wraps every fetched record in a `Message`, hands it to
   the conductor (an `Event`, a stream buffer, a per-message ack) inside `Service.wait_first`: four
   asyncio tasks per message. `_drain_messages` below takes each fetch's record lists as aiokafka
   returns them (`_wait_next_records`, with upstream `getmany`'s checks: flow, generation, active
   partitions) and hands the lists of the app's `source_batches` topics to that bounded queue
   (services/tagger/delivery.py) whole; waiting for room, it gives way to a rebalance (`suspend_flow`).
2. The other topics' records (the table's changelog, in recovery and on standbys) go the upstream way,
   one message at a time (faust 0.15.3's loop, BSD-3-Clause, see NOTICE), with one change: when nothing
   the delivery could wait on is in the way (`_deliverable_now`) it is awaited directly, which then
   cannot suspend, instead of through `wait_first` (off: TAGSTREAM_TAGGER__DIRECT_DELIVERY=false).
3. Commits: faust commits from the acknowledgements of its messages, and the processor acknowledges
   none: `_commit_tps` also commits each source partition's position once a checkpoint has stored it
   with the states (`SourceBatches.stored`), at faust's commit interval and through faust's commit path
   (`_commit_offsets`: producer flush, assignment filter, table and monitor callbacks). For faust's
   own messages `_new_offset` works around robinhood/faust#625 ("Offsets not committed due to
   duplicate in _acked", open, inherited by faust-streaming): after a rebalance `_acked` can hold an
   offset twice, `consecutive_numbers` ends a run at a repeat and the commit crawls; the override
   drops repeats first and cannot commit an unacknowledged offset (tests/unit/test_tagger_consumer.py).
4. Rebalances and stops: `wait_empty` first quiesces the hand-over (drops what is queued, waits for
   the batch in flight, cancels it after `Delivery.revoke_wait_s`) and commits the positions stored,
   so no revoked partition is processed or committed here once its assignment moves; then it waits
   for faust's own unacknowledged messages, bounded by the same limit (upstream waits for ever: an
   agent blocked on a dead leader held a worker in a rebalance for minutes, deaf to SIGTERM).
5. Seeks on the consumer's thread. faust fetches through the consumer thread's method queue but
   seeks on the caller's thread, where aiokafka's `Fetcher.seek_to` deletes the partition's prefetched
   records while `fetched_records` may be decoding them on the consumer's thread, which then fails at
   its own `del self._records[tp]` (KeyError: the fetcher crashes, the worker stops). The tagger seeks
   to read a partition again (services/tagger/offsets.py), typically just after a rebalance when
   fetches are large; the rebalance test's second worker crashed so whenever it joined before the
   first had left. `_seek` below runs the seek through the thread's method queue instead.

The producer (`TaggerProducer`) is idempotent (see its docstring). `LocalStore` reads and writes the
table's local store per partition and batch, and `mark_persisted` keeps faust's changelog bookkeeping,
as faust does per message. Recovery (`TaggerRecovery`, through faust's `TableManager` setting) first
restores each changelog partition in bulk (services/tagger/restore.py), then lets faust's recovery
read what is left.
About 500 lines on purpose: the fence is one module, its PINS list alone is 100 and the delivery
loop with its copied per-message part 130.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import faust
from aiokafka import AIOKafkaProducer, TopicPartition
from faust.stores.rocksdb import Store as RocksDBStore
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.transport.drivers.aiokafka import Producer as AIOKafkaFaustProducer
from faust.transport.drivers.aiokafka import Transport as AIOKafkaTransport
from faust.types import TP, TableT
from faust.types.stores import StoreT
from faust.types.transports import ConsumerT
from faust.types.tuples import ack_lock
from mode import Service, ServiceT
from mode.services import ServiceTask
from rocksdict import WriteBatch

from services.runtime.partitioning import partition_for
from services.tagger.delivery import SourceBatches
from services.tagger.restore import ChangelogBatch, ChangelogRestore, Span

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
        "TaggerConsumer._drain_messages replaces it (batches for the source topics, its per-message body copied "
        "for the rest): port what changed, keep the hand-over and the direct-delivery branch",
    ),
    Pin(
        "faust.transport.consumer:Consumer.getmany",
        "4b168d84882a70d6e3e2f9804430a63b92f8fd117d3187cbb4aeb54305bda34e",
        "TaggerConsumer._drain_messages repeats its checks (flow, generation, active partitions, seek back "
        "while stopped) over `_wait_next_records`: port any new one",
    ),
    Pin(
        "faust.transport.consumer:Consumer._wait_next_records",
        "6218e1969a636b3ff504ad1b8e7ad58a113572e43d746cc96d684ed5153032c6",
        "TaggerConsumer._drain_messages takes fetched record lists from it: check it still returns (records, active)",
    ),
    Pin(
        "faust.transport.consumer:Consumer._commit_tps",
        "a20e230b05ae8b151ac9f78fa77a102003a948c66c24c9d3588e39cb12859b7e",
        "TaggerConsumer._commit_tps adds the source positions: check every periodic commit still comes here",
    ),
    Pin(
        "faust.transport.consumer:Consumer._commit_offsets",
        "1a6979904118844111259d182ca1c6e92ccc16364ccbe55c58e59d6e254a7adb",
        "the source positions are committed through it: check it still drops revoked partitions",
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
        "faust.stores.rocksdb:Store._db_for_partition",
        "cb7e67d5f9efc4bced7b7ab09a55fe717c352daad5b693594e3f7ca52a98787f",
        "LocalStore reads and writes the database it returns: check it still opens one database per partition",
    ),
    Pin(
        "faust.stores.rocksdb:RocksDBOptions.as_options",
        "d2a1bea17736d2eb2f8d2da592ef843f31bd9583b17b3fcbb2ebd84c15051660",
        "LocalStore reads bytes keys and writes `WriteBatch(raw_mode=True)`: check rocksdict is still opened raw",
    ),
    Pin(
        "faust.stores.rocksdb:Store._get_bucket_for_key",
        "951e43a00ee0679fcff2ed4e3202cf14d5576d5abd4f283533b3ab7e3b7489b5",
        "LocalStore leaves faust's key index alone: check a read with no event still asks every database on a miss",
    ),
    Pin(
        "faust.stores.rocksdb:Store.revoke_partitions",
        "3f85447a24fc34ffd1ecb5039f502ac6049d92fbd61d91371049bab01203e390",
        "LocalStore never keeps a database: check a revoked one is still dropped unclosed (closed once unreferenced)",
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
        "faust.tables.manager:TableManager.recovery",
        "f0bf5de78b4c3d235c3554010480f407010ccb7c481c68852a985542b952df32",
        "TaggerTableManager.recovery builds TaggerRecovery the same way: port any new argument",
    ),
    Pin(
        "faust.tables.recovery:Recovery._restart_recovery",
        "6bd8a8558a2dffe4c60b8150f23d721baa6b3d658367f911a3ad2187e20efc6f",
        "TaggerRecovery restores in `_build_offsets`: check the actives' highwaters are still built before it, "
        "that it runs under `_wait` with `broker_request_timeout` (RESTORE_SHARE of it), and that reading "
        "still starts from the offsets it leaves",
    ),
    Pin(
        "faust.tables.recovery:Recovery._build_offsets",
        "27eec86be06cb51f66dfd2572be2f9b41acd22c3570239bb5c554bd94e59a1d6",
        "TaggerRecovery._build_offsets extends it: check `destination` still ends as the last offset applied",
    ),
    Pin(
        "faust.tables.recovery:Recovery._wait",
        "ec7429b70176f8c688545780fdd6751714a1fa2ed247a9c0236adf9c99f16a53",
        "a timeout of `_wait` ends the recovery service (ServiceStopped): the restore stops at RESTORE_SHARE of it",
    ),
    Pin(
        "faust.stores.rocksdb:Store.persisted_offset",
        "6f2e502fb86043a1cf0adca5c2fffb197579db01b31dbba3b0415aaacc35a2ed",
        "LocalStore.restore writes the offset as set_persisted_offset does (str(offset).encode() under offset_key)",
    ),
    Pin(
        "faust.stores.rocksdb:Store.apply_changelog_batch",
        "ea3344d369fc4ab5e3cdace30565691136035a463acb7b2551fdc0b8af71643b",
        "LocalStore.restore writes what this writes for the same records (raw key, value; a tombstone deletes)",
    ),
    Pin(
        "faust.transport.producer:ProducerBuffer.flush_atmost",
        "4966e8c5f9b42eb97abe3f93cbc9bc566a22bdea01ae5328c5a6593414820323",
        "the changelog bypasses faust's producer buffer because its pre-commit flush gives up after 0.1 s",
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

    def __init__(
        self, id: str, *, delivery: Delivery, changelog_restore: ChangelogRestore | None = None, **options: Any
    ) -> None:
        self.delivery = delivery
        self.changelog_restore = changelog_restore
        """The bulk restore `TaggerRecovery` runs first; None: faust's recovery alone."""
        self.source_batches: SourceBatches | None = None
        """Set by whoever processes the source topics in batches, before the app starts."""
        super().__init__(id, **options)


class LocalStore:
    """The table's local store, read and written by the batch: each partition's RocksDB directly.

    faust reads a key through `Table.get` (a sensor call, then a containment check and a read, each
    finding the partition through the store's key index or by asking every partition's database)
    and writes one through `Store._set` (the partition taken from the current event, the key index
    updated). The tagger knows the partition of every state it reads or writes: it asks that
    partition's database (rocksdict, opened raw) and writes a batch with one `WriteBatch` per
    partition. faust's key index is left alone: its own reads (queries, recovery's scan) miss it and
    ask each partition's database, as after a restart. A database is taken from the store per batch
    and kept no longer: faust drops a revoked partition's database unclosed, to be closed once
    unreferenced, so a kept one would hold its lock when the partition comes back (a rebalance
    waits for the batch in flight first: services/tagger/delivery.py).

    The memory store (`TAGSTREAM_TAGGER__STORE=memory`) is one dict for every partition.
    """

    def __init__(self, table: TableT[bytes, bytes]) -> None:
        store = table.data
        self._mapping = store
        self._rocks: RocksDBStore | None = None
        if isinstance(store, RocksDBStore):
            if not store.use_rocksdict:
                raise TypeError(f"table {table.name!r}: the tagger's RocksDB store needs the rocksdict driver")
            self._rocks = store

    def reader(self, partition: int) -> Callable[[bytes], bytes | None]:
        """A read of one key of `partition`'s states, for the batch under way (not to be kept)."""
        if self._rocks is None:
            return self._mapping.get
        read: Callable[[bytes], bytes | None] = self._rocks._db_for_partition(partition).get
        return read

    def partition_items(self, partitions: Iterable[int], count: int) -> Iterator[tuple[int, bytes, bytes]]:
        """Every record of these partitions' stores as (partition, key, value), faust's own offset
        record left out: each partition's database read through, no key hashed. The memory store
        holds every partition in one dict: its keys are placed by `partition_for` among `count`, and
        the tagger's internal keys (a leading NUL byte, stored with their partition's records in a
        database) come with partition -1."""
        if self._rocks is None:
            wanted = set(partitions)
            for key, value in list(self._mapping.items()):
                partition = -1 if key.startswith(b"\x00") else partition_for(key, count)
                if partition == -1 or partition in wanted:
                    yield partition, key, value
            return
        skip = self._rocks.offset_key
        for partition in sorted(partitions):
            for key, value in self._rocks._db_for_partition(partition).items():
                if key != skip:
                    yield partition, key, value

    @property
    def restorable(self) -> bool:
        """A store `restore` writes to (RocksDB; the memory store starts empty and faust fills it)."""
        return self._rocks is not None

    def restore(self, partition: int, batch: ChangelogBatch) -> None:
        """Write a run of `partition`'s changelog and the offset it reaches in one write batch: the
        store never records an offset past its data (faust's own recovery writes the two apart)."""
        assert self._rocks is not None, "restore needs a RocksDB store (see `restorable`)"
        writes = WriteBatch(raw_mode=True)
        for key, value in batch.changes.items():
            if value is None:
                writes.delete(key)
            else:
                writes.put(key, value)
        writes.put(self._rocks.offset_key, str(batch.offset).encode())  # as set_persisted_offset writes it
        self._rocks._db_for_partition(partition).write(writes)

    def write(self, records: Mapping[int, Iterable[tuple[bytes, bytes]]]) -> None:
        """Write each partition's records (key, value), in one write batch per partition's database."""
        for partition, pairs in records.items():
            if self._rocks is None:
                self._mapping.update(pairs)
                continue
            batch = WriteBatch(raw_mode=True)
            for key, value in pairs:
                batch.put(key, value)
            self._rocks._db_for_partition(partition).write(batch)


def mark_persisted(table: TableT[bytes, bytes], changelog: TP, offset: int) -> None:
    """Record that the local store holds the changelog up to `offset`, as faust does per message
    (`Collection._on_changelog_sent`), so recovery reads only what is newer."""
    cast("StoreT[bytes, bytes]", table.data).set_persisted_offset(changelog, offset)


RESTORE_SHARE = 0.8
"""Of faust's `broker_request_timeout`: how long a bulk restore may run. faust runs `_build_offsets` under
that timeout, and its expiry ends the recovery service for good; what the restore leaves, faust reads."""


class TaggerRecovery(Recovery):
    """faust's recovery, each changelog partition first restored in bulk (services/tagger/restore.py).

    faust builds the offsets recovery starts from in `_build_offsets` (the store's persisted offset, or
    the log's start), for the active partitions once their highwaters are known, then for the
    standbys. The override restores each partition from there with `ChangelogRestore` and moves the
    offset to what it wrote, so faust's recovery then finds nothing (or a tail) to read. Actives stop
    at faust's highwater (its consistency check fails an offset past it); standbys at the end, which
    faust's standby highwater, built later, cannot be below. Standbys are restored before the worker
    is ready too: faust would otherwise read them one record at a time after it, and a standby
    promoted before it caught up would restore the rest as an active.

    Nothing is written once a rebalance begins (faust's `rebalancing_count` moves, on the consumer's
    thread, before any store is revoked on this loop); faust then cancels this step and recovers again.
    """

    async def _build_offsets(self, consumer: ConsumerT, tps: set[TP], destination: Counter[TP], title: str) -> None:
        started = time.perf_counter()
        await super()._build_offsets(consumer, tps, destination, title)
        app = self.app
        restore = app.changelog_restore if isinstance(app, TaggerFaustApp) else None
        if restore is None:
            return
        stores = {tp: LocalStore(cast("TableT[bytes, bytes]", self.tp_to_table[tp])) for tp in tps}
        highwaters = self.active_highwaters if destination is self.active_offsets else None
        spans = {
            TopicPartition(tp.topic, tp.partition): Span(
                start=max(destination[tp], -1) + 1,  # the last offset applied, -1 for none
                stop=None if highwaters is None else highwaters[tp] + 1,
            )
            for tp, store in stores.items()
            if store.restorable
        }
        spans = {tp: span for tp, span in spans.items() if span.stop is None or span.start < span.stop}
        if not spans:  # actives already current: no client started
            return
        rebalances = app.rebalancing_count

        def still_ours() -> bool:
            return app.rebalancing_count == rebalances and not self.signal_recovery_start.is_set()

        def write(tp: TopicPartition, batch: ChangelogBatch) -> None:
            stores[TP(tp.topic, tp.partition)].restore(tp.partition, batch)

        deadline_s = app.conf.broker_request_timeout * RESTORE_SHARE - (time.perf_counter() - started)
        restored = await restore.run(spans, write, still_ours=still_ours, deadline_s=deadline_s)
        for tp, offset in restored.offsets.items():
            destination[TP(tp.topic, tp.partition)] = offset
        if restored.records or not restored.complete:
            log.info(
                "restored %d %s changelog records of %d partitions in %.1f s, %.1f s of CPU (%.0f µs, %.0f µs of CPU a "
                "record)%s",
                restored.records,
                title,
                len(spans),
                restored.seconds,
                restored.cpu_seconds,
                restored.seconds * 1e6 / max(1, restored.records),
                restored.cpu_seconds * 1e6 / max(1, restored.records),
                "" if restored.complete else "; faust's recovery reads the rest",
            )


class TaggerTableManager(TableManager):
    """faust's table manager with `TaggerRecovery` (faust's `TableManager` setting selects it)."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = TaggerRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


def kafka_producer(app: faust.App) -> AIOKafkaProducer:
    """The AIOKafkaProducer inside faust's producer, for record batches (faust has no batch API)."""
    producer: AIOKafkaProducer = app.producer._ensure_producer()  # type: ignore[attr-defined]
    return producer


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
        return self._tagger_app().delivery

    def _batches(self) -> SourceBatches | None:
        return self._tagger_app().source_batches

    def _tagger_app(self) -> TaggerFaustApp:
        app = self.app
        if not isinstance(app, TaggerFaustApp):
            raise TypeError(
                f"the {TRANSPORT_SCHEME}:// transport serves the tagger's app only "
                f"(services.tagger.faust_app.faust_app), not {type(app).__name__}"
            )
        return app

    async def wait_empty(self) -> None:
        revoke_wait_s = self._delivery().revoke_wait_s
        batches = self._batches()
        if batches is not None:  # before the assignment moves: nothing more processed, all stored committed
            await batches.quiesce(revoke_wait_s)
            await self._commit_positions(batches, start_new_transaction=True)
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

    async def _commit_tps(self, tps: Iterable[TP], start_new_transaction: bool) -> bool:
        committed: bool = await super()._commit_tps(tps, start_new_transaction)
        batches = self._batches()
        if batches is not None:
            committed = await self._commit_positions(batches, start_new_transaction) or committed
        return committed

    async def _commit_positions(self, batches: SourceBatches, start_new_transaction: bool) -> bool:
        positions = batches.committable()
        if not positions:
            return False
        committed: bool = await self._commit_offsets(positions, start_new_transaction)
        if not committed:  # tried again at the next commit (a revoked partition's is discarded then)
            batches.stored(positions)
        return committed

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
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        deliver_one = self._one_by_one()
        batches = self._batches()
        batch_topics = batches.topics if batches is not None else frozenset()
        app = self.app
        buffered = self._buffered_partitions
        track_end_offset = app.monitor.track_tp_end_offset
        highwater = self.highwater
        flag_consumer_fetching = CONSUMER_FETCHING
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(flag_consumer_fetching)
                # upstream's getmany, without a Message per record
                records, active = await self._wait_next_records(1.0)
                # Sleeping because sometimes getmany is called in a loop never releasing to the event loop
                await self.sleep(0)
                if records is None or self.should_stop:
                    continue
                if not self.flow_active:
                    await self._seek_back_while_stopped()
                    continue
                generation_id = app.consumer_generation_id
                for tp, fetched in records.items():
                    if not self.flow_active or app.consumer_generation_id != generation_id:
                        break
                    if active is not None and tp not in active and tp not in buffered:
                        continue
                    track_end_offset(tp, highwater(tp))
                    if tp.topic in batch_topics:
                        assert batches is not None
                        if not await self._hand_over(batches, tp, fetched, generation_id):
                            break
                    else:
                        await deliver_one(tp, fetched)
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

    async def _hand_over(self, batches: SourceBatches, tp: TP, fetched: Sequence[Any], generation_id: int) -> bool:
        """Queue a fetched batch for the processor; False if a rebalance began while the queue was full
        (the batch is dropped: after the rebalance every partition is read from its committed offset)."""
        while not batches.offer(tp, fetched):
            await self.wait_first(batches.room(), self.suspend_flow.wait())
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                return False
        return True

    async def _seek_back_while_stopped(self) -> None:
        # upstream getmany's answer to records fetched while the flow is stopped
        self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
        try:
            await self.perform_seek()
        except Exception as ex:
            self.log.warning(f"exception performing seek when flow not active {ex}")

    def _one_by_one(self) -> Callable[[TP, Sequence[Any]], Awaitable[None]]:
        """faust 0.15.3's per-message delivery (`_drain_messages`, BSD-3-Clause, see NOTICE) for the
        topics not handed over in batches (the table's changelog, in recovery and on standbys), with
        the direct hand-over of the module's docstring."""
        callback = self.callback
        to_message = self._to_message
        deliverable_now = _deliverable_now(self) if self._delivery().direct else _never
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        commit_every = self._commit_every
        acks_enabled_for = self.app.topics.acks_enabled_for
        yield_every = 100
        since_yield = 0

        async def deliver(tp: TP, fetched: Sequence[Any]) -> None:
            nonlocal since_yield
            for record in fetched:
                if not self.flow_active:
                    return
                message = to_message(tp, record)
                since_yield += 1
                if since_yield > yield_every:
                    await asyncio.sleep(0)
                    since_yield = 0
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
                    self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r", offset, message.key, message.value)

        return deliver


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
    if isinstance(found, property):
        found = found.fget
    elif isinstance(found, ServiceTask):  # a `@Service.task` method
        found = found.fun
    return inspect.getsource(found)


def source_digest(target: str) -> str:
    return hashlib.sha256(source_of(target).encode()).hexdigest()


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
