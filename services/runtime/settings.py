"""The one settings loader: typed, frozen, from TAGSTREAM_* environment variables.

Nested sections use a double underscore: TAGSTREAM_KAFKA__BOOTSTRAP_SERVERS=broker:9092,
TAGSTREAM_TAGGER__STORE=memory. Invalid values fail at start-up with the variable named
(`load_settings`), never with the value: a value may be a secret.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as _SourceError

from schemas.common import Text
from schemas.durations import parse_duration
from schemas.excerpt import excerpt
from schemas.limits import MAX_SEND_RATE
from schemas.topics import TopicNames


def _at_least(length: int) -> AfterValidator:
    def check(value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < length:
            raise ValueError(f"must be at least {length} characters long")
        return value

    return AfterValidator(check)


Secret16 = Annotated[SecretStr, _at_least(16)]
Secret32 = Annotated[SecretStr, _at_least(32)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ShopSettings(_Section):
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
        return _known_zone(value)

    @property
    def future_skew(self) -> timedelta:
        return duration(self.max_future_skew)


class KafkaSettings(_Section):
    bootstrap_servers: str = Field(default="127.0.0.1:9092", description="comma-separated host:port list")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="how clients connect to the brokers"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="needed with SASL_*"
    )
    sasl_username: str | None = Field(default=None, description="needed with SASL_*")
    sasl_password: SecretStr | None = Field(default=None, description="needed with SASL_*")
    ssl_cafile: Path | None = Field(default=None, description="CA bundle for SSL / SASL_SSL")
    ssl_certfile: Path | None = Field(default=None, description="client certificate (mutual TLS)")
    ssl_keyfile: Path | None = Field(default=None, description="client key (mutual TLS)")
    partitions: int = Field(default=12, ge=1, description="partitions of the topics tagstream creates")
    replication_factor: int = Field(default=3, ge=1, description="replicas of the topics tagstream creates")

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
    url: str = Field(
        default="redis://127.0.0.1:6379/0",
        pattern=r"^rediss?://",
        description="redis:// or rediss:// (TLS), with the database number",
    )
    password: SecretStr | None = Field(default=None, description="AUTH password (or put it in the URL)")
    ssl_ca_certs: Path | None = Field(default=None, description="CA bundle for rediss:// URLs")
    key_prefix: str = Field(default="ts:", description="prefix of every key tagstream writes")
    history_limit: int = Field(default=200, ge=1, description="tag changes kept per customer in the read model")


class TaggerSettings(_Section):
    app_id: str = Field(default="tagstream-tagger", description="consumer group and changelog topic prefix")
    store: Literal["memory", "rocksdb"] = Field(default="rocksdb", description="where customer state is kept")
    datadir: Path = Field(default=Path("/var/lib/tagstream"), description="RocksDB files (a volume per replica)")
    rocksdb_block_cache_mb: int = Field(default=64, ge=8, description="per partition; faust's default is 2 GiB")
    web_host: str = Field(
        default="127.0.0.1",
        description="listen address of /healthz /readyz /metrics (the image and the chart set 0.0.0.0)",
    )
    web_port: int = Field(default=6066, ge=1, le=65535, description="port of /healthz /readyz /metrics")
    standby_replicas: int = Field(default=1, ge=0, description="warm copies of each partition's table on other workers")
    batch_size: int = Field(
        default=500,
        ge=1,
        le=100_000,
        description="records processed per batch (one checkpoint: changes, then states and changelog, then "
        "offsets); a batch holds whole fetches, so one fetch larger than this is one batch",
    )
    stream_buffer: int = Field(
        default=16384,
        ge=1,
        le=1_000_000,
        description="source records fetched ahead of the processor (~1.5 KB each; more keeps a busy worker fed), "
        "and faust's stream_buffer_maxsize for the changelog records of recovery and standbys; a rebalance "
        "drops the queued ones (not committed: read again by the partition's next owner)",
    )
    direct_delivery: bool = Field(
        default=True,
        description="hand the table's changelog records (recovery, standbys) to faust's conductor without its "
        "four tasks per message when nothing can block the hand-over (services/tagger/faust_compat.py); false: "
        "through faust's `wait_first`, as in faust's own loop. Source records always go over in batches",
    )
    batch_within_s: float = Field(
        default=0.01, gt=0, le=10, description="longest wait to fill a batch (bounds the latency added at low rates)"
    )
    timer_interval_s: float = Field(default=0.5, gt=0, description="how often due time-based re-evaluations are sent")
    horizon_days: int = Field(
        default=400, ge=1, le=3650, description="days of history kept per customer; windows may not reach further"
    )
    history_age: str | None = Field(
        default=None,
        pattern=r"^\d{1,6}[smhdw]$",
        description="an event dated further back than this when it arrives is history: its tag changes carry "
        "source import, which playbooks ignore; default: notifier.max_trigger_age (also the embedded node's)",
    )
    projector: bool = Field(default=True, description="also maintain the Redis read model from tag changes")
    producer_request_timeout_s: float = Field(
        default=30.0, gt=0, description="Kafka acknowledgement wait before a send fails"
    )
    session_timeout_s: float = Field(
        default=30.0, gt=0, le=300, description="a worker that stops heartbeating loses its partitions after this"
    )
    group_instance_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="static group membership: a stable name per worker (the chart uses the pod name), so a "
        "restarted worker takes its partitions back at once instead of after session_timeout_s",
    )
    rebalance_stuck_s: float = Field(
        default=180.0,
        gt=0,
        le=3600,
        description="/healthz fails (so the liveness probe restarts the worker) once a rebalance lasts longer",
    )
    revoke_wait_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="on a rebalance or stop, longest wait for the batch in flight; then it is cancelled, its "
        "positions neither stored nor committed (read again by the partition's next owner)",
    )
    shutdown_timeout_s: float = Field(
        default=25.0, gt=0, le=600, description="after SIGTERM the worker exits (code 1) if still stopping by then"
    )
    backfill_pause_s: float = Field(
        default=0.0,
        ge=0,
        le=60,
        description="fault injection, 0 in production: a pause after each chunk of a definitions backfill, the "
        "worker's events held meanwhile; the fault tests set it to SIGKILL a worker in the middle of one",
    )


class NotifierSettings(_Section):
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
        return None if value is None else _known_zone(value)

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


class SyncSettings(_Section):
    """The tag sync sink (`tagstream sync`, docs/sync.md): keeps one external system's tags in step."""

    adapter: Literal["webhook", "wecom"] = Field(
        default="webhook", description="webhook: signed batches of changes; wecom: WeCom corp tags on external contacts"
    )
    group_id: str = Field(default="tagstream-sync", description="Kafka consumer group (one per external system)")
    web_host: str = Field(
        default="127.0.0.1",
        description="listen address of /healthz /readyz /metrics (the image and the chart set 0.0.0.0)",
    )
    web_port: int = Field(default=8082, ge=1, le=65535, description="port of /healthz /readyz /metrics")
    batch: int = Field(default=100, ge=1, le=1000, description="tag changes per webhook request, and per read")
    attempts: int = Field(
        default=6,
        ge=1,
        le=20,
        description="requests per batch (rate limits, errors) before it is left uncommitted and tried again later",
    )
    backoff_base_s: float = Field(default=0.5, ge=0, le=60, description="first retry delay (exponential, full jitter)")
    backoff_cap_s: float = Field(default=30.0, ge=0, le=600, description="longest retry delay")
    retry_pause_s: float = Field(
        default=5.0, gt=0, le=600, description="wait before a batch that used up its attempts is read again"
    )
    timeout_s: float = Field(default=10.0, gt=0, le=120, description="per external request")
    webhook_url: str | None = Field(default=None, pattern=r"^https?://", description="the receiver of batches")
    webhook_auth: SecretStr | None = Field(default=None, description="Authorization header value")
    signing_secret: Secret32 | None = Field(
        default=None, description="HMAC-SHA256 key signing each webhook request (Tagstream-Signature)"
    )
    signing_secret_file: Path | None = Field(default=None, description="a mounted Secret holding signing_secret")
    ca_file: Path | None = Field(default=None, description="PEM CA bundle for https URLs instead of the system CAs")
    wecom_base_url: str = Field(
        default="https://qyapi.weixin.qq.com", pattern=r"^https?://", description="WeCom's API host"
    )
    wecom_corp_id: str | None = Field(
        default=None, max_length=64, pattern=r"^[A-Za-z0-9]+$", description="the corp's corpid"
    )
    wecom_secret: SecretStr | None = Field(
        default=None, description="the customer-contact (客户联系) secret, which may manage corp tags"
    )
    wecom_secret_file: Path | None = Field(default=None, description="a mounted Secret holding wecom_secret")
    wecom_agent_id: int | None = Field(
        default=None, ge=1, le=2**31 - 1, description="agentid sent when creating corp tags (self-built apps)"
    )

    @model_validator(mode="after")
    def _complete(self) -> SyncSettings:
        if self.signing_secret is not None and self.signing_secret_file is not None:
            raise ValueError("set signing_secret or signing_secret_file, not both")
        if self.wecom_secret is not None and self.wecom_secret_file is not None:
            raise ValueError("set wecom_secret or wecom_secret_file, not both")
        unsigned = self.signing_secret is None and self.signing_secret_file is None
        if self.adapter == "webhook" and self.webhook_url is not None and unsigned:
            raise ValueError("webhook_url is set: every request is signed, so set signing_secret or its file")
        no_secret = self.wecom_secret is None and self.wecom_secret_file is None
        if self.adapter == "wecom" and self.wecom_corp_id is not None and no_secret:
            raise ValueError("wecom_corp_id is set: set wecom_secret or wecom_secret_file too")
        return self

    def configured(self) -> str | None:
        """What is missing for `tagstream sync` to run with the chosen adapter, or None."""
        if self.adapter == "webhook" and self.webhook_url is None:
            return "TAGSTREAM_SYNC__WEBHOOK_URL is not set (the webhook adapter needs a receiver)"
        if self.adapter == "wecom" and self.wecom_corp_id is None:
            return "TAGSTREAM_SYNC__WECOM_CORP_ID is not set (the wecom adapter needs the corp and its secret)"
        return None


