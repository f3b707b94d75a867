"""Preview benchmark: how long one tagger worker takes to preview a definition change for 1M customers.

    python -m benchmarks.preview                          # 100,000 customers' states, previewed 10 times over
    python -m benchmarks.preview --events 100000 --customers 10000 --rounds 2
    python -m benchmarks.preview --kafka --customers 1000000   # one worker end to end (local broker, Redis)

The states are those `tagstream replay` builds from the engine benchmark's workload (benchmarks/workload.py,
20 groups / 100 tags), stored as the tagger stores them (encoded bytes). The draft shifts the bounds of
the `aov` group's bands by 10%, so that group and every group reading its tags are re-evaluated for
every customer — what `POST /v1/groups/aov:preview` makes each worker do for its partitions
(services/engine/lookup.py: decode a copy, run the backfill, count). `--rounds` previews the same states
again under other ids' counts, so 100,000 states x 10 rounds are 1,000,000 customer previews on one core.
Not measured here: reading the states from RocksDB (a key lookup per customer in the worker).

`--kafka`: one `tagstream tagger` worker (RocksDB, 4 partitions) holding `--customers` customers of
one order each (the integration test's `value` tiers, loaded by producing the orders unpaced and
waiting for the worker to commit them), then `POST /v1/groups/value:preview` through ingest: the
scan of the table, the core, the answers on Kafka, the gathering. Prints the wall time and the
worker's CPU for the preview alone. Starts the local broker and Redis (scripts/kafka.sh, redis.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from benchmarks.workload import rules, write_events
from schemas.tags import TagGroup, TagGroupSet
from services.engine import Engine, RuleBook
from services.engine.codec import decode, encode
from services.engine.lookup import Preview
from services.runtime.engine_build import engine_build
from services.tagger.replay import Replay


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=10, help="previews of every state (1..100)")
    parser.add_argument("--workdir", default=".run/bench")
    parser.add_argument("--kafka", action="store_true", help="one tagger worker end to end (see above)")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 100:
        parser.error(f"--rounds must be 1..100, got {args.rounds}")
    if args.kafka:
        if not 1 <= args.customers <= 10_000_000:
            parser.error(f"--customers must be 1..10,000,000, got {args.customers}")
        return _kafka_preview(args.customers)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    events_path = workdir / f"events-{args.events}-{args.customers}.jsonl"
    if not events_path.exists():
        write_events(str(events_path), args.events, args.customers)
    groups = TagGroupSet.model_validate(rules()).groups
    current = RuleBook.compile(groups)
    run = Replay(Engine(current))
    with open(events_path, "rb") as source:
        run.feed(source)
    # The replay's clock at its end (the latest instant any customer was evaluated at).
    now_us = max((state.clock_us or 0 for state in run.states.values()), default=0)
    stored = [encode(state) for state in run.states.values()]
    draft = [shifted(group) if group.id == "aov" else group for group in groups]
    print(f"{len(stored):,} states from {args.events:,} events; engine {engine_build().describe()}", file=sys.stderr)

    decode_cpu = _cpu(lambda: _decode_each(stored))
    preview = Preview(current, draft, sample=5)
    started, started_cpu = time.perf_counter(), time.process_time()
    for _ in range(args.rounds):
        for data in stored:
            preview.add(data, now_us)
    seconds, cpu = time.perf_counter() - started, time.process_time() - started_cpu
    tally = preview.tally()
    previewed = len(stored) * args.rounds
    moved = sum(impact.gained + impact.lost for impact in tally.impacts) // args.rounds
    # CPU time is the figure to compare: on a shared machine the wall clock also counts other work.
    print(
        "| customers previewed | wall s | CPU s | CPU per customer | 1M customers (CPU) | of which decoding | moves |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    per_customer = cpu / previewed
    print(
        f"| {previewed:,} | {seconds:.1f} | {cpu:.1f} | {per_customer * 1e6:.1f} µs | {per_customer * 1e6:.1f} s | "
        f"{decode_cpu / len(stored) / per_customer:.0%} | {moved:,} per round |"
    )
    return 0


def _kafka_preview(customers: int) -> int:
    # imported here: the in-memory run above needs neither a broker nor the test helpers
    from benchmarks.preview_kafka import preview_seconds
    from tests.support import infra

    with tempfile.TemporaryDirectory(prefix="bench-preview-") as directory:
        loading, seconds, cpu, answered = asyncio.run(
            preview_seconds(infra.start_kafka(), infra.start_redis(), Path(directory), customers)
        )
    print(f"engine {engine_build().describe()}; load average {os.getloadavg()[0]:.2f} at the end")
    print("| customers previewed | wall s | worker CPU s | CPU per customer | state loaded in |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    print(f"| {answered:,} | {seconds:.1f} | {cpu:.1f} | {cpu / answered * 1e6:.1f} µs | {loading:.0f} s |")
    return 0


def shifted(group: TagGroup) -> TagGroup:
    """The group with every `between` band's bounds raised by 10%."""
    document: dict[str, Any] = group.model_dump(mode="json", exclude_none=True)
    for tag in document["tags"]:
        for condition in tag["rule"]["conditions"]:
            if condition["op"] == "between":
                condition["value"] = [str(Decimal(str(bound)) * Decimal("1.1")) for bound in condition["value"]]
    return TagGroup.model_validate(document)


def _decode_each(stored: list[bytes]) -> None:
    for data in stored:  # one at a time, dropped: as the preview decodes (keeping them all costs GC time)
        decode(data)


def _cpu(work: Any) -> float:
    started = time.process_time()
    work()
    return time.process_time() - started


if __name__ == "__main__":
    raise SystemExit(main())
