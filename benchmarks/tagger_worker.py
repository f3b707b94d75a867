"""`tagstream tagger` on the benchmark's clock: the same worker, its "now" read from a file.

    python -m benchmarks.tagger_worker CLOCK_FILE     # settings from TAGSTREAM_* as for the tagger

Only the clock differs from `services.tagger.commands.tagger` (see benchmarks/clock.py for why), and
the log level: warnings unless TAGSTREAM_BENCH_LOG_LEVEL says otherwise (the scale benchmark's
recovery reads the bulk restore's info line).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from benchmarks.clock import FileClock
from services.runtime.settings import load_settings
from services.tagger.app import build_app
from services.tagger.worker import TaggerWorker


def main(argv: list[str]) -> int:
    (clock_file,) = argv
    tagger = build_app(load_settings(), FileClock(Path(clock_file)), CollectorRegistry())
    asyncio.run(tagger.create_topics())
    tagger.exit_if_stopping_hangs()
    level = os.environ.get("TAGSTREAM_BENCH_LOG_LEVEL", "WARNING")
    TaggerWorker(tagger.app, loglevel=level).execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
