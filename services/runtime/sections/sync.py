"""`TAGSTREAM_SYNC__*`: the tag sync sink (docs/sync.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from services.runtime.sections.common import Secret32, Section


class SyncSettings(Section):
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
