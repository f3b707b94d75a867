"""`replay_to` on the first lines of the engine benchmark's workload, for an instruction count:

    scripts/compile-engine.sh
    python -m benchmarks.engine --events 100000 --customers 10000       # writes the workload once
    PYTHONHASHSEED=0 valgrind --tool=callgrind --collect-atstart=no \\
        --toggle-collect=CPyDef_replay___replay_to python -m benchmarks.replay_slice \\
        [--scores | --counts-for-scores alone | --counts-for-scores unread-scores]

Counts instructions, not seconds: on a shared machine the count holds where events/s do not.
(`CPyDef_replay___replay_to` is the compiled function; the pure-Python engine has no such symbol.)
"""

from __future__ import annotations

import argparse
import itertools
import sys

from benchmarks.workload import rules
from schemas.tags import TagGroupSet
from services.engine import Engine, RuleBook
from services.runtime.engine_build import engine_build
from services.runtime.zone import day_zone
from services.tagger.replay import OUTPUT_BUFFER, replay_to


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events-file", default=".run/bench/events-100000-10000.jsonl")
    parser.add_argument("--lines", type=int, default=40_000)
    parser.add_argument("--timezone", default="UTC", help="the shop's time zone (IANA name)")
    shapes = parser.add_mutually_exclusive_group()
    shapes.add_argument("--scores", action="store_true", help="the workload with behaviour scores (workload.rules)")
    shapes.add_argument(
        "--counts-for-scores",
        choices=("alone", "unread-scores"),
        help="the score tags on window counts instead, changing as often (workload.score_shaped_count_rules); "
        "unread-scores: their groups still define the scores, read by no rule",
    )
    args = parser.parse_args(argv)
    definitions = rules(
        scores=args.scores,
        counts_for_scores=args.counts_for_scores is not None,
        unread_scores=args.counts_for_scores == "unread-scores",
    )
    groups = TagGroupSet.model_validate(definitions).groups
    engine = Engine(RuleBook.compile(groups, zone=day_zone(args.timezone)))
    with open(args.events_file, "rb") as source:
        lines = list(itertools.islice(source, args.lines))
    with (
        open("/dev/null", "wb", buffering=OUTPUT_BUFFER) as out,
        open("/dev/null", "wb", buffering=OUTPUT_BUFFER) as changes,
    ):
        run = replay_to(lines, engine, out, changes_out=changes)
    summary = run.summary
    print(
        f"engine {engine_build().describe()}: {summary.events} events, {summary.changes} tag changes, "
        f"{summary.timer_wakeups} timer wake-ups",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
