"""`tagstream tagger`, `tagstream replay` and `tagstream templates`."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from services.engine import DefinitionError, Engine, RuleBook
from services.runtime.definitions import RulesFileError, parse_groups, templates
from services.tagger.replay import OUTPUT_BUFFER, replay_to


def tagger(args: argparse.Namespace) -> int:
    import asyncio

    from services.runtime.settings import SettingsError, load_settings
    from services.tagger.app import TopicLayoutError, build_app
    from services.tagger.worker import TaggerWorker

    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"tagstream tagger: {error}", file=sys.stderr)
        return 2
    tagger = build_app(settings)
    try:
        asyncio.run(tagger.create_topics())
    except TopicLayoutError as error:
        print(f"tagstream tagger: {error}", file=sys.stderr)
        return 2
    tagger.exit_if_stopping_hangs()
    worker = TaggerWorker(tagger.app, loglevel=args.log_level.upper())
    worker.execute_from_commandline()  # runs until SIGTERM/SIGINT, then exits the process
    return 0


def projector(args: argparse.Namespace) -> int:
    import logging

    from services.runtime.consumers import run_until_signalled
    from services.runtime.logs import hold_back_repeats
    from services.runtime.settings import SettingsError, load_settings
    from services.tagger.projector_service import build_projector

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    hold_back_repeats()
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"tagstream projector: {error}", file=sys.stderr)
        return 2
    run_until_signalled(build_projector(settings))
    return 0


def replay(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from services.runtime.settings import Settings
    from services.runtime.zone import day_zone

    try:
        # the shop's settings only for what the command line leaves out
        shop = Settings().shop if args.currency is None or args.timezone is None else None
        currency = args.currency or (shop.currency if shop else "")
        zone = day_zone(args.timezone if args.timezone is not None else shop.timezone if shop else "UTC")
    except ValidationError as error:
        print(f"tagstream replay: invalid settings (or pass --currency and --timezone):\n{error}", file=sys.stderr)
        return 2
    try:
        groups = parse_groups(Path(args.rules).read_text(encoding="utf-8"), args.rules)
        today = zone.date_of(args.now) if args.now is not None else None
        rulebook = RuleBook.compile(groups, horizon_days=args.horizon_days, today=today, zone=zone)
    except (OSError, RulesFileError, DefinitionError) as error:
        print(f"tagstream replay: {error}", file=sys.stderr)
        return 2
    engine = Engine(rulebook, incremental=not args.full)
    started = time.perf_counter()

    def report(number: int, reason: str) -> None:
        print(f"{args.events}:{number}: rejected: {reason}", file=sys.stderr)

    with (
        _open_input(args.events) as source,
        _open_output(args.changes) as changes_out,
        open(args.out, "wb", buffering=OUTPUT_BUFFER) as out,
    ):
        run = replay_to(
            _progress(source, args.events),
            engine,
            out,
            changes_out=changes_out,
            now=args.now,
            on_reject=report,
            currency=currency,
        )
    summary = run.summary
    seconds = time.perf_counter() - started
    rate = summary.events / seconds if seconds > 0 else 0.0
    print(
        f"replayed {summary.events} events for {summary.customers} customers in {seconds:.1f}s "
        f"({rate:,.0f} events/s): {summary.changes} tag changes, {summary.duplicates} duplicates ignored, "
        f"{summary.rejected} lines rejected",
        file=sys.stderr,
    )
    return 1 if summary.rejected else 0


def templates_list(args: argparse.Namespace) -> int:
    for template in templates().values():
        print(f"{template.id}: {template.name} - {template.description}")
        for parameter in template.parameters:
            print(f"    {parameter.name} (default {parameter.default}): {parameter.description}")
    return 0


def templates_show(args: argparse.Namespace) -> int:
    found = templates()
    template = found.get(args.name)
    if template is None:
        print(f"tagstream templates: no template {args.name!r} (have: {', '.join(found)})", file=sys.stderr)
        return 2
    values = {}
    for setting in args.set:
        name, separator, value = setting.partition("=")
        if not separator:
            print(f"tagstream templates: --set takes NAME=VALUE, got {setting!r}", file=sys.stderr)
            return 2
        values[name] = value
    try:
        template.render(values)  # validate before printing
        print(template.render_text(values), end="")
    except RulesFileError as error:
        print(f"tagstream templates: {error}", file=sys.stderr)
        return 2
    return 0


class _open_input:
    def __init__(self, name: str) -> None:
        self._name = name
        self._file: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes]:
        self._file = sys.stdin.buffer if self._name == "-" else open(self._name, "rb")
        return self._file

    def __exit__(self, *exc: object) -> None:
        if self._file is not None and self._name != "-":
            self._file.close()


class _open_output:
    def __init__(self, name: str | None) -> None:
        self._name = name
        self._file: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes] | None:
        if self._name is not None:
            self._file = open(self._name, "wb", buffering=OUTPUT_BUFFER)
        return self._file

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()


def _progress(source: IO[bytes], name: str) -> Iterable[bytes]:
    """The lines; on a terminal, drawing a progress bar on stderr as they go (elsewhere the file
    itself, without a generator between it and the replay)."""
    if not sys.stderr.isatty():
        return source
    return _drawing_progress(source, name)


def _drawing_progress(source: IO[bytes], name: str) -> Iterator[bytes]:
    try:
        total = Path(name).stat().st_size if name != "-" else 0
    except OSError:
        total = 0
    done = 0
    started = time.perf_counter()
    for count, line in enumerate(source, 1):
        done += len(line)
        if count % 20_000 == 0:
            _draw(done, total, count, time.perf_counter() - started)
        yield line
    _draw(done, total, count if done else 0, time.perf_counter() - started)
    sys.stderr.write("\n")


def _draw(done: int, total: int, lines: int, seconds: float) -> None:
    rate = lines / seconds if seconds > 0 else 0
    if total:
        filled = int(30 * done / total)
        bar = "#" * filled + "-" * (30 - filled)
        sys.stderr.write(f"\r[{bar}] {100 * done / total:5.1f}% {lines:,} lines {rate:,.0f}/s")
    else:
        sys.stderr.write(f"\r{lines:,} lines {rate:,.0f}/s")
    sys.stderr.flush()
