"""`TAGSTREAM_NOTIFIER__*`: the notifier, its providers and campaigns (docs/notifier.md)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from schemas.durations import parse_duration
from schemas.excerpt import excerpt
from schemas.limits import MAX_SEND_RATE
from services.runtime.sections.common import Secret32, Section, known_zone


class NotifierSettings(Section):
    """The notifier (docs/notifier.md). A provider without a URL is the `log` provider (local use)."""

    playbooks_file: Path = Field(default=Path("/etc/tagstream/playbooks.yaml"), description="YAML, reloaded on change")
    reload_interval_s: float = Field(default=5.0, gt=0, description="how often the playbooks file is checked")
    group_id: str = Field(default="tagstream-notifier", description="Kafka consumer group of the replicas")
    allow_volatile_redis: bool = Field(
        default=False,
        description="start on a Redis without AOF persistence, accepting that its restart loses pending steps, "
        "consent and profiles (docs/notifier.md)",
    )
    web_host: str = Field(
        default="127.0.0.1",
        description="listen address of /healthz /readyz /metrics (the image and the chart set 0.0.0.0)",
    )
    web_port: int = Field(default=8081, ge=1, le=65535, description="port of /healthz /readyz /metrics")
    default_timezone: str | None = Field(
        default=None, description="IANA zone for customers without one; unset: the shop's (TAGSTREAM_SHOP__TIMEZONE)"
    )
    quiet_hours: str | None = Field(default="21:00-08:00", description="local time window; 'off' for none")
    quiet_channels: tuple[Literal["push", "sms", "coupon", "alert"], ...] = Field(
        default=("push", "sms"),
        description="channels held during quiet hours (a playbook's `quiet_hours: true|false` overrides it)",
    )
    caps: tuple[str, ...] = Field(
        default=("sms:1/1d", "push:3/7d"), description="global caps, channel:limit/window, e.g. sms:1/1d"
    )
    coupon_period: str = Field(default="30d", pattern=r"^\d+[smhdw]$", description="one coupon kind per customer per")
    campaign_rates: tuple[str, ...] = Field(
        default=("push:200", "sms:50", "coupon:200"),
        description="campaign pace, channel:steps per second (fanned out at most this fast, all campaigns together)",
    )
    campaign_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="how often campaigns are started and fanned out"
    )
    max_trigger_age: str = Field(
        default="1d", pattern=r"^\d+[smhdw]$", description="older tag changes (history, long outages) send nothing"
    )
    lease_s: float = Field(default=30.0, gt=0, description="a claimed step is hidden from other replicas this long")
    poll_interval_s: float = Field(default=0.2, gt=0, description="how often due steps are claimed")
    batch: int = Field(default=100, ge=1, description="steps claimed per round")
    concurrency: int = Field(default=12, ge=1, le=15, description="steps sent at once (6 Redis connections each)")
    max_claims: int = Field(default=5, ge=1, description="a step claimed this often without finishing goes to the DLQ")
    keep_decisions_days: int = Field(
        default=90, ge=1, description="how long a decided step is remembered for deduplication"
    )
    push_url: str | None = Field(default=None, description="push webhook; none: the log provider")
    sms_url: str | None = Field(default=None, description="SMS webhook; none: the log provider")
    coupon_url: str | None = Field(default=None, description="coupon webhook; none: the log provider")
    alert_url: str | None = Field(
        default=None,
        description="sales alerts: a WeCom group robot's webhook (or one speaking its text message); "
        "none: the log provider",
    )
    push_auth: SecretStr | None = Field(default=None, description="Authorization header value")
    sms_auth: SecretStr | None = Field(default=None, description="Authorization header value")
    coupon_auth: SecretStr | None = Field(default=None, description="Authorization header value")
    alert_auth: SecretStr | None = Field(default=None, description="Authorization header value")
    signing_secret: Secret32 | None = Field(
        default=None,
        description="HMAC-SHA256 key signing every provider request (Tagstream-Signature, docs/notifier.md); "
        "needed once a provider URL is set",
    )
    signing_secret_file: Path | None = Field(
        default=None, description="a mounted Secret holding signing_secret instead (read at start)"
    )
    provider_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle trusted for https provider URLs instead of the system CAs"
    )
    provider_timeout_s: float = Field(default=5.0, gt=0, description="per provider request")
    provider_attempts: int = Field(default=4, ge=1, description="requests per send before the DLQ")
    backoff_base_s: float = Field(default=0.2, ge=0, description="first retry delay (exponential, full jitter)")
    backoff_cap_s: float = Field(default=10.0, ge=0, description="longest retry delay")
    breaker_threshold: int = Field(
        default=4,
        ge=1,
        description="consecutive failures that open a channel's circuit; at most provider_attempts, so that one "
        "step's retries in an outage open it (deferred) rather than fail the step",
    )
    breaker_reset_s: float = Field(
        default=30.0, gt=0, description="how long an open circuit waits before a trial request"
    )

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else known_zone(value)

    @model_validator(mode="after")
    def _signed(self) -> NotifierSettings:
        if self.signing_secret is not None and self.signing_secret_file is not None:
            raise ValueError("set signing_secret or signing_secret_file, not both")
        urls = [f"{channel}_url" for channel in ("push", "sms", "coupon", "alert") if getattr(self, f"{channel}_url")]
        if urls and self.signing_secret is None and self.signing_secret_file is None:
            raise ValueError(
                f"{urls[0]} is set: every provider request is signed, so set signing_secret or signing_secret_file"
            )
        return self

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
            if not re.fullmatch(r"(push|sms|coupon|alert):\d{1,9}/\d+[smhdw]", cap):
                raise ValueError(f"a cap looks like sms:1/1d (channel:limit/window), got {excerpt(cap)}")
            parse_duration(cap.rsplit("/", 1)[1])
        return value

    @field_validator("campaign_rates")
    @classmethod
    def _rates(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for rate in value:
            match = re.fullmatch(r"(push|sms|coupon|alert):(\d{1,6})", rate)
            if match is None or not 0 < int(match.group(2)) <= MAX_SEND_RATE:
                raise ValueError(
                    f"a campaign rate looks like sms:50 (channel:steps per second, 1 to {MAX_SEND_RATE}), "
                    f"got {excerpt(rate)}"
                )
        return value

    @field_validator("coupon_period", "max_trigger_age")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)  # at most MAX_DURATION: a longer one overflows the instants it is added to
        return value
