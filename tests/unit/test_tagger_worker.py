"""The tagger worker process: its root logger stays at the level asked for (faust's start-up spinner would
lower it), and once started what it built is frozen out of the garbage collector's scans and full
collections come less often."""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

import pytest

from services.runtime.logs import RepeatFilter
from services.runtime.settings import Settings, TaggerSettings
from services.tagger.faust_app import customers_table, faust_app
from services.tagger.worker import FULL_COLLECTION_AFTER, TaggerWorker


@pytest.mark.parametrize("level", [logging.WARNING, logging.ERROR, logging.INFO, logging.DEBUG])
def test_the_root_logger_keeps_the_level_asked_for_and_holds_back_repeats(tmp_path: Path, level: int) -> None:
    app = faust_app(Settings(tagger=TaggerSettings(datadir=tmp_path / "tagger")))
    worker = TaggerWorker(app, loglevel=logging.getLevelName(level))
    logger = logging.Logger(f"tagger-root-{level}")  # a stand-in for the root logger: nothing global changes
    logger.addHandler(logging.StreamHandler())

    worker.on_setup_root_logger(logger, level)

    assert logger.level == level
    assert logger.isEnabledFor(logging.DEBUG) is (level <= logging.DEBUG)
    assert any(isinstance(found, RepeatFilter) for found in logger.handlers[0].filters)


def test_once_started_the_worker_freezes_what_it_built_and_paces_full_collections(tmp_path: Path) -> None:
    app = faust_app(Settings(tagger=TaggerSettings(datadir=tmp_path / "tagger")))
    worker = TaggerWorker(app, loglevel="WARNING")
    gc.unfreeze()
    thresholds = gc.get_threshold()
    try:
        assert gc.get_freeze_count() == 0
        asyncio.run(worker.on_startup_finished())
        assert gc.get_freeze_count() > 0
        assert gc.get_count()[2] == 0  # collected first: no garbage of the start-up is frozen with it
        # the young generations keep their pace; the full collection waits for more of them
        assert gc.get_threshold() == (*thresholds[:2], FULL_COLLECTION_AFTER)
        assert thresholds[2] < FULL_COLLECTION_AFTER
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def test_the_workers_producer_sends_batches_up_to_the_setting_not_fausts_16_kib(tmp_path: Path) -> None:
    """An idempotent producer has one batch per partition in flight: a 1 MB backfill chunk of changes
    in 16 KiB batches waited ~65 round trips (36-107 ms on the local broker), in 512 KiB two (5-8 ms)."""
    default = faust_app(Settings(tagger=TaggerSettings(datadir=tmp_path)))
    assert default.producer.max_batch_size == 524_288
    chosen = faust_app(Settings(tagger=TaggerSettings(datadir=tmp_path, producer_batch_bytes=65_536)))
    assert chosen.producer.max_batch_size == 65_536


def test_each_partitions_store_flushes_its_memtable_at_the_setting_not_fausts_64_mib(tmp_path: Path) -> None:
    settings = Settings(tagger=TaggerSettings(datadir=tmp_path, rocksdb_write_buffer_mb=4, rocksdb_block_cache_mb=16))
    table = customers_table(faust_app(settings), settings)
    options = table.data.rocksdb_options  # type: ignore[attr-defined]
    assert (options.write_buffer_size, options.block_cache_size) == (4 * 2**20, 16 * 2**20)
