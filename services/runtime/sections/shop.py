"""`TAGSTREAM_SHOP__*`: the shop's zone, currency and clock tolerance."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, field_validator

from services.runtime.sections.common import Section, duration, known_zone


class ShopSettings(Section):
    """The shop itself: where its days start, the one currency it sells in, how far ahead a clock may run.

    Read by every service and command alike (ingest validation, the tagger's engine, the notifier, replay
    and the embedded node), so that a day, a window and an amount mean the same thing everywhere.
    """

    timezone: str = Field(
        default="UTC",
        description="IANA zone whose local days are the shop's days (day buckets, windows, days_since_*, "
        "'today'), e.g. Asia/Shanghai",
    )
    currency: str = Field(
        default="CNY", pattern=r"^[A-Z]{3}$", description="ISO 4217 code; orders in another currency are refused"
    )
    max_future_skew: str = Field(
        default="5m",
        pattern=r"^\d{1,6}[smhdw]$",
        description="events dated further ahead of the wall clock than this are refused (422, or the DLQ)",
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return known_zone(value)

    @property
    def future_skew(self) -> timedelta:
        return duration(self.max_future_skew)
