"""The generic adapter: batches of tag changes POSTed as signed JSON (the notifier's SignedWebhook).

Body of a change batch (`kind: changes`; a resync sends `kind: snapshot` with each customer's held
tags): `{"schema_version": 1, "kind": "changes", "batch_id": "...", "changes": [{customer_id, seq,
group_id, group_name, tag_id, tag_name, change, source, occurred_at}, ...]}`. `batch_id` (also the
Idempotency-Key header) is the same for the same changes on every retry and redelivery; a receiver
that stores each customer's highest applied `seq` needs nothing else to apply each change once.

2xx acknowledges the batch. 401/403 (our credentials) and every retryable answer leave it
uncommitted (Unavailable); other 4xx are the receiver refusing these changes: dead-lettered with the
status, so one bad batch does not stop the stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import blake2b
from typing import Any

import orjson

from services.runtime.resilience import ProviderError
from services.runtime.webhooks import SignedWebhook
from services.sync.ports import Applied, Outbound, Rejected, Snapshot
from services.sync.sink import Retry, Retrying

_CREDENTIALS = frozenset({401, 403})


class WebhookAdapter:
    name = "webhook"

    def __init__(self, hook: SignedWebhook, retrying: Retrying, *, batch: int = 100) -> None:
        self._hook = hook
        self._retrying = retrying
        self._batch = batch

    async def apply(self, changes: Sequence[Outbound]) -> Applied:
        result = Applied()
        for start in range(0, len(changes), self._batch):
            chunk = changes[start : start + self._batch]
            items = [_change(item) for item in chunk]
            refused = await self._send("changes", items, [(item.change.customer_id, item.change.seq) for item in chunk])
            if refused is not None:
                result.rejected.extend(Rejected(item.change.customer_id, item.change.seq, refused) for item in chunk)
        return result

    async def replace(self, snapshots: Sequence[Snapshot]) -> Applied:
        result = Applied()
        for start in range(0, len(snapshots), self._batch):
            chunk = snapshots[start : start + self._batch]
            items = [_snapshot(snapshot) for snapshot in chunk]
            refused = await self._send("snapshot", items, [(snapshot.customer_id, snapshot.seq) for snapshot in chunk])
            if refused is not None:
                result.rejected.extend(Rejected(snapshot.customer_id, snapshot.seq, refused) for snapshot in chunk)
        return result

    async def close(self) -> None:
        await self._hook.close()

    async def _send(self, kind: str, items: list[dict[str, Any]], ids: list[tuple[str, int]]) -> str | None:
        """None when acknowledged; the receiver's refusal otherwise."""
        batch_id = _batch_id(kind, ids)
        body = orjson.dumps({"schema_version": 1, "kind": kind, "batch_id": batch_id, kind: items})

        async def post() -> str | None:
            try:
                await self._hook.post(body, batch_id)
            except ProviderError as error:
                if error.retryable or error.status in _CREDENTIALS:
                    raise Retry(error.detail) from None
                return error.detail
            return None

        return await self._retrying(post, f"webhook batch {batch_id}")


def _change(item: Outbound) -> dict[str, Any]:
    change = item.change
    return {
        "customer_id": change.customer_id,
        "seq": change.seq,
        "group_id": change.group_id,
        "group_name": item.group.name,
        "tag_id": change.tag_id,
        "tag_name": item.tag_name,
        "change": change.change,
        "source": change.source,
        "occurred_at": change.occurred_at.isoformat(),
    }


def _snapshot(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "customer_id": snapshot.customer_id,
        "seq": snapshot.seq,
        "groups": [group.id for group in snapshot.groups],
        "tags": [{"group_id": group, "tag_id": tag} for group, tag in sorted(snapshot.held)],
    }


def _batch_id(kind: str, ids: list[tuple[str, int]]) -> str:
    text = "\x1e".join(f"{customer}\x1f{seq}" for customer, seq in ids)
    return blake2b(f"{kind}\x1e{text}".encode(), digest_size=16).hexdigest()
