"""The embedded mode's stores: audiences over the in-memory read model, and the in-memory consent,
profile and notifier stores with every change journaled (journal.py) so a restart rebuilds them."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from typing import Literal, Protocol

from pydantic import TypeAdapter

from schemas.campaigns import Audience, CampaignRecord, CampaignStatus
from schemas.notifications import NotificationOutcome
from schemas.playbooks import PlaybookSet, ScheduledStep
from services.embedded.journal import Entry
from services.embedded.readmodel import MemoryReadModel
from services.ingest.audiences import decode_cursor, encode_cursor
from services.ingest.ports import AudiencePage, AudienceQuery, CursorExpired
from services.notifier.memory import MemoryCampaigns, MemoryLedger, MemoryPlaybooks, MemoryScheduler
from services.notifier.policy import SendRecord
from services.notifier.ports import Claim
from services.runtime.clock import Clock
from services.runtime.customers import Channel, MemoryCustomers, Profile
from services.runtime.playbooks import StoredPlaybooks
from services.runtime.reports import ProgramKind, Tally

_STEPS = TypeAdapter(list[ScheduledStep])
log = logging.getLogger("tagstream.embedded")


class Journaling(Protocol):
    def journaled(self, entry: Entry) -> None:
        """Make a state change durable (not while the journal itself is being replayed)."""
        ...


class MemoryAudiences:
    """Audiences over the in-memory read model: snapshots in ascending id order, paged by position in
    the snapshot (the cursor's number, as the Redis one's is a dense id)."""

    def __init__(self, readmodel: MemoryReadModel, ttl_s: int, clock: Clock) -> None:
        self._readmodel = readmodel
        self._ttl = timedelta(seconds=ttl_s)
        self._clock = clock
        self._snapshots: dict[str, tuple[list[str], datetime]] = {}

    async def query(self, query: AudienceQuery, limit: int) -> AudiencePage:
        self._expire()
        snapshot = uuid.uuid4().hex
        self._snapshots[snapshot] = (self._members(query), self._clock.now() + self._ttl)
        return self._page(snapshot, -1, limit)

    async def page(self, cursor: str, limit: int) -> AudiencePage:
        snapshot, after = decode_cursor(cursor)
        self._expire()
        if snapshot not in self._snapshots:
            raise CursorExpired(f"the audience behind this cursor expired after {self._ttl.seconds}s; run it again")
        return self._page(snapshot, after, limit)

    async def export(self, query: AudienceQuery) -> AsyncIterator[str]:
        for customer_id in self._members(query):
            yield customer_id

    def _members(self, query: AudienceQuery) -> list[str]:
        return audience_members(self._readmodel, query)

    def _page(self, snapshot: str, after: int, limit: int) -> AudiencePage:
        ids, expires = self._snapshots[snapshot]
        start = after + 1
        chosen = ids[start : start + limit]
        more = start + limit < len(ids)
        return AudiencePage(
            count=len(ids),
            customer_ids=chosen,
            cursor=encode_cursor(snapshot, start + len(chosen) - 1) if more else None,
            expires_at=expires,
        )

    def _expire(self) -> None:
        now = self._clock.now()
        for snapshot in [s for s, (_, expires) in self._snapshots.items() if expires <= now]:
            del self._snapshots[snapshot]


def audience_members(readmodel: MemoryReadModel, query: AudienceQuery) -> list[str]:
    """The audience's customers in ascending id order, each once."""

    def members(ref: str) -> frozenset[str]:
        group_id, tag_id = ref.split("/", 1)
        return readmodel.member_ids(group_id, tag_id)

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


