"""`TAGSTREAM_TAGGER__*`: the faust worker (docs/tagger.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from services.runtime.sections.common import Section


class TaggerSettings(Section):
    app_id: str = Field(default="tagstream-tagger", description="consumer group and changelog topic prefix")
    store: Literal["memory", "rocksdb"] = Field(default="rocksdb", description="where customer state is kept")
    datadir: Path = Field(default=Path("/var/lib/tagstream"), description="RocksDB files (a volume per replica)")
    rocksdb_block_cache_mb: int = Field(default=64, ge=8, description="per partition; faust's default is 2 GiB")
    rocksdb_write_buffer_mb: int = Field(
        default=8,
        ge=1,
        le=256,
        description="per partition, a memtable's size before it is flushed to disk (up to 3 held); faust's 64 MiB "
        "is more than a partition's whole state at most shops, so a backfill or a restore kept every state it "
        "rewrote in memory: the worker's memory grew with its customers",
    )
    web_host: str = Field(
        default="127.0.0.1",
        description="listen address of /healthz /readyz /metrics (the image and the chart set 0.0.0.0)",
    )
    web_port: int = Field(default=6066, ge=1, le=65535, description="port of /healthz /readyz /metrics")
    standby_replicas: int = Field(default=1, ge=0, description="warm copies of each partition's table on other workers")
    batch_size: int = Field(
        default=500,
        ge=1,
        le=100_000,
        description="records processed per batch (one checkpoint: changes, then states and changelog, then "
        "offsets); a batch holds whole fetches, so one fetch larger than this is one batch",
    )
    stream_buffer: int = Field(
        default=16384,
        ge=1,
        le=1_000_000,
        description="source records fetched ahead of the processor (~1.5 KB each; more keeps a busy worker fed), "
        "and faust's stream_buffer_maxsize for the changelog records of recovery and standbys; a rebalance "
        "drops the queued ones (not committed: read again by the partition's next owner)",
    )
    direct_delivery: bool = Field(
        default=True,
        description="hand the table's changelog records (recovery, standbys) to faust's conductor without its "
        "four tasks per message when nothing can block the hand-over (services/tagger/faust_compat.py); false: "
        "through faust's `wait_first`, as in faust's own loop. Source records always go over in batches",
    )
    bulk_restore: bool = Field(
        default=True,
        description="restore the table's changelog into RocksDB in large batches before faust's recovery, which "
        "then reads only what is left (services/tagger/restore.py); false: faust's recovery alone, one record "
        "at a time (~10x the CPU per record)",
    )
    restore_batch_records: int = Field(
        default=20_000,
        ge=100,
        le=1_000_000,
        description="changelog records per fetch of the bulk restore, written as one RocksDB write batch per "
        "partition (~1 KB each held meanwhile); a store's offset moves once per batch",
    )
    batch_within_s: float = Field(
        default=0.001,
        gt=0,
        le=10,
        description="longest wait to fill a batch, added to every event's latency below the worker's rate; records "
        "arriving while a batch is processed make the next one anyway",
    )
    timer_interval_s: float = Field(default=0.5, gt=0, description="how often due time-based re-evaluations are sent")
    horizon_days: int = Field(
        default=400, ge=1, le=3650, description="days of history kept per customer; windows may not reach further"
    )
    history_age: str | None = Field(
        default=None,
        pattern=r"^\d{1,6}[smhdw]$",
        description="an event dated further back than this when it arrives is history: its tag changes carry "
        "source import, which playbooks ignore; default: notifier.max_trigger_age (also the embedded node's)",
    )
    projector: bool = Field(
        default=True,
        description="also maintain the Redis read model from tag changes in this process; false where `tagstream "
        "projector` runs apart (it needs a core of its own at a large shop's full rate: docs/readmodel.md)",
    )
    projector_web_port: int = Field(
        default=8083, ge=1, le=65535, description="`tagstream projector`'s port of /healthz /readyz /metrics"
    )
    producer_batch_bytes: int = Field(
        default=524_288,
        ge=16_384,
        le=1_000_000,
        description="largest record batch the worker sends per partition: an idempotent producer has one batch "
        "per partition in flight, so a batch's changes or states sent in 16 KiB batches (faust's default) wait a "
        "round trip per batch; keep it below the topics' max.message.bytes (1 MiB by default)",
    )
    producer_request_timeout_s: float = Field(
        default=30.0, gt=0, description="Kafka acknowledgement wait before a send fails"
    )
    session_timeout_s: float = Field(
        default=30.0, gt=0, le=300, description="a worker that stops heartbeating loses its partitions after this"
    )
    group_instance_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="static group membership: a stable name per worker (the chart uses the pod name), so a "
        "restarted worker takes its partitions back at once instead of after session_timeout_s",
    )
    rebalance_stuck_s: float = Field(
        default=180.0,
        gt=0,
        le=3600,
        description="/healthz fails (so the liveness probe restarts the worker) once a rebalance lasts longer",
    )
    revoke_wait_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="on a rebalance or stop, longest wait for the batch in flight; then it is cancelled, its "
        "positions neither stored nor committed (read again by the partition's next owner)",
    )
    shutdown_timeout_s: float = Field(
        default=25.0, gt=0, le=600, description="after SIGTERM the worker exits (code 1) if still stopping by then"
    )
    backfill_chunk: int = Field(
        default=2_000,
        ge=1,
        le=20_000,
        description="customers re-evaluated per commit of a definitions backfill (their states held meanwhile, "
        "~0.5 KiB each): each commit waits for two Kafka acknowledgements, so small chunks spend a 1M-customer "
        "backfill waiting",
    )
    backfill_pause_s: float = Field(
        default=0.0,
        ge=0,
        le=60,
        description="fault injection, 0 in production: a pause after each chunk of a definitions backfill, the "
        "worker's events held meanwhile; the fault tests set it to SIGKILL a worker in the middle of one",
    )
