"""`tagstream ingest`, `tagstream import` and `tagstream tags apply`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from services.runtime.definitions import RulesFileError

if TYPE_CHECKING:
    from services.ingest.gitops import Applied


def import_history(args: argparse.Namespace) -> int:
    import os

    from services.ingest.importer import main

    api_key = args.api_key or os.environ.get("TAGSTREAM_API_KEY")
    if not api_key:
        print("tagstream import: no API key: pass --api-key or set TAGSTREAM_API_KEY", file=sys.stderr)
        return 2
    if not 1 <= args.batch <= 10_000:
        print(f"tagstream import: --batch must be 1..10000, got {args.batch}", file=sys.stderr)
        return 2
    if args.rate is not None and not 1 <= args.rate <= 1_000_000:
        print(f"tagstream import: --rate must be 1..1000000 events/s, got {args.rate:g}", file=sys.stderr)
        return 2
    state = Path(args.state) if args.state else None
    return main(
        Path(args.events),
        url=args.url,
        api_key=api_key,
        state=state,
        restart=args.restart,
        batch=args.batch,
        rate=args.rate,
    )


def ingest(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from services.ingest.app import create_app
    from services.ingest.auth import KeyFileError
    from services.runtime.logs import hold_back_repeats
    from services.runtime.settings import SettingsError, load_settings

    # uvicorn configures its own loggers; the rest (aiokafka, ours) log through the root logger
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    hold_back_repeats()

    try:
        settings = load_settings()
        app = create_app(settings)
    except (SettingsError, KeyFileError) as error:
        print(f"tagstream ingest: {error}", file=sys.stderr)
        return 2
    uvicorn.run(
        app,
        host=settings.ingest.host,
        port=settings.ingest.port,
        log_level=args.log_level,
        access_log=not args.no_access_log,
    )
    return 0


def tags_apply(args: argparse.Namespace) -> int:
    import asyncio

    from services.ingest.catalog import CatalogError
    from services.ingest.gitops import apply_rules
    from services.runtime.clock import SystemClock
    from services.runtime.settings import SettingsError, load_settings

    try:
        settings = load_settings()
        text = Path(args.file).read_text(encoding="utf-8")
    except (SettingsError, OSError) as error:
        print(f"tagstream tags apply: {error}", file=sys.stderr)
        return 2
    try:
        applied = asyncio.run(
            apply_rules(
                settings, text, args.file, SystemClock(), dry_run=args.dry_run, prune=args.prune, impact=args.impact
            )
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
        for line in impact_lines(applied):
            print(line)
        print(f"dry run: {changes} change(s) not published")
    else:
        print(f"published {applied.published} change(s)")
    return 0


def impact_lines(applied: Applied) -> list[str]:
    """A dry run's preview, one line per tag: `value/low: +3000 -0 (e.g. +c00003 total_spent=320)`."""
    if applied.impact_unavailable:
        return [f"impact unknown: {applied.impact_unavailable}"]
    if applied.impact is None:
        return []
    lines = [f"impact on {applied.impact.customers} customers (nothing published, nothing changed):"]
    for impact in applied.impact.impacts:
        examples = [
            f"{sign}{sample.customer_id} " + " ".join(f"{c.metric}={c.observed}" for c in sample.reason.conditions[:3])
            for sign, samples in (("+", impact.gained_sample), ("-", impact.lost_sample))
            for sample in samples[:1]
        ]
        example = f" (e.g. {'; '.join(examples)})" if examples else ""
        lines.append(f"  {impact.group_id}/{impact.tag_id}: +{impact.gained} -{impact.lost}{example}")
    if not applied.impact.impacts:
        lines.append("  nobody would gain or lose a tag")
    return lines
