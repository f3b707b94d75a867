"""`tagstream demo` and `tagstream run --embedded`: the one-process modes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def demo(args: argparse.Namespace) -> int:
    import asyncio

    from services.embedded.demo import run_demo

    asyncio.run(run_demo(sys.stdout, customers=args.customers, days=args.days, seed=args.seed))
    return 0


def run_embedded(args: argparse.Namespace) -> int:
    import logging

    import uvicorn
    from prometheus_client import CollectorRegistry

    from services.embedded.node import EmbeddedNode
    from services.ingest.app import create_app
    from services.ingest.auth import KeyFileError
    from services.notifier.app import providers_from
    from services.notifier.metrics import NotifierMetrics
    from services.notifier.policy import PlaybookError, load_playbooks
    from services.notifier.providers import ProviderConfigError
    from services.runtime.settings import SettingsError, load_settings
    from services.tagger.engine import SystemClock

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
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
    except (SettingsError, KeyFileError, PlaybookError, ProviderConfigError, OSError) as error:
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
