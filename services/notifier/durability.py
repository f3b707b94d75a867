"""The notifier's check that Redis persists: its pending steps, consent and profiles live only there.

Pending (delayed) steps cannot be rebuilt from Kafka (docs/notifier.md says why), so the notifier
requires a Redis that writes an append-only file fsynced at least every second, and refuses to
start on one that does not, unless told to accept the loss (`allow_volatile_redis`).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

_DURABLE_FSYNC = ("everysec", "always")


class VolatileRedis(RuntimeError):
    """Redis does not persist what the notifier keeps there; the message says what to change."""


async def require_durable(redis: Redis) -> str:
    """Return how Redis persists (for the log), or raise VolatileRedis.

    `CONFIG GET` tells the AOF setting and its fsync policy; managed services often disable CONFIG,
    and then `INFO persistence` still says whether AOF is on (its fsync policy is not shown there).
    """
    try:
        appendonly = await _config(redis, "appendonly")
        fsync = await _config(redis, "appendfsync")
    except ResponseError:
        info = await redis.info("persistence")
        if int(info.get("aof_enabled", 0)) != 1:
            raise VolatileRedis(_refusal("INFO persistence says aof_enabled:0")) from None
        return "AOF on (INFO persistence; CONFIG is disabled, so its fsync policy could not be checked)"
    if appendonly != "yes":
        raise VolatileRedis(_refusal(f"appendonly is {appendonly!r}"))
    if fsync not in _DURABLE_FSYNC:
        raise VolatileRedis(_refusal(f"appendfsync is {fsync!r}, which leaves the flush to the OS (up to ~30 s)"))
    return f"AOF on, appendfsync {fsync}"


async def _config(redis: Redis, name: str) -> str:
    found: dict[Any, Any] = await redis.config_get(name)
    value = found.get(name, found.get(name.encode(), ""))
    return value.decode() if isinstance(value, bytes) else str(value)


def _refusal(found: str) -> str:
    return (
        f"Redis does not persist the notifier's pending steps, consent and profiles: {found}. Run it with "
        "`appendonly yes` and `appendfsync everysec` (or `always`), or set "
        "TAGSTREAM_NOTIFIER__ALLOW_VOLATILE_REDIS=true to accept that a Redis restart loses them (docs/notifier.md)"
    )
