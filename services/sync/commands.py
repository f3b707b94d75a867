"""`tagstream sync` and `tagstream sync resync`."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.runtime.settings import Settings
    from services.sync.resync import ResyncReport


def sync(args: argparse.Namespace) -> int:
    import logging

    from services.runtime.consumers import run_until_signalled
    from services.runtime.logs import hold_back_repeats
    from services.runtime.settings import SettingsError, load_settings
    from services.runtime.webhooks import ProviderConfigError
    from services.sync.app import build_app

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    hold_back_repeats()
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"tagstream sync: {error}", file=sys.stderr)
        return 2
    missing = settings.sync.configured()
    if missing is not None:
        print(f"tagstream sync: {missing}", file=sys.stderr)
        return 2
    app = build_app(settings)

    try:
        run_until_signalled(app)
    except ProviderConfigError as error:
        print(f"tagstream sync: {error}", file=sys.stderr)
        return 2
    return 0


def resync(args: argparse.Namespace) -> int:
    """Exit 0 when every customer was synced, 1 when the external system refused some, 2 unusable."""
    import asyncio

    from services.runtime.settings import SettingsError, load_settings
    from services.runtime.webhooks import ProviderConfigError
    from services.sync.ports import Unavailable
    from services.sync.resync import ResyncRefused

    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"tagstream sync resync: {error}", file=sys.stderr)
        return 2
    missing = settings.sync.configured()
    if missing is not None:
        print(f"tagstream sync resync: {missing}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(_resync(settings))
    except (ProviderConfigError, ResyncRefused, Unavailable) as error:
        print(f"tagstream sync resync: {error}", file=sys.stderr)
        return 2
    print(
        f"resynced {report.customers} customers: {report.rejected} refused, "
        f"{report.no_contact} changes of customers without an external contact"
    )
    for reason in report.first_reasons:
        print(f"  refused {reason}", file=sys.stderr)
    return 1 if report.rejected else 0


async def _resync(settings: Settings) -> ResyncReport:
    import asyncio

    from prometheus_client import CollectorRegistry

    from services.runtime.clock import SystemClock
    from services.runtime.customers import RedisCustomers
    from services.runtime.definitions_feed import DefinitionsFeed
    from services.runtime.redis import redis_client
    from services.sync.adapters import build_adapter
    from services.sync.metrics import SyncMetrics
    from services.sync.resync import resync
    from services.sync.sink import RedisAppliedSeqs

    feed = DefinitionsFeed(settings.kafka, settings.topics.tag_definitions, lambda groups: None)
    reading = asyncio.create_task(feed.run())
    ready = asyncio.create_task(feed.ready.wait())
    await asyncio.wait({reading, ready}, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        ready.cancel()
        reading.result()
    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)
    redis = redis_client(settings.redis)
    prefix = settings.redis.key_prefix
    metrics = SyncMetrics(CollectorRegistry(), settings.sync.adapter)
    adapter = build_adapter(settings.sync, RedisCustomers(redis, prefix=prefix), SystemClock(), metrics)
    try:
        return await resync(
            redis,
            key_prefix=prefix,
            groups=feed.groups,
            adapter=adapter,
            applied=RedisAppliedSeqs(redis, key_prefix=prefix, sink=settings.sync.group_id),
            batch=settings.sync.batch,
        )
    finally:
        await adapter.close()
        await redis.aclose()
