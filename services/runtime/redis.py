"""The one Redis client factory, and what the stores built on it share."""

from __future__ import annotations

from datetime import datetime

from redis.asyncio import Redis

from services.runtime.settings import RedisSettings


def redis_client(settings: RedisSettings) -> Redis:
    """A client for the read model; connects lazily on first use."""
    options: dict[str, object] = {}
    if settings.password is not None:
        options["password"] = settings.password.get_secret_value()
    if settings.url.startswith("rediss://") and settings.ssl_ca_certs is not None:
        options["ssl_ca_certs"] = str(settings.ssl_ca_certs)
    client: Redis = Redis.from_url(settings.url, **options)  # type: ignore[arg-type]
    return client


def to_ms(moment: datetime) -> int:
    """An instant as the stores keep it: epoch milliseconds."""
    return int(moment.timestamp() * 1000)


def as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# KEYS: lock key. ARGV: holder, ttl ms. Re-entrant: a holder renews its own lock (a step re-claimed
# after its replica died takes its lock back at once: only one claim of a step is live at a time).
LEASE = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