class ApiKey(_Section):
    """One API key: whoever presents `key` acts as `name` with `role` (admin ⊇ operator ⊇ viewer)."""

    key: Secret16
    role: Literal["viewer", "operator", "admin"]
    # Text, as a manual tag's actor is: a name the contracts would refuse made every command of that key a 500
    name: Text = Field(max_length=128, description="who acts: recorded as the actor of manual tags")


class IngestSettings(_Section):
    host: str = Field(default="127.0.0.1", description="listen address (the image and the chart set 0.0.0.0)")
    port: int = Field(default=8080, ge=1, le=65535, description="HTTP port")
    max_batch: int = Field(default=1000, ge=1, description="events in one POST /v1/events")
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="largest request body on any route; a larger one gets 413 before it is read or authenticated",
    )
    producer_buffer_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024, description="bytes sent but not yet acknowledged by Kafka; beyond: 429"
    )
    send_timeout_s: float = Field(default=10.0, gt=0, description="Kafka acknowledgement wait before a 503")
    linger_ms: int = Field(default=0, ge=0, description="a request is a batch already: waiting only adds latency")
    api_keys: list[ApiKey] = Field(default_factory=list, description="JSON list of {key, role, name}")
    api_keys_file: Path | None = Field(
        default=None, description="a mounted Secret: a JSON list of {key, role, name}, read at start"
    )
    audience_ttl_s: int = Field(default=600, ge=10, description="how long an audience cursor stays valid")
    audience_page_max: int = Field(default=10_000, ge=1, description="largest page of customer ids")
    lookup_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="GET /v1/customers/{id}: wait this long for the tagger's aggregates"
    )
    preview_timeout_s: float = Field(
        default=120.0,
        gt=0,
        le=900,
        description="a definition preview waits this long for every partition's answer, then 504 naming those missing",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TAGSTREAM_", env_nested_delimiter="__", frozen=True, extra="forbid")

    shop: ShopSettings = ShopSettings()
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    topics: TopicNames = TopicNames()
    tagger: TaggerSettings = TaggerSettings()
    notifier: NotifierSettings = NotifierSettings()
    ingest: IngestSettings = IngestSettings()
    sync: SyncSettings = SyncSettings()

    @property
    def history_age(self) -> timedelta:
        """tagger.history_age, or the notifier's max_trigger_age: a change older than that sends nothing
        anyway, so an event that old is history whichever service looks at it."""
        return duration(self.tagger.history_age or self.notifier.max_trigger_age)


_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def duration(text: str) -> timedelta:
    """A settings duration (`5m`, `1d`: digits and one unit, as the fields' patterns require)."""
    return timedelta(seconds=int(text[:-1]) * _UNIT_SECONDS[text[-1]])


class SettingsError(ValueError):
    """Invalid settings: each problem with its TAGSTREAM_* variable and what is wrong, never the value."""


def load_settings() -> Settings:
    """The settings from the environment; raises SettingsError.

    pydantic's own message quotes every rejected input (`input_value=...`), which for an API key that
    is too short, or for a whole section whose model check failed, is the secret itself: this one
    names the variable and the rule only."""
    try:
        return Settings()
    except ValidationError as error:
        problems = [_problem(problem) for problem in error.errors(include_input=False)]
        raise SettingsError("invalid settings:\n" + "\n".join(problems)) from None
    except _SourceError as error:  # a variable that should hold JSON does not: its name, not its text
        found = re.search(r'field "(\w+)"', str(error))
        section = found.group(1).upper() if found else "?"
        raise SettingsError(
            f"invalid settings:\n  TAGSTREAM_{section} or one of its TAGSTREAM_{section}__* variables: not valid JSON"
        ) from None


def _problem(problem: Any) -> str:
    loc = [str(part) for part in problem["loc"]]
    fields = [part for part in loc if not part.isdigit()]
    variable = "TAGSTREAM_" + "__".join(fields[:2]).upper()
    inner = ".".join(f"[{part}]" if part.isdigit() else part for part in loc[2:] if part)
    where = variable + (f" {inner}" if inner else "")
    return f"  {where}: {problem['msg'].removeprefix('Value error, ')}"


def _known_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value[:64]!r}; use an IANA name such as 'Asia/Shanghai'") from None
    return value
