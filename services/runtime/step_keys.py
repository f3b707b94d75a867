"""Stable keys: the idempotency key of one step for one trigger, and the holdout draw.

The notifier decides with them; the campaign preview (ingest) counts the holdout the same way.

Both use blake2b (never Python's `hash()`, which changes per process), so every replica and every
restart computes the same values.
"""

from __future__ import annotations

from hashlib import blake2b

from schemas.campaigns import Campaign
from schemas.playbooks import Playbook

_SEPARATOR = "\x1f"  # a unit separator cannot occur in ids, so ("a", "bc") and ("ab", "c") differ


def trigger_id(customer_id: str, seq: int) -> str:
    """A tag change is identified by its customer and per-customer seq (a redelivery has the same)."""
    return f"{customer_id}{_SEPARATOR}{seq}"


def step_key(playbook_id: str, step: int, customer_id: str, seq: int) -> str:
    """The idempotency key: one send per (playbook, step, customer, trigger), reused by every retry."""
    return _digest("step", playbook_id, str(step), trigger_id(customer_id, seq), size=16)


def campaign_step_key(campaign_id: str, step: int, customer_id: str) -> str:
    """One send per (campaign, step, customer): a customer in several of the selected audiences is one key."""
    return _digest("campaign", campaign_id, str(step), customer_id, size=16)


def holdout_draw(customer_id: str, playbook_id: str) -> float:
    """A number in [0, 1), uniform over customers and stable for one customer and playbook."""
    value = int.from_bytes(bytes.fromhex(_digest("holdout", playbook_id, customer_id, size=8)), "big")
    return value / 2**64


def in_holdout(customer_id: str, playbook: Playbook | Campaign) -> bool:
    return playbook.holdout > 0 and holdout_draw(customer_id, playbook.id) < float(playbook.holdout)


def _digest(*parts: str, size: int) -> str:
    return blake2b(_SEPARATOR.join(parts).encode(), digest_size=size).hexdigest()
