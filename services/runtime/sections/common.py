"""What every settings section shares: frozen and closed to unknown names, secrets with a floor, durations, zones."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, SecretStr


def _at_least(length: int) -> AfterValidator:
    def check(value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < length:
            raise ValueError(f"must be at least {length} characters long")
        return value

    return AfterValidator(check)


Secret16 = Annotated[SecretStr, _at_least(16)]
Secret32 = Annotated[SecretStr, _at_least(32)]


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def duration(text: str) -> timedelta:
    """A settings duration (`5m`, `1d`: digits and one unit, as the fields' patterns require)."""
    return timedelta(seconds=int(text[:-1]) * _UNIT_SECONDS[text[-1]])


def known_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value[:64]!r}; use an IANA name such as 'Asia/Shanghai'") from None
    return value
