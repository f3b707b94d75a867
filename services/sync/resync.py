"""`tagstream sync resync`: make the external system hold exactly the read model's tags, customer by customer.

For every customer the read model knows (a seq key), a snapshot of the tags held in the enabled
groups goes to the adapter's `replace`; once acknowledged, the customer's applied seq is raised to
the snapshot's, so the running sink skips the older changes it has not reached yet and applies the
newer ones. Used after connecting a new external system, after its tags were edited by hand, or
once profiles gained their WeCom contact ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from schemas.tags import TagGroup
from services.runtime.readmodel import ReadModel
from services.sync.plan import synced_groups
from services.sync.ports import Adapter, AppliedSeqs, Snapshot


class ResyncRefused(Exception):
    """The read model cannot be trusted now (missing, rebuilding): a resync would erase real tags."""


@dataclass(slots=True)
class ResyncReport:
    customers: int = 0
    no_contact: int = 0
    rejected: int = 0
    first_reasons: tuple[str, ...] = ()


async def resync(
    redis: Redis,
    *,
    key_prefix: str,
    groups: dict[str, TagGroup],
    adapter: Adapter,
    applied: AppliedSeqs,
    batch: int,
    progress: Callable[[ResyncReport], None] | None = None,
) -> ResyncReport:
    readmodel = ReadModel(redis, key_prefix=key_prefix)
    why = await readmodel.unavailable()
    if why is not None:
        raise ResyncRefused(f"the read model is not whole ({why}); wait for `tagstream readmodel status` to say ready")
    synced = synced_groups(groups)
    synced_ids = {group.id for group in synced}
    report = ResyncReport()
    reasons: list[str] = []
    pending: list[Snapshot] = []

    async def flush() -> None:
        result = await adapter.replace(pending)
        refused = {rejected.customer_id for rejected in result.rejected}
        await applied.advance({s.customer_id: s.seq for s in pending if s.customer_id not in refused})
        report.customers += len(pending)
        report.no_contact += result.no_contact
        report.rejected += len(result.rejected)
        reasons.extend(f"{r.customer_id}: {r.reason}" for r in result.rejected[: max(0, 5 - len(reasons))])
        pending.clear()
        if progress is not None:
            progress(report)

    async for customer_id in readmodel.customers():
        seq, held = await asyncio.gather(readmodel.last_seq(customer_id), readmodel.current_tags(customer_id))
        pairs = frozenset((group, tag) for group, tags in held.items() if group in synced_ids for tag in tags)
        pending.append(Snapshot(customer_id, seq, pairs, synced))
        if len(pending) >= batch:
            await flush()
    if pending:
        await flush()
    report.first_reasons = tuple(reasons)
    return report
