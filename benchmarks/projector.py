"""The projector's cost per tag change: real-shaped records applied to a local Redis as the
projection applies them (validated, then one script per partition's batch).

    python -m benchmarks.projector                     # 100,000 changes of ~5,000 customers
    python -m benchmarks.projector --changes 20000

The changes are the workload's (benchmarks.workload: 20 groups / 100 tags, shop in Asia/Shanghai)
as `tagstream replay` writes them, byte for byte the tagger's records, cached under .run/bench/.
They are spread over 12 partitions by customer and applied in batches of up to 500 records per
partition, round robin, each with `decode_tag_records` and `Projector.apply_batch`, start-up's
objects frozen out of the collector's scans as `tagstream projector` does (`--no-freeze`: not). Reported: the
projector's CPU (this process) and Redis's (`INFO cpu`, user + sys) per change, and Redis memory
(`used_memory` growth) per customer and per change. Starts Redis with scripts/redis.sh (or uses
TAGSTREAM_TEST_REDIS_URL); compare only figures of one machine at one load (`uptime`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import yaml
from redis.asyncio import Redis

from benchmarks.workload import rules, write_events
from services.runtime.change_records import ChangeDecoder
from services.runtime.readmodel import offset_field
from services.tagger.projection import decode_tag_records
from services.tagger.projector import Position, Projector
from tests.support import infra

PARTITIONS = 12
BATCH = 500
EVENTS_PER_CHANGE = 0.26
"""The workload's events per tag change (~3.9 changes an event), to make about the changes asked."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=100_000)
    parser.add_argument("--workdir", default=".run/bench")
    parser.add_argument("--no-freeze", action="store_true", help="leave start-up's objects to the collector")
    args = parser.parse_args(argv)
    if not 1_000 <= args.changes <= 2_000_000:
        parser.error("--changes must be 1,000-2,000,000")
    records = _records(Path(args.workdir), args.changes)
    redis_url = os.environ.get("TAGSTREAM_TEST_REDIS_URL") or infra.start_redis()
    return asyncio.run(run(redis_url, records, freeze=not args.no_freeze))


async def run(redis_url: str, records: list[bytes], *, freeze: bool = True) -> int:
    redis = Redis.from_url(redis_url)
    prefix = f"bench-proj-{uuid.uuid4().hex[:6]}:"
    try:
        customers = len({_customer(record) for record in records})
        memory_before = await _used_memory(redis)
        redis_before = await _redis_cpu(redis)
        projector = Projector(redis, key_prefix=prefix)
        if freeze:  # as `tagstream projector` does once started (projector_service.py)
            gc.collect()
            gc.freeze()
        now = datetime.now(UTC)
        decoder = ChangeDecoder()
        wall, cpu = time.perf_counter(), time.process_time()
        for partition, first, batch in _batches(records):
            changes = decode_tag_records(batch, decoder)
            position = Position(offset_field("bench", partition), first, first + len(batch), from_start=first == 0)
            result = await projector.apply_batch(position, changes, now)
            assert result.kind == "ok", result
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        redis_cpu = await _redis_cpu(redis) - redis_before
        memory = await _used_memory(redis) - memory_before
        count = len(records)
        print(f"{count:,} tag changes of {customers:,} customers in {wall:.1f} s ({count / wall:,.0f} changes/s)")
        print(f"projector CPU per change: {cpu * 1e6 / count:.1f} µs")
        print(f"Redis CPU per change:     {redis_cpu * 1e6 / count:.1f} µs")
        print(f"Redis memory per customer: {memory / customers:,.0f} B ({memory / count:.1f} B per change)")
        print(f"load: {os.getloadavg()[0]:.1f}")
    finally:
        async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
            await redis.unlink(key)  # one at a time: a single UNLINK of every key would block Redis
        await redis.aclose()
    return 0


def _records(workdir: Path, changes: int) -> list[bytes]:
    """The first `changes` records of the workload's replay (written once per size)."""
    events = max(1_000, int(changes * EVENTS_PER_CHANGE))
    customers = max(100, events * 10 // 56)  # 5.6 events per customer, as benchmarks.scale
    out = workdir / f"projector-changes-{events}-{customers}.jsonl"
    if not out.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        events_file, rules_file = workdir / f"projector-events-{events}.jsonl", workdir / "projector-rules.yaml"
        write_events(str(events_file), events, customers, seed=11)
        rules_file.write_text(yaml.safe_dump(rules(), allow_unicode=True), encoding="utf-8")
        replay = [sys.executable, "-m", "services.cli", "replay", str(events_file), "--rules", str(rules_file)]
        replay += ["--out", os.devnull, "--changes", str(out), "--timezone", "Asia/Shanghai"]
        subprocess.run(replay, check=True)
    with out.open("rb") as lines:
        return [line.rstrip(b"\n") for _, line in zip(range(changes), lines, strict=False)]


def _batches(records: list[bytes]) -> Iterator[tuple[int, int, list[bytes]]]:
    """(partition, first offset, records) of up to BATCH records, partitions taken round robin."""
    partitions: list[list[bytes]] = [[] for _ in range(PARTITIONS)]
    for record in records:
        partitions[zlib.crc32(_customer(record)) % PARTITIONS].append(record)
    for first in range(0, max(len(p) for p in partitions), BATCH):
        for partition, held in enumerate(partitions):
            if first < len(held):
                yield partition, first, held[first : first + BATCH]


def _customer(record: bytes) -> bytes:
    start = record.index(b'"customer_id":') + 14
    return record[start : record.index(b',"group_id"', start)]


async def _used_memory(redis: Redis) -> int:
    return int((await redis.info("memory"))["used_memory"])


async def _redis_cpu(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


if __name__ == "__main__":
    sys.exit(main())
