"""The one settings loader: typed, frozen, from TAGSTREAM_* environment variables.

Nested sections use a double underscore: TAGSTREAM_KAFKA__BOOTSTRAP_SERVERS=broker:9092,
TAGSTREAM_TAGGER__STORE=memory. Invalid values fail at start-up with the variable named.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.topics import TopicNames


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    partitions: int = Field(default=12, ge=1, description="partitions of the topics tagstream creates")
    replication_factor: int = Field(default=3, ge=1)

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism, sasl_username and sasl_password"
            )
        return self


class RedisSettings(_Section):
    url: str = Field(default="redis://127.0.0.1:6379/0", pattern=r"^rediss?://")
    password: SecretStr | None = None
    ssl_ca_certs: Path | None = Field(default=None, description="CA bundle for rediss:// URLs")
    key_prefix: str = "ts:"
    history_limit: int = Field(default=200, ge=1)


class TaggerSettings(_Section):
    app_id: str = "tagstream-tagger"
    store: Literal["memory", "rocksdb"] = "rocksdb"
    datadir: Path = Path("/var/lib/tagstream")
    rocksdb_block_cache_mb: int = Field(default=64, ge=8, description="per partition; faust's default is 2 GiB")
    web_host: str = "0.0.0.0"
    web_port: int = Field(default=6066, ge=1, le=65535)
    standby_replicas: int = Field(default=1, ge=0)
    batch_size: int = Field(default=500, ge=1, description="events taken per batch")
    batch_within_s: float = Field(default=0.05, gt=0)
    timer_interval_s: float = Field(default=0.5, gt=0)
    horizon_days: int = Field(default=400, ge=1, le=3650)
    projector: bool = Field(default=True, description="also maintain the Redis read model from tag changes")
    producer_request_timeout_s: float = Field(default=30.0, gt=0)
    session_timeout_s: float = Field(
        default=30.0, gt=0, description="a worker that stops heartbeating loses its partitions after this"
    )


class NotifierSettings(_Section):
    """The notifier (docs/notifier.md). A provider without a URL is the `log` provider (local use)."""

    playbooks_file: Path = Path("/etc/tagstream/playbooks.yaml")
    reload_interval_s: float = Field(default=5.0, gt=0, description="how often the playbooks file is checked")
    group_id: str = "tagstream-notifier"
    web_host: str = "0.0.0.0"
    web_port: int = Field(default=8081, ge=1, le=65535)
    default_timezone: str = Field(default="UTC", description="IANA zone for customers without one")
    quiet_hours: str | None = Field(default="21:00-08:00", description="local time window; 'off' for none")
    quiet_channels: tuple[Literal["push", "sms", "coupon"], ...] = ("push", "sms")
    caps: tuple[str, ...] = Field(
        default=("sms:1/1d", "push:3/7d"), description="global caps, channel:limit/window, e.g. sms:1/1d"
    )
    coupon_period: str = Field(default="30d", pattern=r"^\d+[smhdw]$", description="one coupon kind per customer per")
    lease_s: float = Field(default=30.0, gt=0, description="a claimed step is hidden from other replicas this long")
    poll_interval_s: float = Field(default=0.2, gt=0)
    batch: int = Field(default=100, ge=1, description="steps claimed per round")
    concurrency: int = Field(default=12, ge=1, le=15, description="steps sent at once (6 Redis connections each)")
    max_claims: int = Field(default=5, ge=1)
    keep_decisions_days: int = Field(default=90, ge=1)
    push_url: str | None = None
    sms_url: str | None = None
    coupon_url: str | None = None
    push_auth: SecretStr | None = Field(default=None, description="Authorization header value")
    sms_auth: SecretStr | None = None
    coupon_auth: SecretStr | None = None
    provider_timeout_s: float = Field(default=5.0, gt=0)
    provider_attempts: int = Field(default=4, ge=1)
    backoff_base_s: float = Field(default=0.2, ge=0)
    backoff_cap_s: float = Field(default=10.0, ge=0)
    breaker_threshold: int = Field(default=5, ge=1)
    breaker_reset_s: float = Field(default=30.0, gt=0)

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as 'Asia/Shanghai'") from None
        return value

    @field_validator("quiet_hours", mode="before")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if isinstance(value, str) and value.strip().lower() in ("", "none", "off", "null"):
            return None
        if value is not None and not re.fullmatch(r"\d{1,2}:\d{2}-\d{1,2}:\d{2}", value.strip()):
            raise ValueError(f"quiet_hours must look like 21:00-08:00, got {value!r}")
        return value

    @field_validator("caps")
    @classmethod
    def _caps(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cap in value:
            if not re.fullmatch(r"(push|sms|coupon):\d+/\d+[smhdw]", cap):
                raise ValueError(f"a cap looks like sms:1/1d (channel:limit/window), got {cap!r}")
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TAGSTREAM_", env_nested_delimiter="__", frozen=True, extra="forbid")

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    topics: TopicNames = TopicNames()
    tagger: TaggerSettings = TaggerSettings()
    notifier: NotifierSettings = NotifierSettings()
