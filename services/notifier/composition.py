"""The one composition of the notifier: settings and a mode's stores in, a running `Notifier` out.

Both modes build their notifier here — the service over Redis and Kafka (app.py), the one-process
node over memory and its journal (services/embedded/node.py) — so the global policy (caps, quiet
hours, coupon period, default time zone), the tuning, the playbooks file and its reload, the
providers and the metrics cannot differ between them. Only the ports (`NotifierPorts`) differ.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from schemas.durations import parse_duration
from schemas.tags import TagGroup
from services.notifier.campaigns import CampaignRunner
from services.notifier.core import Notifier, Tuning
from services.notifier.metrics import NotifierMetrics
from services.notifier.policy import CapRule, Policy, QuietHours
from services.notifier.ports import Ledger, OutcomeSink, Provider, Scheduler, TagFacts
from services.notifier.providers import LogProvider, WebhookProvider, signing_secret
from services.notifier.reload import PlaybookFile
from services.notifier.robot import robot_answer, robot_text
from services.runtime.campaigns import CampaignStore
from services.runtime.clock import Clock
from services.runtime.customers import CHANNELS, CustomerStore
from services.runtime.resilience import Backoff, CircuitBreaker
from services.runtime.settings import NotifierSettings, Settings, ShopSettings
from services.runtime.webhooks import tls_context


@dataclass(frozen=True, slots=True)
class NotifierPorts:
    """Where a mode keeps the notifier's state and sends its decisions."""

    scheduler: Scheduler
    ledger: Ledger
    customers: CustomerStore
    tags: TagFacts
    outcomes: OutcomeSink
    definitions: Callable[[], Mapping[str, TagGroup]] | None = None
    """The current tag groups: messages name groups and tags as the shop does (None: by their ids)."""
    campaigns: CampaignStore | None = None


class NotifierComposition:
    """The notifier as the settings make it, built before any store is open.

    Building it loads the playbooks file (raises PlaybookError when it is bad, so neither mode starts
    on one) and registers the notifier's metrics in `registry`; `notifier(ports, clock)` then makes
    the Notifier over the mode's stores, and `watch_playbooks` keeps the file reloaded.
    """

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry,
        *,
        playbooks_file: Path | None = None,
        providers: Mapping[str, Provider] | None = None,
    ) -> None:
        """`playbooks_file` replaces TAGSTREAM_NOTIFIER__PLAYBOOKS_FILE (`run --playbooks`);
        `providers` replaces the ones the settings describe (tests)."""
        self.settings = settings.notifier
        self.metrics = NotifierMetrics(registry)
        self.playbooks = PlaybookFile(playbooks_file or settings.notifier.playbooks_file, self.metrics)
        self.policy = policy_from(settings.notifier, settings.shop)
        self.tuning = tuning_from(settings.notifier)
        self.providers = dict(providers) if providers is not None else providers_from(settings.notifier, self.metrics)

    def notifier(self, ports: NotifierPorts, clock: Clock) -> Notifier:
        return Notifier(
            self.playbooks,
            ports.scheduler,
            ports.ledger,
            ports.customers,
            ports.tags,
            self.providers,
            ports.outcomes,
            clock,
            policy=self.policy,
            tuning=self.tuning,
            metrics=self.metrics,
            definitions=ports.definitions,
            campaigns=ports.campaigns,
        )

    def campaign_runner(self, ports: NotifierPorts, clock: Clock) -> CampaignRunner | None:
        """Starts and fans out the campaigns in `ports.campaigns` (None: the mode keeps none)."""
        if ports.campaigns is None:
            return None
        return CampaignRunner(
            ports.campaigns,
            clock,
            rates=rates_from(self.settings),
            page=self.settings.batch * 5,
            lease=self.tuning.lease,
            definitions=ports.definitions,
        )

    async def watch_playbooks(self, stopping: asyncio.Event) -> None:
        """Reload the playbooks file whenever it changes, checking every `reload_interval_s`, until `stopping`."""
        await self.playbooks.watch(self.settings.reload_interval_s, stopping)

    async def close(self) -> None:
        """Close the providers (their HTTP sessions); after the last send."""
        for provider in self.providers.values():
            await provider.close()


def policy_from(notifier: NotifierSettings, shop: ShopSettings) -> Policy:
    """The global policy; customers without a time zone of their own are in `default_timezone`, or
    else in the shop's zone (a shop in Shanghai keeps Shanghai's nights without saying it twice)."""
    return Policy(
        caps=tuple(CapRule.from_setting(text) for text in notifier.caps),
        quiet_hours=QuietHours.parse(notifier.quiet_hours) if notifier.quiet_hours else None,
        quiet_channels=frozenset(notifier.quiet_channels),
        coupon_period=parse_duration(notifier.coupon_period),
        default_zone=ZoneInfo(notifier.default_timezone or shop.timezone),
    )


def rates_from(settings: NotifierSettings) -> dict[str, float]:
    """Campaign steps per second by channel; a channel left out is not paced below 1,000/s."""
    rates: dict[str, float] = dict.fromkeys(CHANNELS, 1000.0)
    for text in settings.campaign_rates:
        channel, rate = text.split(":", 1)
        rates[channel] = float(rate)
    return rates


def tuning_from(settings: NotifierSettings) -> Tuning:
    return Tuning(
        lease=timedelta(seconds=settings.lease_s),
        batch=settings.batch,
        concurrency=settings.concurrency,
        max_claims=settings.max_claims,
        keep_decisions=timedelta(days=settings.keep_decisions_days),
        max_trigger_age=parse_duration(settings.max_trigger_age),
    )


def providers_from(
    settings: NotifierSettings, metrics: NotifierMetrics, clock: Clock | None = None
) -> dict[str, Provider]:
    """A webhook per channel with a URL (the alert channel's speaks a WeCom group robot's format), the log
    provider for the others. Raises ProviderConfigError when
    the signing secret file or the CA bundle cannot be read. Signatures are dated by `clock`, the wall
    clock unless a test says otherwise: receivers check them against theirs, even in a simulation."""
    found: dict[str, Provider] = {}
    secret = signing_secret(settings)
    tls = tls_context(settings.provider_ca_file)
    for channel in CHANNELS:
        url: str | None = getattr(settings, f"{channel}_url")
        auth: SecretStr | None = getattr(settings, f"{channel}_auth")
        if url is None:
            found[channel] = LogProvider(channel)
            continue
        assert secret is not None  # NotifierSettings refuses a provider URL without a signing secret
        found[channel] = WebhookProvider(
            channel,
            url,
            signing_secret=secret,
            tls=tls,
            clock=clock,
            auth_header=auth,
            timeout_s=settings.provider_timeout_s,
            backoff=Backoff(settings.provider_attempts, settings.backoff_base_s, settings.backoff_cap_s),
            breaker=CircuitBreaker(settings.breaker_threshold, settings.breaker_reset_s, time.monotonic),
            metrics=metrics,
            rng=random.Random(),
            encode=robot_text if channel == "alert" else None,
            check=robot_answer if channel == "alert" else None,
        )
    return found
