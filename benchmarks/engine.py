"""Engine benchmark: `tagstream replay` throughput, incremental vs full re-evaluation, state size.

    python -m benchmarks.engine                      # 1,000,000 events, 100,000 customers, 20 groups / 100 tags
    python -m benchmarks.engine --events 100000 --customers 10000
    python -m benchmarks.engine --timezone Asia/Shanghai     # the shop's days in another zone (default UTC)
    python -m benchmarks.engine --scores             # and ten rules (of 110) on behaviour scores

Measures the engine build this checkout imports and prints which: pure Python by default;
`scripts/compile-engine.sh` first measures the mypyc-compiled engine the container image ships
(`--clean` goes back). A stale compiled build (sources edited since) is refused.

Every figure is measured in this run, next to its baseline from the same run:
- baseline: the same replay (JSON in, validation, fold, JSON out) with no rules at all;
- full: the engine re-evaluating every group on every event instead of only what the event touched.
One core: everything runs in this one Python process.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from benchmarks.workload import rules, write_events
from schemas.tags import TagGroupSet
from services.engine import Engine, RuleBook
from services.engine.codec import encode
from services.engine.state import CustomerState
from services.runtime.engine_build import engine_build
from services.runtime.zone import day_zone
from services.tagger.replay import OUTPUT_BUFFER, replay_to


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--workdir", default=".run/bench")
    parser.add_argument("--timezone", default="UTC", help="the shop's time zone (IANA name)")
    parser.add_argument("--scores", action="store_true", help="add ten rules on behaviour scores (workload.rules)")
    args = parser.parse_args(argv)
    build = engine_build()
    if build.stale:
        parser.exit(2, f"refusing to measure a stale build: engine {build.describe()}\n")

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    events_path = workdir / f"events-{args.events}-{args.customers}.jsonl"
    if not events_path.exists():
        started = time.perf_counter()
        write_events(str(events_path), args.events, args.customers)
        print(f"generated {events_path} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    definitions = rules(scores=args.scores)
    (workdir / "rules.yaml").write_text(yaml.safe_dump(definitions, allow_unicode=True, sort_keys=False))
    groups = TagGroupSet.model_validate(definitions).groups
    zone = day_zone(args.timezone)
    print(
        f"workload: {args.events:,} events, {args.customers:,} customers, {len(groups)} groups / "
        f"{sum(len(group.tags) for group in groups)} tags, days in {zone.name}; engine: {engine_build().describe()}",
        file=sys.stderr,
    )

    rule_count = sum(len(group.tags) for group in groups)
    baseline = _timed_replay(events_path, workdir, Engine(RuleBook.compile([], zone=zone)))
    incremental = _timed_replay(events_path, workdir, Engine(RuleBook.compile(groups, zone=zone)))
    full = _timed_replay(events_path, workdir, Engine(RuleBook.compile(groups, zone=zone), incremental=False))
    sizes = _state_sizes(incremental["run"].states.values())

    rows = [
        ("replay, no rules (baseline)", baseline),
        (f"replay, {rule_count} rules, incremental", incremental),
        (f"replay, {rule_count} rules, full re-evaluation", full),
    ]
    print("\n| run | events/s | seconds | tag changes | vs baseline |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, result in rows:
        print(
            f"| {name} | {result['rate']:,.0f} | {result['seconds']:.1f} | {result['changes']:,} | "
            f"{result['rate'] / baseline['rate']:.2f}x |"
        )
    print(
        f"\nincremental vs full re-evaluation: {incremental['rate'] / full['rate']:.2f}x the throughput "
        f"({full['seconds'] / incremental['seconds']:.2f}x less time)"
    )
    print(
        f"tag changes per event: {incremental['changes'] / incremental['events']:.2f}; "
        f"timer wake-ups per event: {incremental['timers'] / incremental['events']:.2f}"
    )
    print("\n| state per customer | median | p90 | p99 | mean |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, values in sizes.items():
        quantiles = statistics.quantiles(values, n=100)
        print(
            f"| {name} | {statistics.median(values):,.0f} B | {quantiles[89]:,.0f} B | {quantiles[98]:,.0f} B | "
            f"{statistics.fmean(values):,.0f} B |"
        )
    return 0


def _timed_replay(events_path: Path, workdir: Path, engine: Engine) -> dict[str, Any]:
    # Each run writes ~1.4 GB of change JSON; without this the kernel writes the previous run's out
    # while the next one is timed, on the same two cores (measured: up to ~15% slower runs).
    os.sync()
    gc.collect()
    started = time.perf_counter()
    with (
        open(events_path, "rb") as source,
        open(workdir / "changes.jsonl", "wb", buffering=OUTPUT_BUFFER) as changes,
        open(workdir / "tags.jsonl", "wb", buffering=OUTPUT_BUFFER) as out,
    ):
        run = replay_to(source, engine, out, changes_out=changes)
    seconds = time.perf_counter() - started
    summary = run.summary
    return {
        "run": run,
        "seconds": seconds,
        "events": summary.events,
        "rate": summary.events / seconds,
        "changes": summary.changes,
        "timers": summary.timer_wakeups,
    }


def _state_sizes(states: Iterable[CustomerState]) -> dict[str, list[int]]:
    """Stored (encoded) bytes for every customer; Python heap bytes for a sample of them."""
    chosen = list(states)
    encoded = [len(encode(state)) for state in chosen]
    step = max(1, len(chosen) // 5000)
    in_memory = [_deep_size(state) for state in chosen[::step]]
    return {"stored (encoded, what the tagger's table keeps)": encoded, "in memory (Python objects)": in_memory}


def _deep_size(root: object) -> int:
    seen: set[int] = set()
    total = 0
    stack = [root]
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, type):
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        else:
            # attributes of a plain class with __slots__, or of a mypyc-compiled (native) class
            names: Iterable[str] = getattr(type(item), "__mypyc_attrs__", ()) or getattr(item, "__slots__", ())
            stack.extend(getattr(item, name) for name in names if not name.startswith("__") and hasattr(item, name))
    return total


if __name__ == "__main__":
    sys.exit(main())
