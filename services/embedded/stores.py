"""The embedded mode's stores: audiences over the in-memory read model, and the in-memory consent,
profile and notifier stores with every change journaled (journal.py) so a restart rebuilds them."""

from __future__ import annotations

import logging
import uuid
from bisect import bisect_right
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Literal, Protocol

from pydantic import TypeAdapter

from schemas.notifications import NotificationOutcome
from services.embedded.journal import Entry
from services.embedded.readmodel import MemoryReadModel
from services.ingest.audiences import decode_cursor, encode_cursor
from services.ingest.ports import AudiencePage, AudienceQuery, CursorExpired
from services.notifier.memory import MemoryLedger, MemoryScheduler
from services.notifier.policy import ScheduledStep, SendRecord
from services.notifier.ports import Claim
from services.runtime.clock import Clock
from services.runtime.customers import Channel, MemoryCustomers, Profile

_STEPS = TypeAdapter(list[ScheduledStep])
log = logging.getLogger("tagstream.embedded")


class Journaling(Protocol):
    def journaled(self, entry: Entry) -> None:
        """Make a state change durable (not while the journal itself is being replayed)."""
        ...


class MemoryAudiences:
    """Audiences over the in-memory read model: snapshots in ascending id order, like the Redis ones."""

    def __init__(self, readmodel: MemoryReadModel, ttl_s: int, clock: Clock) -> None:
        self._readmodel = readmodel
        self._ttl = timedelta(seconds=ttl_s)
        self._clock = clock
        self._snapshots: dict[str, tuple[list[str], datetime]] = {}

    async def query(self, query: AudienceQuery, limit: int) -> AudiencePage:
        self._expire()
        snapshot = uuid.uuid4().hex
        self._snapshots[snapshot] = (self._members(query), self._clock.now() + self._ttl)
        return self._page(snapshot, None, limit)

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
    KINDS = ("reserve", "release", "record")

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


class LoggedOutcomes:
    """The notifier's decisions in the one-process mode: logged (no personal data in an outcome), not
    kept: a long-running process must not hold every decision it ever made."""

    async def emit(self, outcome: NotificationOutcome) -> None:
        log.info(
            "notification %s%s: %s step %d of %s for customer %s",
            outcome.outcome,
            f" ({outcome.reason})" if outcome.reason else "",
            outcome.channel,
            outcome.step,
            outcome.playbook_id,
            outcome.customer_id,
        )

    async def dead_letter(self, outcome: NotificationOutcome) -> None:
        log.warning(
            "notification failed for good: %s step %d of %s for customer %s: %s",
            outcome.channel,
            outcome.step,
            outcome.playbook_id,
            outcome.customer_id,
            outcome.detail,
        )
