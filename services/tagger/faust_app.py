"""The tagger's faust app for its settings: broker, store, delivery and commit settings, its transport
(services/tagger/faust_compat.py) and the customers table. Nothing is wired to it here (see `Tagger`);
`benchmarks.faust_passthrough` builds its floor on the same app."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any

import faust
import faust.transport
from faust.types import TableT

from services.runtime.files import private_directory
from services.runtime.kafka import client_options, min_insync_replicas, send_keyed
from services.runtime.settings import Settings
from services.tagger.faust_compat import (
    TRANSPORT_SCHEME,
    Delivery,
    TaggerFaustApp,
    TaggerTableManager,
    TaggerTransport,
    kafka_producer,
)
from services.tagger.restore import ChangelogRestore

RAW_TOPIC: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
"""Every topic the tagger touches carries bytes it (de)serialises itself."""


class TransportMissing(RuntimeError):
    """faust does not know the tagger's transport: the project's entry points are not installed."""


def faust_app(settings: Settings) -> TaggerFaustApp:
    """The tagger's faust app for these settings; its consumer and producer are `TaggerTransport`'s."""
    tagger = settings.tagger
    private_directory(tagger.datadir)
    _require_transport()
    app = TaggerFaustApp(
        tagger.app_id,
        delivery=Delivery(direct=tagger.direct_delivery, revoke_wait_s=tagger.revoke_wait_s),
        changelog_restore=ChangelogRestore(client_options(settings.kafka), batch_records=tagger.restore_batch_records)
        if tagger.bulk_restore
        else None,
        TableManager=TaggerTableManager,
        broker=[f"{TRANSPORT_SCHEME}://{server.strip()}" for server in settings.kafka.bootstrap_servers.split(",")],
        broker_credentials=_credentials(settings),
        store="rocksdb://" if tagger.store == "rocksdb" else "memory://",
        datadir=str(tagger.datadir),
        topic_partitions=settings.kafka.partitions,
        topic_replication_factor=settings.kafka.replication_factor,
        table_standby_replicas=tagger.standby_replicas,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_request_timeout=tagger.producer_request_timeout_s,
        producer_max_batch_size=tagger.producer_batch_bytes,
        web_enabled=True,
        web_port=tagger.web_port,
        web_bind=tagger.web_host,
        web_in_thread=False,
        broker_commit_interval=1.0,
        broker_session_timeout=tagger.session_timeout_s,
        # static membership (docs/tagger.md): a worker back under the same name within the session
        # timeout gets its partitions back without a rebalance
        consumer_group_instance_id=tagger.group_instance_id,
        broker_heartbeat_interval=min(3.0, tagger.session_timeout_s / 3),
        stream_buffer_maxsize=tagger.stream_buffer,
    )
    return app


def customers_table(app: faust.App, settings: Settings) -> TableT[bytes, bytes]:
    """The per-customer state table (and, under `\\x00`-prefixed keys, the tagger's own bookkeeping)."""
    table: TableT[bytes, bytes] = app.Table(
        "customers",
        default=None,
        key_type=bytes,  # bytes types make faust store raw bytes (json otherwise, even in RocksDB)
        value_type=bytes,
        partitions=settings.kafka.partitions,
        # faust creates the changelog: the states behind acknowledged changes need the same durability
        extra_topic_configs={"min.insync.replicas": str(min_insync_replicas(settings.kafka.replication_factor))},
        options={
            "block_cache_size": settings.tagger.rocksdb_block_cache_mb * 1024 * 1024,
            "write_buffer_size": settings.tagger.rocksdb_write_buffer_mb * 1024 * 1024,
            "driver": "rocksdict",
        }
        if settings.tagger.store == "rocksdb"
        else None,
    )
    return table


async def send_records(app: faust.App, topic: str, messages: Sequence[tuple[bytes, bytes]]) -> list[Awaitable[Any]]:
    """Keyed messages through the app's producer as record batches, where its partitioner puts each
    key (`send_keyed`); the futures resolve once Kafka has acknowledged each batch."""
    partitioner = app.producer.partitioner
    assert partitioner is not None  # faust sets aiokafka's DefaultPartitioner at start
    return await send_keyed(kafka_producer(app), partitioner, topic, messages)


def _require_transport() -> None:
    try:
        found = faust.transport.by_name(TRANSPORT_SCHEME)
    except ModuleNotFoundError as error:
        raise TransportMissing(
            f"faust has no {TRANSPORT_SCHEME}:// transport: install the project (pip install -e .) so its "
            "`faust.transports` entry point (pyproject.toml) is registered"
        ) from error
    if found is not TaggerTransport:
        raise TransportMissing(
            f"faust's {TRANSPORT_SCHEME}:// transport is {found!r}, not the tagger's TaggerTransport"
        )


def _credentials(settings: Settings) -> Any:
    kafka = settings.kafka
    if kafka.security_protocol == "PLAINTEXT":
        return None
    options = client_options(kafka)
    if kafka.sasl_mechanism is not None:
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
            ssl_context=options.get("ssl_context"),
            mechanism=kafka.sasl_mechanism,
        )
    return faust.SSLCredentials(options["ssl_context"])
