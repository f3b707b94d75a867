"""`tagstream run`: the ingest API, tagger, read model and notifier in one process.

For small shops: no Kafka, no Redis. The HTTP API is the ingest service's own app (same routes,
roles and validation) over in-process adapters; what Kafka and Redis keep in the services is kept
in memory and made durable by the journal (journal.py) in the data directory. Every accepted write
is first taken through everything its replay will do (parsed back from its journaled text; for
definitions, compiled and fingerprinted), then journaled (fsynced), then applied and answered, so
a restart — or a crash — loses nothing and a journaled write cannot stop the next start. The
notifier's decisions are journaled as they are made, so a restart neither forgets a delayed step
nor repeats a decided one (a send cut off by a crash before its decision was journaled is retried
with the same idempotency key, as in the services).

The same product as the services, not a lookalike: the notifier is composed by the notifier
service's own factory (services/notifier/composition.py: global policy, tuning, providers, the
playbooks file reloaded on change), and the tagger and notifier count into the services' own
metrics, served by the ingest app's /metrics from the one registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from schemas.events import CustomerEvent, event_adapter
from schemas.excerpt import describe_validation_error, excerpt
from schemas.tags import TagChanged, TagCommand, TagGroup
from services.embedded.journal import Entry, Journal, JournalError
from services.embedded.pipeline import EmbeddedTagger
from services.embedded.readmodel import MemoryReadModel, ReadModelFacts
from services.embedded.stores import (
    JournaledCampaigns,
    JournaledCustomers,
    JournaledLedger,
    JournaledPlaybooks,
    JournaledScheduler,
    LoggedOutcomes,
    MemoryAudiences,
    audience_members,
)
from services.embedded.views import EmbeddedState, MemoryMessages
from services.engine import RuleBook
from services.engine.arrival import Arrival
from services.engine.errors import CommandRefused, DefinitionError
from services.engine.fingerprint import encode_fingerprint, fingerprint
from services.engine.timeutil import to_us
from services.ingest.app import AdapterFactory, Adapters
from services.ingest.metrics import IngestMetrics
from services.ingest.ports import AudienceQuery, NotifierAccess, Record, RecordRefused
from services.notifier.campaigns import CampaignRunner
from services.notifier.composition import NotifierComposition, NotifierPorts
from services.notifier.core import Notifier
from services.notifier.policy import Audience
from services.notifier.ports import Provider
from services.runtime.clock import Clock
from services.runtime.settings import Settings
from services.runtime.zone import day_zone
from services.tagger.metrics import TaggerMetrics

log = logging.getLogger("tagstream.embedded")

JOURNAL_FILE = "journal.jsonl"


class EmbeddedNode:
    """Owns the in-process state; `adapters` plugs it into the ingest app (services/ingest/app.py)."""

    def __init__(
        self,
        settings: Settings,
        data_dir: Path,
        clock: Clock,
        *,
        registry: CollectorRegistry | None = None,
        playbooks: Path | None = None,
        providers: Mapping[str, Provider] | None = None,
        tick_s: float = 1.0,
        skip_bad_journal_lines: bool = False,
    ) -> None:
        """Without `playbooks` (a file, reloaded when it changes) there is no notifier: nothing is sent.
        `providers` replaces the ones the settings describe. Raises PlaybookError for a bad file.
        `skip_bad_journal_lines`: see `start`."""
        self.settings = settings
        self.clock = clock
        self.zone = day_zone(settings.shop.timezone)
        """The shop's days, as the engine takes them."""
        self.registry = registry or CollectorRegistry()
        self.metrics = TaggerMetrics(self.registry)
        self.journal = Journal(data_dir / JOURNAL_FILE)
        self.arrival = Arrival.of(settings.shop.future_skew, settings.history_age)
        self._events = event_adapter()
        self.composition: NotifierComposition | None = None
        if playbooks is not None:
            self.composition = NotifierComposition(
                settings, self.registry, playbooks_file=playbooks, providers=providers
            )
        self._skip_bad_lines = skip_bad_journal_lines
        self.journal_error: JournalError | None = None
        """Why the last start failed on the journal (for the command line's message)."""
        self._tick_s = tick_s
        self._lock = asyncio.Lock()
        self._replaying = False
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._fresh_state()

    def _fresh_state(self) -> None:
        """Empty stores, tagger and read model (again, when a replay must start over)."""
        settings, clock = self.settings, self.clock
        self.readmodel = MemoryReadModel(history_limit=settings.redis.history_limit, zone=self.zone)
        self.tagger = EmbeddedTagger(
            readmodel=self.readmodel,
            horizon_days=settings.tagger.horizon_days,
            currency=settings.shop.currency,
            zone=self.zone,
        )
        self.customers = JournaledCustomers(self)
        self.messages = MemoryMessages(self, settings.redis.history_limit)
        self.versions: dict[str, int] = {}
        """The highest version of each group seen, deleted ones included (a re-created group continues)."""
        self.notifier: Notifier | None = None
        self.campaign_runner: CampaignRunner | None = None
        if self.composition is not None:
            self.scheduler = JournaledScheduler(self)
            self.ledger = JournaledLedger(self)
            self.campaigns = JournaledCampaigns(self, self.scheduler, self._audience)
            self.stored_playbooks = JournaledPlaybooks(self)
            ports = NotifierPorts(
                scheduler=self.scheduler,
                ledger=self.ledger,
                customers=self.customers,
                tags=ReadModelFacts(self.readmodel),
                outcomes=LoggedOutcomes(self.messages),
                definitions=lambda: self.tagger.groups,
                campaigns=self.campaigns,
            )
            self.notifier = self.composition.notifier(ports, clock)
            self.campaign_runner = self.composition.campaign_runner(ports, clock)
            self.tagger.listen(self._schedule)

    # -- life cycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Replay the journal, then take writes; time-based flips and due steps run every tick.

        Raises JournalError on the first line that cannot be replayed, unless the node was made with
        `skip_bad_journal_lines`: then every such line is set aside and the journal replayed afresh
        without them (a line that failed half-applied leaves nothing behind)."""
        try:
            bad = await self._replay()
            if bad:
                self.journal.set_aside(bad)
                log.error(
                    "embedded: moved %d journal lines that cannot be replayed to %s (lines %s)",
                    len(bad),
                    self.journal.rejected_path,
                    ", ".join(map(str, sorted(bad))),
                )
                self._fresh_state()
                await self._replay()
        except JournalError as error:
            self.journal_error = error
            log.error("embedded: %s", error)
            raise
        log.info("embedded: replayed %d journal entries from %s", self.journal.entries, self.journal.path)
        self._count_from_now()
        self.journal.open()
        await self.tick()
        self._stopping.clear()
        self._tasks.append(asyncio.create_task(self._ticking(), name="tagstream-embedded-ticks"))
        if self.composition is not None:
            await self.composition.playbooks.follow(self.stored_playbooks)
            watching = self.composition.watch_playbooks(self._stopping)
            self._tasks.append(asyncio.create_task(watching, name="tagstream-embedded-playbooks"))

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.composition is not None:
            await self.composition.close()
        self.journal.close()

    async def tick(self) -> None:
        """Let time pass: tags flip when their time comes, then due notifier steps run."""
        async with self._lock:
            await self.tagger.advance(self.clock.now())
        if self.campaign_runner is not None:
            await self.campaign_runner.run()
        if self.notifier is not None:
            while await self.notifier.run_due():
                pass
            await self.notifier.update_backlog()

    def _count_from_now(self) -> None:
        """Count live work only: the journal's entries were counted when they were live, and counting
        them again at every start would show a restart as a burst of the shop's whole history."""
        self.tagger.count_into(self.metrics)
        for topic in (self.settings.topics.events, self.settings.topics.tag_commands):
            # The in-process "consumer" applies a write before answering it: nothing is ever behind.
            self.metrics.consumer_lag.labels(topic, "0").set(0)

    async def _ticking(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            try:
                await self.tick()
            except Exception:
                log.exception("embedded: a tick failed; the next one retries")

    # -- writes ---------------------------------------------------------------------------------------

    async def publish(self, topic: str, records: Sequence[Record]) -> None:
        """What the ingest API sends to a topic: checked as its replay will read it, journaled, then
        applied, before the caller is answered. Raises RecordRefused (nothing journaled)."""
        kind = self._kind(topic)
        async with self._lock:
            at = self.clock.now()
            entry: Entry = {"k": kind, "at": at, "r": [[key.decode(), _text(value)] for key, value in records]}
            try:
                parsed = self._parsed(entry)
            except (ValidationError, DefinitionError, ValueError, TypeError) as error:
                raise RecordRefused(_reason(error)) from None
            self.journal.append(entry)
            await self._apply(kind, parsed, at)

    @property
    def lock(self) -> asyncio.Lock:
        """Held while a write (or a tick) is applied: hold it to read every customer at one instant."""
        return self._lock

    def journaled(self, entry: Entry) -> None:
        """A state change of the stores (consent, profiles, notifier decisions), made durable."""
        if not self._replaying:
            self.journal.append(entry)

    async def _replay(self) -> dict[int, str]:
        """Redo every journal line; the lines that failed, with why (only when skipping them)."""
        bad: dict[int, str] = {}
        self._replaying = True
        try:
            for number, entry in self.journal.replay():
                try:
                    if isinstance(entry, JournalError):
                        raise entry
                    await self._redo(entry)
                except JournalError as error:
                    reason = error.reason
                except Exception as error:  # whatever the line makes fail, reported with where it is
                    reason = _reason(error)
                else:
                    continue
                if not self._skip_bad_lines:
                    raise JournalError(self.journal.path, number, reason)
                bad[number] = reason
        finally:
            self._replaying = False
        return bad

    async def _redo(self, entry: Entry) -> None:
        kind = entry["k"]
        if kind in ("events", "commands", "definitions"):
            await self._apply(kind, self._parsed(entry), datetime.fromisoformat(entry["at"]))
        elif kind in JournaledCustomers.KINDS:
            await self.customers.redo(entry)
        elif kind in JournaledScheduler.KINDS:
            await self.scheduler.redo(entry)
        elif kind in JournaledLedger.KINDS:
            await self.ledger.redo(entry)
        elif kind in JournaledCampaigns.KINDS:
            await self.campaigns.redo(entry)
        elif kind in JournaledPlaybooks.KINDS:
            await self.stored_playbooks.redo(entry)
        elif kind in MemoryMessages.KINDS:
            await self.messages.redo(entry)
        else:
            raise ValueError(f"{self.journal.path}: unknown journal entry kind {kind!r}")

    def _parsed(self, entry: Entry) -> list[CustomerEvent] | list[TagCommand] | dict[str, TagGroup]:
        """The entry's records as replaying it reads them (from their journaled text); definitions
        as the whole new set, compiled and fingerprinted as the tagger will (DefinitionError,
        TypeError: a value the fingerprint's 64-bit integers cannot hold)."""
        records: list[list[Any]] = entry["r"]
        if entry["k"] == "events":
            return [self._events.validate_json(value) for _, value in records]
        if entry["k"] == "commands":
            return [TagCommand.model_validate_json(value) for _, value in records]
        groups = dict(self.tagger.groups)
        for key, value in records:
            if value is None:
                groups.pop(key, None)
            else:
                groups[key] = TagGroup.model_validate_json(value)
        rulebook = RuleBook.compile(
            list(groups.values()), horizon_days=self.settings.tagger.horizon_days, zone=self.zone
        )
        encode_fingerprint(fingerprint(rulebook))
        return groups

    async def _apply(
        self, kind: str, parsed: list[CustomerEvent] | list[TagCommand] | dict[str, TagGroup], at: datetime
    ) -> None:
        # Time first, as the live node does before every write: the replay then fires each time flip
        # in the same order relative to the writes, so every change gets the same seq again.
        await self.tagger.advance(at)
        if isinstance(parsed, dict):
            for key, group in parsed.items():
                self.versions[key] = max(self.versions.get(key, 0), group.version)
            await self.tagger.define(parsed, at)
        elif kind == "events":
            now_us = to_us(at)
            for event in parsed:
                assert not isinstance(event, TagCommand)
                # Evaluated at the instant it was accepted (journaled with it), never at its own date:
                # a restart replays the same clock, and a wrong date cannot move anyone's time.
                occurred_us = to_us(event.occurred_at)
                ahead = self.arrival.too_far_ahead(occurred_us, now_us)
                if ahead:  # the API refuses these (422); a journal written before it did may hold some
                    log.warning("embedded: skipping journaled event %s: %s", event.event_id[:128], ahead)
                    continue
                await self.tagger.event(event, at, self.arrival.source(event, occurred_us, now_us))
        else:
            for command in parsed:
                assert isinstance(command, TagCommand)
                try:
                    await self.tagger.command(command)
                except CommandRefused as error:  # the Kafka tagger dead-letters these
                    log.warning("embedded: refused a manual tag command: %s", error)

    async def _schedule(self, changes: list[TagChanged]) -> None:
        """Tag changes to the notifier, live only: a replayed journal restores its steps itself."""
        assert self.notifier is not None
        if not self._replaying:
            await self.notifier.on_changes(changes)

    def campaign_access(self) -> NotifierAccess | None:
        """Campaigns need the notifier: none without playbooks."""
        if self.notifier is None:
            return None
        return NotifierAccess(
            store=self.campaigns,
            playbooks=self.stored_playbooks,
            ledger=self.ledger,
            reports=self.ledger,
            activity=self.readmodel,
        )

    def _audience(self, audience: Audience) -> list[str]:
        """A campaign's audience over the in-process read model (as MemoryAudiences selects it)."""
        query = AudienceQuery(all_of=audience.all_of, any_of=audience.any_of, none_of=audience.none_of)
        return audience_members(self.readmodel, query)

    def _kind(self, topic: str) -> str:
        topics = self.settings.topics
        kinds = {topics.events: "events", topics.tag_commands: "commands", topics.tag_definitions: "definitions"}
        if topic not in kinds:
            raise ValueError(f"the embedded mode has no topic {topic!r}")
        return kinds[topic]

    # -- the ingest app's adapters ----------------------------------------------------------------------

    def adapters(self) -> AdapterFactory:
        node = self

        @asynccontextmanager
        async def factory(settings: Settings, clock: Clock, metrics: IngestMetrics) -> AsyncIterator[Adapters]:
            await node.start()
            try:
                yield Adapters(
                    publisher=EmbeddedPublisher(node),
                    definitions=EmbeddedDefinitions(node),
                    reads=node.readmodel,
                    audiences=MemoryAudiences(node.readmodel, settings.ingest.audience_ttl_s, clock),
                    customers=node.customers,
                    tagger=EmbeddedState(node),
                    messages=node.messages,
                    campaigns=node.campaign_access(),
                )
            finally:
                await node.stop()

        return factory


class EmbeddedPublisher:
    def __init__(self, node: EmbeddedNode) -> None:
        self._node = node

    @property
    def ready(self) -> bool:
        return True

    @property
    def saturated(self) -> bool:
        """Never: a write is journaled and applied before the next one is read."""
        return False

    async def send(self, topic: str, records: Sequence[Record]) -> None:
        await self._node.publish(topic, records)


class EmbeddedDefinitions:
    def __init__(self, node: EmbeddedNode) -> None:
        self._node = node

    @property
    def ready(self) -> bool:
        return True

    def groups(self) -> Mapping[str, TagGroup]:
        return self._node.tagger.groups

    def last_version(self, group_id: str) -> int:
        return self._node.versions.get(group_id, 0)

    def written(self, upserts: Sequence[TagGroup], deletions: Sequence[str]) -> None:
        """Nothing to do: `send` applied them before answering."""


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def _reason(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return describe_validation_error(error)
    return f"{type(error).__name__}: {excerpt(str(error), 300)}"
