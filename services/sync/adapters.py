"""The one place the sink's adapter is built from settings (the service, resync and the tests alike)."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

from services.runtime.clock import Clock
from services.runtime.customers import CustomerStore
from services.runtime.resilience import Backoff
from services.runtime.settings import SyncSettings
from services.runtime.webhooks import SignedWebhook, secret_bytes, tls_context
from services.sync.metrics import SyncMetrics
from services.sync.ports import Adapter
from services.sync.sink import Retrying
from services.sync.webhook import WebhookAdapter
from services.sync.wecom import WeComAdapter
from services.sync.wecom_api import WeComApi


def build_adapter(
    settings: SyncSettings,
    customers: CustomerStore,
    clock: Clock,
    metrics: SyncMetrics,
    *,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> Adapter:
    """Raises ProviderConfigError when a secret file or the CA bundle cannot be read, ValueError when the
    chosen adapter lacks its settings (`SyncSettings.configured`)."""
    missing = settings.configured()
    if missing is not None:
        raise ValueError(missing)
    retrying = Retrying(
        Backoff(settings.attempts, settings.backoff_base_s, settings.backoff_cap_s),
        metrics,
        **({"sleep": sleep} if sleep is not None else {}),
        rng=random.Random(),
    )
    tls = tls_context(settings.ca_file)
    if settings.adapter == "webhook":
        secret = secret_bytes(settings.signing_secret, settings.signing_secret_file)
        assert settings.webhook_url is not None
        assert secret is not None
        hook = SignedWebhook(
            "sync",
            settings.webhook_url,
            signing_secret=secret,
            tls=tls,
            clock=clock,
            auth_header=settings.webhook_auth,
            timeout_s=settings.timeout_s,
            observe=metrics.observe,
        )
        return WebhookAdapter(hook, retrying, batch=settings.batch)
    corp_secret = secret_bytes(settings.wecom_secret, settings.wecom_secret_file, what="WeCom secret", min_length=1)
    assert settings.wecom_corp_id is not None
    assert corp_secret is not None
    api = WeComApi(
        settings.wecom_base_url,
        settings.wecom_corp_id,
        corp_secret,
        retrying,
        clock,
        timeout_s=settings.timeout_s,
        tls=tls,
    )
    return WeComAdapter(api, customers, agent_id=settings.wecom_agent_id)
