"""`TAGSTREAM_KAFKA__*`: how every service reaches the brokers, and the topics tagstream creates."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from services.runtime.sections.common import Section


class KafkaSettings(Section):
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
