"""The `tagstream` command."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from services.tagger.definitions import RulesFileError, parse_groups, templates
from services.tagger.engine import DefinitionError, Engine, RuleBook
from services.tagger.engine.aggregates import DEFAULT_HORIZON_DAYS
from services.tagger.replay import replay_to


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    code: int = args.run(args)
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tagstream", description="Real-time customer tagging for e-commerce CRM.")
    commands = parser.add_subparsers(title="commands")

    replay = commands.add_parser(
        "replay",
        help="backtest rules on an event history (no services needed)",
        description="Fold a JSON-lines event history through the engine and write every customer's tags.",
    )
    replay.add_argument("events", help="JSON-lines file of customer events ('-' for standard input)")
    replay.add_argument("--rules", required=True, help="rules file (YAML, `groups: [...]`)")
    replay.add_argument("--now", type=_instant, help="evaluate at this ISO 8601 instant (default: latest event)")
    replay.add_argument("--out", required=True, help="JSON-lines output, one line per customer")
    replay.add_argument("--changes", help="also write every tag change, in order, as JSON lines")
    replay.add_argument("--horizon-days", type=int, default=DEFAULT_HORIZON_DAYS, help="days of history kept")
    replay.add_argument("--full", action="store_true", help="re-evaluate every group on every event (slower)")
    replay.set_defaults(run=_replay)

    tagger = commands.add_parser(
        "tagger",
        help="run a tagger worker (needs Kafka; settings from TAGSTREAM_* variables)",
        description="Run a tagger worker: creates missing topics, then consumes events until stopped.",
    )
    tagger.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    tagger.set_defaults(run=_tagger)

    demo = commands.add_parser(
        "demo",
        help="watch tagstream tag a generated shop and follow up, in one process (no services needed)",
        description="A simulated quarter of a generated shop through the engine and the notifier, printed live.",
    )
    demo.add_argument("--customers", type=int, default=400, help="how many customers the shop has")
    demo.add_argument("--days", type=int, default=91, help="simulated days")
    demo.add_argument("--seed", type=int, default=7, help="random seed (the same seed, the same shop)")
    demo.set_defaults(run=_demo)

    notifier = commands.add_parser(
        "notifier",
        help="run a notifier (needs Kafka and Redis; settings from TAGSTREAM_* variables)",
        description="Run a notifier replica: turns tag changes into push, SMS and coupon sends by the playbooks.",
    )
    notifier.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    notifier.add_argument("--check", metavar="PLAYBOOKS", help="only validate a playbooks file and exit")
    notifier.set_defaults(run=_notifier)

    ingest = commands.add_parser(
        "ingest",
        help="run the ingest HTTP API (needs Kafka and Redis; settings from TAGSTREAM_* variables)",
        description="Serve the HTTP API (uvicorn) for events, tag definitions, manual tags and reads.",
    )
    ingest.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    ingest.add_argument("--no-access-log", action="store_true", help="do not log one line per request")
    ingest.set_defaults(run=_ingest)

    tags = commands.add_parser("tags", help="manage tag definitions on Kafka")
    tag_commands = tags.add_subparsers(title="tags commands", required=True)
    apply = tag_commands.add_parser(
        "apply",
        help="publish a rules file's groups (GitOps): validate, print the diff, publish",
        description="Create the file's new groups, replace changed ones (version + 1), leave identical ones; "
        "groups missing from the file are kept unless --prune. Exit 0 applied, 1 invalid, 2 unusable.",
    )
    apply.add_argument("-f", "--file", required=True, help="rules file (YAML, `groups: [...]`)")
    apply.add_argument("--dry-run", action="store_true", help="print the diff, publish nothing")
    apply.add_argument("--prune", action="store_true", help="also delete groups that are not in the file")
    apply.set_defaults(run=_tags_apply)

    run = commands.add_parser(
        "run",
        help="run all of tagstream in one process for a small shop (--embedded: no Kafka, no Redis)",
        description="Serve the ingest HTTP API with the tagger, read model and notifier in this process; state is "
        "journaled in --data-dir, so a restart loses nothing. Settings (API keys, notifier) from TAGSTREAM_*.",
    )
    run.add_argument("--embedded", action="store_true", required=True, help="the one-process mode (required)")
    run.add_argument("--data-dir", default=".tagstream", help="where the journal is kept (default: .tagstream)")
    run.add_argument("--playbooks", help="notifier playbooks file; without it no messages are sent")
    run.add_argument("--host", help="listen address (default: TAGSTREAM_INGEST__HOST)")
    run.add_argument("--port", type=int, help="listen port (default: TAGSTREAM_INGEST__PORT)")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.set_defaults(run=_run_embedded)

    template = commands.add_parser("templates", help="built-in tag group templates")
    template_commands = template.add_subparsers(title="template commands", required=True)
    listing = template_commands.add_parser("list", help="list the templates and their parameters")
    listing.set_defaults(run=_templates_list)
    show = template_commands.add_parser("show", help="print a template as a rules file")
    show.add_argument("name")
    show.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="set a parameter")
    show.set_defaults(run=_templates_show)
    return parser


def _demo(args: argparse.Namespace) -> int:
    import asyncio

    from services.embedded.demo import run_demo

    asyncio.run(run_demo(sys.stdout, customers=args.customers, days=args.days, seed=args.seed))
    return 0


def _replay(args: argparse.Namespace) -> int:
    try:
        groups = parse_groups(Path(args.rules).read_text(encoding="utf-8"), args.rules)
        today = args.now.date() if args.now is not None else None
        rulebook = RuleBook.compile(groups, horizon_days=args.horizon_days, today=today)
    except (OSError, RulesFileError, DefinitionError) as error:
        print(f"tagstream replay: {error}", file=sys.stderr)
        return 2
    engine = Engine(rulebook, incremental=not args.full)
    started = time.perf_counter()

    def report(number: int, reason: str) -> None:
        print(f"{args.events}:{number}: rejected: {reason}", file=sys.stderr)

    with _open_input(args.events) as source, _open_output(args.changes) as changes_out, open(args.out, "wb") as out:
        run = replay_to(
            _progress(source, args.events), engine, out, changes_out=changes_out, now=args.now, on_reject=report
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


def _tagger(args: argparse.Namespace) -> int:
    import asyncio

    import faust
    from pydantic import ValidationError

    from services.runtime.settings import Settings
    from services.tagger.app import TopicLayoutError, build_app

    try:
        settings = Settings()
    except ValidationError as error:
        print(f"tagstream tagger: invalid settings:\n{error}", file=sys.stderr)
        return 2
    tagger = build_app(settings)
    try:
        asyncio.run(tagger.create_topics())
    except TopicLayoutError as error:
        print(f"tagstream tagger: {error}", file=sys.stderr)
        return 2
    worker = faust.Worker(tagger.app, loglevel=args.log_level.upper())
    worker.execute_from_commandline()  # runs until SIGTERM/SIGINT, then exits the process
    return 0


def _notifier(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal

    from pydantic import ValidationError

    from services.notifier.app import build_app
    from services.notifier.policy import PlaybookError, load_playbooks
    from services.runtime.settings import Settings

    if args.check is not None:
        try:
            found = load_playbooks(Path(args.check).read_text(encoding="utf-8"), args.check)
        except (OSError, PlaybookError) as error:
            print(f"tagstream notifier: {error}", file=sys.stderr)
            return 2
        print(f"{args.check}: {len(found.playbooks)} playbooks, {len(found.templates)} templates: valid")
        return 0
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = build_app(Settings())
    except (ValidationError, PlaybookError) as error:
        print(f"tagstream notifier: {error}", file=sys.stderr)
        return 2

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(stop_signal, app.request_stop)
        await app.run()

    asyncio.run(serve())
    return 0


def _run_embedded(args: argparse.Namespace) -> int:
    import logging

    import uvicorn
    from prometheus_client import CollectorRegistry
    from pydantic import ValidationError

    from services.embedded.node import EmbeddedNode
    from services.ingest.app import create_app
    from services.ingest.auth import KeyFileError
    from services.notifier.app import providers_from
    from services.notifier.metrics import NotifierMetrics
    from services.notifier.policy import PlaybookError, load_playbooks
    from services.runtime.settings import Settings
    from services.tagger.engine import SystemClock

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings()
        playbooks = None
        if args.playbooks:
            playbooks = load_playbooks(Path(args.playbooks).read_text(encoding="utf-8"), args.playbooks)
        registry = CollectorRegistry()
        node = EmbeddedNode(
            settings,
            Path(args.data_dir),
            SystemClock(),
            playbooks=playbooks,
            providers=providers_from(settings.notifier, NotifierMetrics(registry)),
        )
        app = create_app(settings, registry=registry, adapters=node.adapters())
    except (ValidationError, KeyFileError, PlaybookError, OSError) as error:
        print(f"tagstream run: {error}", file=sys.stderr)
        return 2
    if not settings.ingest.api_keys and settings.ingest.api_keys_file is None:
        print(
            "tagstream run: no API keys: every request will get 401. Set e.g. "
            """TAGSTREAM_INGEST__API_KEYS='[{"key": "a-long-random-secret-key", "role": "admin", "name": "me"}]'""",
            file=sys.stderr,
        )
    uvicorn.run(
        app,
        host=args.host or settings.ingest.host,
        port=args.port or settings.ingest.port,
        log_level=args.log_level,
    )
    return 0


def _ingest(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from services.ingest.app import create_app
    from services.ingest.auth import KeyFileError
    from services.runtime.settings import Settings

    try:
        settings = Settings()
        app = create_app(settings)
    except (ValidationError, KeyFileError) as error:
        print(f"tagstream ingest: invalid settings:\n{error}", file=sys.stderr)
        return 2
    uvicorn.run(
        app,
        host=settings.ingest.host,
        port=settings.ingest.port,
        log_level=args.log_level,
        access_log=not args.no_access_log,
    )
    return 0


def _tags_apply(args: argparse.Namespace) -> int:
    import asyncio

    from pydantic import ValidationError

    from services.ingest.catalog import CatalogError
    from services.ingest.gitops import apply_rules
    from services.runtime.settings import Settings
    from services.tagger.engine import SystemClock

    try:
        settings = Settings()
        text = Path(args.file).read_text(encoding="utf-8")
    except (ValidationError, OSError) as error:
        print(f"tagstream tags apply: {error}", file=sys.stderr)
        return 2
    try:
        applied = asyncio.run(
            apply_rules(settings, text, args.file, SystemClock(), dry_run=args.dry_run, prune=args.prune)
        )
    except (RulesFileError, CatalogError) as error:
        print(f"tagstream tags apply: {error}", file=sys.stderr)
        return 1
    except TimeoutError:
        print(f"tagstream tags apply: Kafka at {settings.kafka.bootstrap_servers} did not answer", file=sys.stderr)
        return 2
    for line in applied.plan.lines:
        print(line)
    changes = len(applied.plan.change.upserts) + len(applied.plan.change.deletions)
    if args.dry_run:
        print(f"dry run: {changes} change(s) not published")
    else:
        print(f"published {applied.published} change(s)")
    return 0


def _templates_list(args: argparse.Namespace) -> int:
    for template in templates().values():
        print(f"{template.id}: {template.name} - {template.description}")
        for parameter in template.parameters:
            print(f"    {parameter.name} (default {parameter.default}): {parameter.description}")
    return 0


def _templates_show(args: argparse.Namespace) -> int:
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


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 instant: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone; write e.g. 2026-11-23T00:00:00Z")
    return moment.astimezone(UTC)


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
            self._file = open(self._name, "wb")
        return self._file

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()


def _progress(source: IO[bytes], name: str) -> Iterator[bytes]:
    """Yield the lines; on a terminal, draw a progress bar on stderr as they go."""
    if not sys.stderr.isatty():
        yield from source
        return
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


if __name__ == "__main__":
    raise SystemExit(main())
