"""`TAGSTREAM_REDIS__*`: the read model's, consent's and the scheduler's Redis."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from services.runtime.sections.common import Section


class RedisSettings(Section):
    url: str = Field(
        default="redis://127.0.0.1:6379/0",
        pattern=r"^rediss?://",
        description="redis:// or rediss:// (TLS), with the database number",
    )
    password: SecretStr | None = Field(default=None, description="AUTH password (or put it in the URL)")
    ssl_ca_certs: Path | None = Field(default=None, description="CA bundle for rediss:// URLs")
    key_prefix: str = Field(default="ts:", description="prefix of every key tagstream writes")
    history_limit: int = Field(default=200, ge=1, description="tag changes kept per customer in the read model")
