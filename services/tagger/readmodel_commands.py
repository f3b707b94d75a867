"""`tagstream readmodel status` and `tagstream readmodel rebuild`: the operator's side of marker.py."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from services.runtime.readmodel import ReadModelStatus
from services.runtime.settings import Settings, SettingsError, load_settings

_PROGRESS_EVERY_S = 1.0


def status(args: argparse.Namespace) -> int:
    settings = _settings("status")
    if settings is None:
        return 2
    current = asyncio.run(_status(settings))
    print(describe(current))
    return 0 if current.ready else 1


def rebuild(args: argparse.Namespace) -> int:
    """Reset the projection (unless --keep) and apply tag-changes and events from the beginning until ready."""
    settings = _settings("rebuild")
    if settings is None:
        return 2
    try:
        asyncio.run(asyncio.wait_for(_rebuild(settings, keep=args.keep), timeout=args.timeout))
    except TimeoutError:
        print(f"tagstream readmodel rebuild: not ready after {args.timeout:.0f}s; run it again", file=sys.stderr)
        return 1
    return 0


def describe(status: ReadModelStatus) -> str:
    if status.ready:
        return (
            f"ready (epoch {status.epoch}, built {status.ready_at:%Y-%m-%d %H:%M:%S} UTC)"
            if status.ready_at
            else "ready"
        )
    return f"{status.state}: {status.reason}"


async def _status(settings: Settings) -> ReadModelStatus:
    from services.runtime.readmodel import ReadModel
    from services.runtime.redis import redis_client

    redis = redis_client(settings.redis)
    try:
        return await ReadModel(redis, key_prefix=settings.redis.key_prefix).status()
    finally:
        await redis.aclose()


async def _rebuild(settings: Settings, *, keep: bool) -> None:
    from prometheus_client import CollectorRegistry

    from services.runtime.clock import SystemClock
    from services.runtime.redis import redis_client
    from services.tagger.marker import Marker
    from services.tagger.metrics import TaggerMetrics
    from services.tagger.projection import Projection

    clock = SystemClock()
    redis = redis_client(settings.redis)
    started = time.monotonic()
    last_print = 0.0

    def progress(status: ReadModelStatus) -> None:
        nonlocal last_print
        now = time.monotonic()
        if status.state == "rebuilding" and now - last_print >= _PROGRESS_EVERY_S:
            last_print = now
            done = status.total - status.remaining
            share = done / status.total if status.total else 1.0
            print(f"rebuilding: {done:,} of {status.total:,} records ({share:.0%})", flush=True)

    try:
        if not keep:
            deleted = await Marker(redis, key_prefix=settings.redis.key_prefix).reset(clock.now())
            print(f"reset: deleted {deleted:,} keys of the projection; readers answer 503 until it is rebuilt")
        projection = Projection(
            settings, redis, clock, TaggerMetrics(CollectorRegistry()), group_id=None, on_progress=progress
        )
        await projection.run(until_ready=True)
        final = await Marker(redis, key_prefix=settings.redis.key_prefix).status()
        print(f"{describe(final)}: {final.total:,} records in {time.monotonic() - started:.1f}s")
    finally:
        await redis.aclose()


def _settings(command: str) -> Settings | None:
    try:
        return load_settings()
    except SettingsError as error:
        print(f"tagstream readmodel {command}: {error}", file=sys.stderr)
        return None
