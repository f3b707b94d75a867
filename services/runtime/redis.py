"""The one Redis client factory."""

from __future__ import annotations

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
