"""`tagstream run --embedded`: the ingest API, tagger, read model and notifier in one process.

For small shops: no Kafka, no Redis. The HTTP API is the ingest service's own app (same routes,
roles and validation) over in-process adapters; what Kafka and Redis keep in the services is kept
in memory and made durable by the journal (journal.py) in the data directory. Every accepted write
is journaled (fsynced) before it is answered, so a restart — or a crash — loses nothing: the
journal is replayed at start. The notifier's decisions are journaled as they are made, so a
restart neither forgets a delayed step nor repeats a decided one (a send cut off by a crash before
its decision was journaled is retried with the same idempotency key, as in the services).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from schemas.events import event_adapter
from schemas.tags import TagCommand, TagGroup
from services.embedded.journal import Entry, Journal
from services.embedded.pipeline import EmbeddedTagger
from services.embedded.readmodel import MemoryReadModel, ReadModelFacts
from services.ingest.app import AdapterFactory, Adapters
from services.ingest.metrics import IngestMetrics
from services.ingest.ports import AudiencePage, AudienceQuery, CursorExpired, Record
from services.notifier.core import Notifier, Tuning
from services.notifier.memory import MemoryLedger, MemoryOutcomes, MemoryScheduler
from services.notifier.policy import PlaybookSet, ScheduledStep, SendRecord
from services.notifier.ports import Claim, Provider
from services.runtime.customers import Channel, MemoryCustomers, Profile
from services.runtime.settings import Settings
from services.tagger.engine import Clock
from services.tagger.engine.errors import CommandRefused, DefinitionError

log = logging.getLogger("tagstream.embedded")

JOURNAL_FILE = "journal.jsonl"
_STEPS = TypeAdapter(list[ScheduledStep])


class EmbeddedNode:
    """Owns the in-process state; `adapters` plugs it into the ingest app (services/ingest/app.py)."""

    def __init__(
        self,
        settings: Settings,
        data_dir: Path,
        clock: Clock,
        *,
        playbooks: PlaybookSet | None = None,
        providers: Mapping[str, Provider] | None = None,
        tick_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.journal = Journal(data_dir / JOURNAL_FILE)
        self.readmodel = MemoryReadModel(history_limit=settings.redis.history_limit)
        self.tagger = EmbeddedTagger(readmodel=self.readmodel, horizon_days=settings.tagger.horizon_days)
        self.customers = JournaledCustomers(self)
        self.outcomes = MemoryOutcomes()
        self.refused_commands = 0
        self.versions: dict[str, int] = {}
        """The highest version of each group seen, deleted ones included (a re-created group continues)."""
        self.notifier: Notifier | None = None
        self._tick_s = tick_s
        self._lock = asyncio.Lock()
        self._replaying = False
        self._tasks: list[asyncio.Task[None]] = []
        if playbooks is not None:
            self.scheduler = JournaledScheduler(self)
            self.ledger = JournaledLedger(self)
            self.notifier = Notifier(
                playbooks,
                self.scheduler,
                self.ledger,
                self.customers,
                ReadModelFacts(self.readmodel),
                providers or {},
                self.outcomes,
                clock,
                tuning=Tuning(),
            )
            self.tagger.listen(self._schedule)

    # -- life cycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Replay the journal, then take writes; time-based flips and due steps run every tick."""
        self._replaying = True
        try:
            for entry in self.journal.replay():
                await self._redo(entry)
        finally:
            self._replaying = False
        log.info("embedded: replayed %d journal entries from %s", self.journal.entries, self.journal.path)
        self.journal.open()
        await self.tick()
        self._tasks.append(asyncio.create_task(self._ticking(), name="tagstream-embedded-ticks"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self.journal.close()

    async def tick(self) -> None:
        """Let time pass: tags flip when their time comes, then due notifier steps run."""
        async with self._lock:
            await self.tagger.advance(self.clock.now())
        if self.notifier is not None:
            while await self.notifier.run_due():
                pass

    async def _ticking(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            try:
                await self.tick()
            except Exception:
                log.exception("embedded: a tick failed; the next one retries")

    # -- writes ---------------------------------------------------------------------------------------

    async def publish(self, topic: str, records: Sequence[Record]) -> None:
        """What the ingest API sends to a topic: journaled, then applied, before the caller is answered."""
        kind = self._kind(topic)
        async with self._lock:
            at = self.clock.now()
            entry: Entry = {"k": kind, "at": at, "r": [[key.decode(), _text(value)] for key, value in records]}
            self.journal.append(entry)
            await self._apply(entry, at)

    def journaled(self, entry: Entry) -> None:
        """A state change of the stores (consent, profiles, notifier decisions), made durable."""
        if not self._replaying:
            self.journal.append(entry)

    async def _redo(self, entry: Entry) -> None:
        kind = entry["k"]
        if kind in ("events", "commands", "definitions"):
            await self._apply(entry, datetime.fromisoformat(entry["at"]))
        elif kind in JournaledCustomers.KINDS:
            await self.customers.redo(entry)
        elif kind in JournaledScheduler.KINDS:
            await self.scheduler.redo(entry)
        elif kind in JournaledLedger.KINDS:
            await self.ledger.redo(entry)
        else:
            raise ValueError(f"{self.journal.path}: unknown journal entry kind {kind!r}")

    async def _apply(self, entry: Entry, at: datetime) -> None:
        # Time first, as the live node does before every write: the replay then fires each time flip
        # in the same order relative to the writes, so every change gets the same seq again.
        await self.tagger.advance(at)
        records: list[list[Any]] = entry["r"]
        if entry["k"] == "events":
            adapter = event_adapter()
            for _, value in records:
                try:
                    event = adapter.validate_json(value)
                except ValidationError as error:  # the API validated it: only a hand-edited journal gets here
                    log.error("embedded: skipping an invalid journaled event: %s", error)
                    continue
                await self.tagger.event(event)
        elif entry["k"] == "commands":
            for _, value in records:
                try:
                    await self.tagger.command(TagCommand.model_validate_json(value))
                except CommandRefused as error:  # the Kafka tagger dead-letters these
                    self.refused_commands += 1
                    log.warning("embedded: refused a manual tag command: %s", error)
        else:
            groups = dict(self.tagger.groups)
            for key, value in records:
                if value is None:
                    groups.pop(key, None)
                else:
                    groups[key] = group = TagGroup.model_validate_json(value)
                    self.versions[key] = max(self.versions.get(key, 0), group.version)
            try:
                await self.tagger.define(groups, at)
            except DefinitionError as error:  # the API validated them as a whole: the same check
                log.error("embedded: keeping the previous tag groups: %s", error)

    async def _schedule(self, changes: Any) -> None:
        if self.notifier is not None and not self._replaying:
            await self.notifier.on_changes(changes)

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


class MemoryAudiences:
    """Audiences over the in-memory read model: snapshots in ascending id order, like the Redis ones."""

    def __init__(self, readmodel: MemoryReadModel, ttl_s: int, clock: Clock) -> None:
        self._readmodel = readmodel
        self._ttl = timedelta(seconds=ttl_s)
        self._clock = clock
        self._snapshots: dict[str, tuple[list[str], datetime]] = {}

    async def query(self, query: AudienceQuery, limit: int) -> AudiencePage:
        import uuid

        self._expire()
        snapshot = uuid.uuid4().hex
        self._snapshots[snapshot] = (self._members(query), self._clock.now() + self._ttl)
        return self._page(snapshot, None, limit)

    async def page(self, cursor: str, limit: int) -> AudiencePage:
        from services.ingest.audiences import decode_cursor

        snapshot, after = decode_cursor(cursor)
        self._expire()
        if snapshot not in self._snapshots:
            raise CursorExpired(f"the audience behind this cursor expired after {self._ttl.seconds}s; run it again")
        return self._page(snapshot, after, limit)

    async def export(self, query: AudienceQuery) -> AsyncIterator[str]:
        for customer_id in self._members(query):
            yield customer_id

    def _members(self, query: AudienceQuery) -> list[str]:
        def members(ref: str) -> frozenset[str]:
            group_id, tag_id = ref.split("/", 1)
            return self._readmodel.member_ids(group_id, tag_id)

        chosen: set[str] | None = None
        if query.all_of:
            chosen = set.intersection(*(set(members(ref)) for ref in query.all_of))
        if query.any_of:
            union = set().union(*(members(ref) for ref in query.any_of))
            chosen = union if chosen is None else chosen & union
        chosen = chosen or set()
        for ref in query.none_of:
            chosen -= members(ref)
        return sorted(chosen)

    def _page(self, snapshot: str, after: str | None, limit: int) -> AudiencePage:
        from bisect import bisect_right

        from services.ingest.audiences import encode_cursor

        ids, expires = self._snapshots[snapshot]
        start = 0 if after is None else bisect_right(ids, after)
        chosen = ids[start : start + limit]
        more = start + limit < len(ids)
        return AudiencePage(
            count=len(ids),
            customer_ids=chosen,
            cursor=encode_cursor(snapshot, chosen[-1]) if more else None,
            expires_at=expires,
        )

    def _expire(self) -> None:
        now = self._clock.now()
        for snapshot in [s for s, (_, expires) in self._snapshots.items() if expires <= now]:
            del self._snapshots[snapshot]


class JournaledCustomers(MemoryCustomers):
    """Consent and profiles in memory, each change journaled before it takes effect."""

    KINDS = ("opt_out", "opt_in", "profile")

    def __init__(self, node: EmbeddedNode) -> None:
        super().__init__()
        self._node = node

    async def opt_out(self, customer_id: str, channel: Channel | Literal["*"]) -> None:
        self._node.journaled({"k": "opt_out", "c": customer_id, "ch": channel})
        await super().opt_out(customer_id, channel)

    async def opt_in(self, customer_id: str, channel: Channel | Literal["*"]) -> None:
        self._node.journaled({"k": "opt_in", "c": customer_id, "ch": channel})
        await super().opt_in(customer_id, channel)

    async def set_profile(self, customer_id: str, profile: Profile) -> None:
        self._node.journaled({"k": "profile", "c": customer_id, "v": profile.model_dump(exclude_none=True)})
        await super().set_profile(customer_id, profile)

    async def redo(self, entry: Entry) -> None:
        if entry["k"] == "profile":
            await super().set_profile(entry["c"], Profile.model_validate(entry["v"]))
        elif entry["k"] == "opt_out":
            await super().opt_out(entry["c"], entry["ch"])
        else:
            await super().opt_in(entry["c"], entry["ch"])


class JournaledScheduler(MemoryScheduler):
    """Scheduled, completed and deferred steps journaled; claims (leases) are not: after a restart
    every unfinished step is simply due again."""

    KINDS = ("schedule", "complete", "defer")

    def __init__(self, node: EmbeddedNode) -> None:
        super().__init__()
        self._node = node

    async def schedule(self, jobs: Sequence[ScheduledStep]) -> set[str]:
        self._node.journaled({"k": "schedule", "v": _STEPS.dump_python(list(jobs), mode="json")})
        return await super().schedule(jobs)

    async def complete(self, claim: Claim) -> bool:
        done = await super().complete(claim)
        if done:
            self._node.journaled({"k": "complete", "key": claim.job.key})
        return done

    async def defer(self, claim: Claim, until: datetime) -> bool:
        deferred = await super().defer(claim, until)
        if deferred:
            self._node.journaled({"k": "defer", "key": claim.job.key, "until": until})
        return deferred

    async def redo(self, entry: Entry) -> None:
        if entry["k"] == "schedule":
            await super().schedule(_STEPS.validate_python(entry["v"]))
            return
        claims = await self._claim_key(entry["key"])
        if claims is None:
            return
        if entry["k"] == "complete":
            await super().complete(claims)
        else:
            await super().defer(claims, datetime.fromisoformat(entry["until"]))

    async def _claim_key(self, key: str) -> Claim | None:
        for job in self.pending():
            if job.key == key:
                entry = self._entries[key]
                entry.token = "replay"
                return Claim(job, "replay", entry.claims)
        return None


class JournaledLedger(MemoryLedger):
    KINDS = ("reserve", "release", "record")

    def __init__(self, node: EmbeddedNode) -> None:
        super().__init__()
        self._node = node

    async def reserve_coupon(self, customer_id: str, coupon: str, key: str, now: datetime, until: datetime) -> str:
        holder = await super().reserve_coupon(customer_id, coupon, key, now, until)
        if holder == key:
            self._node.journaled({"k": "reserve", "c": customer_id, "coupon": coupon, "key": key, "until": until})
        return holder

    async def release_coupon(self, customer_id: str, coupon: str, key: str) -> None:
        self._node.journaled({"k": "release", "c": customer_id, "coupon": coupon, "key": key})
        await super().release_coupon(customer_id, coupon, key)

    async def record(self, key: str, outcome: str, sent: SendRecord | None, customer_id: str, keep: timedelta) -> None:
        record = None if sent is None else {"channel": sent.channel, "playbook_id": sent.playbook_id, "at": sent.at}
        self._node.journaled(
            {"k": "record", "key": key, "o": outcome, "sent": record, "c": customer_id, "keep": keep.total_seconds()}
        )
        await super().record(key, outcome, sent, customer_id, keep)

    async def redo(self, entry: Entry) -> None:
        if entry["k"] == "reserve":
            self._coupons[(entry["c"], entry["coupon"])] = (entry["key"], datetime.fromisoformat(entry["until"]))
        elif entry["k"] == "release":
            await super().release_coupon(entry["c"], entry["coupon"], entry["key"])
        else:
            raw = entry["sent"]
            sent = None
            if raw is not None:
                sent = SendRecord(raw["channel"], raw["playbook_id"], datetime.fromisoformat(raw["at"]))
            await super().record(entry["key"], entry["o"], sent, entry["c"], timedelta(seconds=entry["keep"]))


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()