class JournaledCustomers(MemoryCustomers):
    """Consent and profiles in memory, each change journaled before it takes effect."""

    KINDS = ("opt_out", "opt_in", "profile")

    def __init__(self, node: Journaling) -> None:
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

    def __init__(self, node: Journaling) -> None:
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
        claim = self._replay_claim(entry["key"])
        if claim is None:
            return
        if entry["k"] == "complete":
            await super().complete(claim)
        else:
            await super().defer(claim, datetime.fromisoformat(entry["until"]))

    def _replay_claim(self, key: str) -> Claim | None:
        """Take the stored job's lease as the journaled replica held it (a lookup, not a scan: the
        journal is replayed entry by entry at start)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        entry.token = "replay"
        return Claim(entry.job, "replay", entry.claims)


class JournaledLedger(MemoryLedger):
    KINDS = ("reserve", "release", "record", "tally")

    def __init__(self, node: Journaling) -> None:
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

    async def record(
        self,
        key: str,
        outcome: str,
        sent: SendRecord | None,
        customer_id: str,
        keep: timedelta,
        tally: Tally | None = None,
    ) -> None:
        record = None if sent is None else {"channel": sent.channel, "playbook_id": sent.playbook_id, "at": sent.at}
        entry: Entry = {"k": "record", "key": key, "o": outcome, "sent": record, "c": customer_id}
        entry["keep"] = keep.total_seconds()
        if tally is not None:
            entry["t"] = [
                tally.kind,
                tally.program_id,
                tally.step,
                tally.outcome,
                tally.reason,
                tally.touched,
                tally.at,
            ]
        self._node.journaled(entry)
        await super().record(key, outcome, sent, customer_id, keep, tally)

    async def tally(self, kind: ProgramKind, program_id: str, field: str, count: int = 1) -> None:
        self._node.journaled({"k": "tally", "kind": kind, "p": program_id, "f": field, "n": count})
        await super().tally(kind, program_id, field, count)

    async def redo(self, entry: Entry) -> None:
        if entry["k"] == "reserve":
            self._coupons[(entry["c"], entry["coupon"])] = (entry["key"], datetime.fromisoformat(entry["until"]))
        elif entry["k"] == "release":
            await super().release_coupon(entry["c"], entry["coupon"], entry["key"])
        elif entry["k"] == "tally":
            await super().tally(entry["kind"], entry["p"], entry["f"], entry["n"])
        else:
            raw = entry["sent"]
            sent = None
            if raw is not None:
                sent = SendRecord(raw["channel"], raw["playbook_id"], datetime.fromisoformat(raw["at"]))
            tally = None
            if entry.get("t") is not None:
                kind, program_id, step, outcome, reason, touched, at = entry["t"]
                tally = Tally(kind, program_id, step, outcome, reason, entry["c"], touched, datetime.fromisoformat(at))
            keep = timedelta(seconds=entry["keep"])
            await super().record(entry["key"], entry["o"], sent, entry["c"], keep, tally)


class JournaledCampaigns(MemoryCampaigns):
    """Campaigns in memory with every change journaled: the audience snapshot as the ids it took (a
    replay must not re-evaluate it on a read model that may be at another instant), and each fan-out
    cursor move after the steps it scheduled (journaled by the scheduler), so a crash between the two
    re-schedules one page, which the step keys deduplicate."""

    KINDS = ("campaign", "campaign_status", "campaign_started", "campaign_moved", "campaign_done", "campaign_deleted")

    def __init__(self, node: Journaling, scheduler: MemoryScheduler, members: Callable[[Audience], list[str]]) -> None:
        super().__init__(scheduler, members)
        self._node = node

    async def create(self, record: CampaignRecord) -> bool:
        if record.campaign.id in self._used:
            return False
        self._node.journaled({"k": "campaign", "v": record.model_dump(mode="json")})
        return await super().create(record)

    async def transition(self, campaign_id: str, allowed: frozenset[str], to: CampaignStatus) -> CampaignRecord | None:
        before = await self.get(campaign_id)
        after = await super().transition(campaign_id, allowed, to)
        if after is not None and before is not None and after.status != before.status:
            self._node.journaled({"k": "campaign_status", "id": campaign_id, "s": after.status})
        return after

    def started(self, campaign_id: str, members: list[str], at: datetime) -> CampaignRecord:
        self._node.journaled({"k": "campaign_started", "id": campaign_id, "m": members, "at": at})
        return super().started(campaign_id, members, at)

    def moved(self, campaign_id: str, step: int, count: int, last: str) -> None:
        self._node.journaled({"k": "campaign_moved", "id": campaign_id, "s": step, "n": count, "last": last})
        super().moved(campaign_id, step, count, last)

    async def finish(self, campaign_id: str) -> None:
        self._node.journaled({"k": "campaign_done", "id": campaign_id})
        await super().finish(campaign_id)

    async def delete(self, campaign_id: str) -> bool:
        deleted = await super().delete(campaign_id)
        if deleted:
            self._node.journaled({"k": "campaign_deleted", "id": campaign_id})
        return deleted

    async def redo(self, entry: Entry) -> None:
        kind = entry["k"]
        if kind == "campaign_deleted":
            await super().delete(entry["id"])
        elif kind == "campaign":
            await super().create(CampaignRecord.model_validate(entry["v"]))
        elif kind == "campaign_status":
            await super().transition(entry["id"], frozenset({"scheduled", "running", "paused"}), entry["s"])
        elif kind == "campaign_started":
            self.started(entry["id"], entry["m"], datetime.fromisoformat(entry["at"]))
        elif kind == "campaign_moved":
            self.moved(entry["id"], entry["s"], entry["n"], entry["last"])
        else:
            await super().finish(entry["id"])


class JournaledPlaybooks(MemoryPlaybooks):
    """The playbooks replaced over the API, journaled whole with their version."""

    KINDS = ("playbooks",)

    def __init__(self, node: Journaling) -> None:
        super().__init__()
        self._node = node

    async def replace(
        self, playbooks: PlaybookSet, expected_version: int, at: datetime, actor: str
    ) -> StoredPlaybooks | None:
        stored = await super().replace(playbooks, expected_version, at, actor)
        if stored is not None:
            document = playbooks.model_dump(mode="json")
            self._node.journaled({"k": "playbooks", "v": stored.version, "doc": document, "at": at, "by": actor})
        return stored

    async def redo(self, entry: Entry) -> None:
        playbooks = PlaybookSet.model_validate(entry["doc"])
        self.stored = StoredPlaybooks(entry["v"], playbooks, datetime.fromisoformat(entry["at"]), entry["by"])


class MessageRecorder(Protocol):
    def record(self, outcome: NotificationOutcome) -> None: ...


class LoggedOutcomes:
    """The notifier's decisions in the one-process mode: logged (no personal data in an outcome) and
    kept only in each customer's bounded message log (`messages`): a long-running process must not
    hold every decision it ever made."""

    def __init__(self, messages: MessageRecorder | None = None) -> None:
        self._messages = messages

    async def emit(self, outcome: NotificationOutcome) -> None:
        if self._messages is not None:
            self._messages.record(outcome)
        log.info(
            "notification %s%s: %s step %d of %s for customer %s",
            outcome.outcome,
            f" ({outcome.reason})" if outcome.reason else "",
            outcome.channel,
            outcome.step,
            outcome.playbook_id or f"campaign {outcome.campaign_id}",
            outcome.customer_id,
        )

    async def dead_letter(self, outcome: NotificationOutcome) -> None:
        log.warning(
            "notification failed for good: %s step %d of %s for customer %s: %s",
            outcome.channel,
            outcome.step,
            outcome.playbook_id or f"campaign {outcome.campaign_id}",
            outcome.customer_id,
            outcome.detail,
        )
