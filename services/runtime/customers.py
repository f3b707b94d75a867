"""Customer contact data the notifier needs and the ingest API sets: consent (opt-outs) and profiles.

Both live in Redis next to the read model, under the customer's hash tag, so the ingest API's write
is honoured by the notifier's very next decision (no topic in between). `MemoryCustomers` is the
same store in process, for the embedded mode and unit tests.

Key layout (prefix `ts:` by default):

    ts:c:{<customer>}:optout     set     channels the customer opted out of ("*" = every channel)
    ts:c:{<customer>}:profile    hash    name, phone, email, timezone, locale, owner, external_userid,
                                         follow_user (personal data: never log it)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator
from redis.asyncio import Redis

from schemas.excerpt import excerpt

Channel = Literal["push", "sms", "coupon", "alert"]
CHANNELS: tuple[Channel, ...] = ("push", "sms", "coupon", "alert")
ALL_CHANNELS = "*"
WECOM_USERID = r"^[A-Za-z0-9_.@-]{1,64}$"
"""A WeCom member's userid: letters, digits and _ . @ -, at most 64 (WeCom's own rule for account ids)."""


class Profile(BaseModel):
    """What a message template may use. Every field is optional; personal data is never logged."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=32, pattern=r"^\+?[0-9 ()-]{3,31}$")
    email: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    timezone: str | None = Field(
        default=None, max_length=64, description="IANA zone, e.g. Asia/Shanghai; quiet hours use it"
    )
    locale: str | None = Field(default=None, max_length=35)
    owner: str | None = Field(
        default=None,
        pattern=WECOM_USERID,
        description="the assigned salesperson's WeCom userid: sales alerts mention them, and the WeCom tag sync "
        "marks tags as them unless follow_user is set",
    )
    external_userid: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$", description="the customer as a WeCom external contact"
    )
    follow_user: str | None = Field(
        default=None,
        pattern=WECOM_USERID,
        description="the WeCom member whose contact the customer is, when not the owner (tag sync)",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {excerpt(value)}; use an IANA name such as 'Asia/Shanghai'") from None
        return value

    def __repr__(self) -> str:  # keeps phone numbers and e-mails out of logs and tracebacks
        return f"Profile(fields={sorted(self.model_dump(exclude_none=True))})"

    __str__ = __repr__

    @property
    def wecom_member(self) -> str | None:
        """Whose external contact the customer is in WeCom: follow_user, else the owner."""
        return self.follow_user or self.owner


class CustomerStore(Protocol):
    """Consent and profiles of customers; Redis in services, memory in the embedded mode."""

    async def opt_out(self, customer_id: str, channel: Channel | Literal["*"]) -> None: ...

    async def opt_in(self, customer_id: str, channel: Channel | Literal["*"]) -> None: ...

    async def opted_out(self, customer_id: str) -> frozenset[str]:
        """The channels the customer refuses; "*" among them means every channel."""
        ...

    async def set_profile(self, customer_id: str, profile: Profile) -> None: ...

    async def profile(self, customer_id: str) -> Profile: ...


def allows(opted_out: frozenset[str], channel: str) -> bool:
    """Whether a customer with these opt-outs may be contacted on `channel`."""
    return ALL_CHANNELS not in opted_out and channel not in opted_out


class RedisCustomers:
    def __init__(self, redis: Redis, prefix: str = "ts:") -> None:
        self._redis = redis
        self._prefix = prefix

    def optout_key(self, customer_id: str) -> str:
        return f"{self._prefix}c:{{{customer_id}}}:optout"

    def profile_key(self, customer_id: str) -> str:
        return f"{self._prefix}c:{{{customer_id}}}:profile"

    async def opt_out(self, customer_id: str, channel: Channel | Literal["*"]) -> None:
        await self._redis.sadd(self.optout_key(customer_id), channel)

    async def opt_in(self, customer_id: str, channel: Channel | Literal["*"]) -> None:
        key = self.optout_key(customer_id)
        if channel == ALL_CHANNELS:
            await self._redis.delete(key)
        else:
            await self._redis.srem(key, channel)

    async def opted_out(self, customer_id: str) -> frozenset[str]:
        members = await self._redis.smembers(self.optout_key(customer_id))
        return frozenset(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    async def set_profile(self, customer_id: str, profile: Profile) -> None:
        key = self.profile_key(customer_id)
        fields: dict[str, str] = profile.model_dump(exclude_none=True)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if fields:
                pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
            await pipe.execute()

    async def profile(self, customer_id: str) -> Profile:
        raw: Mapping[bytes | str, bytes | str] = await self._redis.hgetall(self.profile_key(customer_id))
        return Profile.model_validate({_text(k): _text(v) for k, v in raw.items()})


class MemoryCustomers:
    def __init__(self) -> None:
        self._optouts: dict[str, set[str]] = {}
        self._profiles: dict[str, Profile] = {}

    async def opt_out(self, customer_id: str, channel: Channel | Literal["*"]) -> None:
        self._optouts.setdefault(customer_id, set()).add(channel)

    async def opt_in(self, customer_id: str, channel: Channel | Literal["*"]) -> None:
        if channel == ALL_CHANNELS:
            self._optouts.pop(customer_id, None)
        else:
            self._optouts.get(customer_id, set()).discard(channel)

    async def opted_out(self, customer_id: str) -> frozenset[str]:
        return frozenset(self._optouts.get(customer_id, ()))

    async def set_profile(self, customer_id: str, profile: Profile) -> None:
        self._profiles[customer_id] = profile

    async def profile(self, customer_id: str) -> Profile:
        return self._profiles.get(customer_id, Profile())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
