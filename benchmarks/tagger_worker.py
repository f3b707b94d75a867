"""`tagstream tagger` on the benchmark's clock: the same worker, its "now" read from a file.

    python -m benchmarks.tagger_worker CLOCK_FILE     # settings from TAGSTREAM_* as for the tagger

Only the clock differs from `services.tagger.commands.tagger` (see benchmarks/clock.py for why).
"""

from __future__ import annotations

import asyncio
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
    TaggerWorker(tagger.app, loglevel="WARNING").execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
