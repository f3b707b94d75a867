"""The one settings loader: typed, frozen, from TAGSTREAM_* environment variables.

Nested sections use a double underscore: TAGSTREAM_KAFKA__BOOTSTRAP_SERVERS=broker:9092,
TAGSTREAM_TAGGER__STORE=memory. Invalid values fail at start-up with the variable named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
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


class ApiKey(_Section):
    """One API key: whoever presents `key` acts as `name` with `role` (admin ⊇ operator ⊇ viewer)."""

    key: SecretStr = Field(min_length=16)
    role: Literal["viewer", "operator", "admin"]
    name: str = Field(min_length=1, max_length=128, description="who acts: recorded as the actor of manual tags")


class IngestSettings(_Section):
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)
    max_batch: int = Field(default=1000, ge=1, description="events in one POST /v1/events")
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="larger request bodies get 413")
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
    audience_page_max: int = Field(default=10_000, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TAGSTREAM_", env_nested_delimiter="__", frozen=True, extra="forbid")

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    topics: TopicNames = TopicNames()
    tagger: TaggerSettings = TaggerSettings()
    ingest: IngestSettings = IngestSettings()
