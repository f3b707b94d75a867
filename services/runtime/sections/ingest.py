"""`TAGSTREAM_INGEST__*`: the HTTP API, its limits and its keys (docs/ingest.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from schemas.common import Text
from services.runtime.sections.common import Secret16, Section


class ApiKey(Section):
    """One API key: whoever presents `key` acts as `name` with `role` (admin ⊇ operator ⊇ viewer)."""

    key: Secret16
    role: Literal["viewer", "operator", "admin"]
    # Text, as a manual tag's actor is: a name the contracts would refuse made every command of that key a 500
    name: Text = Field(max_length=128, description="who acts: recorded as the actor of manual tags")


class IngestSettings(Section):
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
