"""`tagstream demo` and `tagstream run`: the one-process modes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.runtime.settings import Settings


def demo(args: argparse.Namespace) -> int:
    import asyncio

    from pydantic import ValidationError

    from services.embedded.demo import SHOP_ZONE, run_demo
    from services.runtime.settings import Settings

    try:
        shop = Settings().shop
    except ValidationError as error:
        print(f"tagstream demo: invalid settings:\n{error}", file=sys.stderr)
        return 2
    zone = shop.timezone if "timezone" in shop.model_fields_set else SHOP_ZONE  # a shop in Shanghai, unless told
    asyncio.run(run_demo(sys.stdout, customers=args.customers, days=args.days, seed=args.seed, zone=zone))
    return 0


def run_embedded(args: argparse.Namespace) -> int:
    import logging

    import uvicorn
    from prometheus_client import CollectorRegistry

    from services.embedded.node import EmbeddedNode
    from services.ingest.app import create_app
    from services.ingest.auth import KeyFileError
    from services.notifier.policy import PlaybookError
    from services.runtime.clock import SystemClock
    from services.runtime.settings import SettingsError, load_settings
    from services.runtime.webhooks import ProviderConfigError

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
        playbooks = playbooks_file(args.playbooks, settings)
        registry = CollectorRegistry()
        node = EmbeddedNode(
            settings,
            Path(args.data_dir),
            SystemClock(),
            registry=registry,
            playbooks=playbooks,
            skip_bad_journal_lines=args.skip_bad_journal_lines,
        )
        app = create_app(settings, registry=registry, adapters=node.adapters())
    except (SettingsError, KeyFileError, PlaybookError, ProviderConfigError, OSError) as error:
        print(f"tagstream run: {error}", file=sys.stderr)
        return 2
    if not settings.ingest.api_keys and settings.ingest.api_keys_file is None:
        print(
            "tagstream run: no API keys: every request will get 401. Set e.g. "
            """TAGSTREAM_INGEST__API_KEYS='[{"key": "a-long-random-secret-key", "role": "admin", "name": "me"}]'""",
            file=sys.stderr,
        )
    try:
        uvicorn.run(
            app,
            host=args.host or settings.ingest.host,
            port=args.port or settings.ingest.port,
            log_level=args.log_level,
        )
    except SystemExit:
        if node.journal_error is None:
            raise
    if node.journal_error is not None:  # uvicorn logged the traceback; the operator needs this line
        print(f"tagstream run: {node.journal_error}", file=sys.stderr)
        return 2
    return 0


def playbooks_file(given: str | None, settings: Settings) -> Path | None:
    """`--playbooks`, else the notifier service's TAGSTREAM_NOTIFIER__PLAYBOOKS_FILE when it is set (its
    default path is the service's container layout, not a file a laptop has); None: no notifier."""
    if given:
        return Path(given)
    if "playbooks_file" in settings.notifier.model_fields_set:
        return settings.notifier.playbooks_file
    return None
