"""Decoded customer states kept between a customer's messages, so that one seen again skips decoding.

Decoding a stored state (`codec.decode`) is a fifth of the core's time per event, and a customer's
events come in sessions. An entry is a state with the exact bytes it was encoded to. It is used only
when the bytes read for the customer (the store's, or the batch's latest) are those bytes: whatever
else wrote the customer (a restore, a backfill, another worker before a rebalance) left other bytes,
and the entry is dropped. An entry is taken out while the engine works on its state (it changes it in
place), and put back with the new bytes only when the message succeeded: a message that failed, or a
batch abandoned before its states were written, leaves no entry whose bytes the store holds.
"""

from __future__ import annotations

from services.engine.state import CustomerState

KEPT: int = 4_096
"""States kept at most, the least recently used dropped first: ~5–9 KB each in memory (the stored
bytes are ~0.3–0.8 KB), so tens of MB at most, whatever the customer count."""


class DecodedStates:
    """customer id -> (stored bytes, the state they decode to), at most `limit` of them."""

    def __init__(self, limit: int = KEPT) -> None:
        if limit < 0:
            raise ValueError(f"the decoded states kept must be 0 or more, not {limit}")
        self._limit = limit
        self._entries: dict[str, tuple[bytes, CustomerState]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, customer_id: str, stored: bytes) -> CustomerState | None:
        """The customer's state if its entry was encoded to `stored`, taken out (the caller owns it
        now); None otherwise, and any entry of the customer is dropped."""
        entry = self._entries.pop(customer_id, None)
        if entry is None:
            return None
        kept, state = entry
        return state if kept == stored else None

    def keep(self, customer_id: str, stored: bytes, state: CustomerState) -> None:
        """Remember `state`, encoded to `stored`, as the customer's most recent entry."""
        if self._limit == 0:
            return
        entries = self._entries
        entries.pop(customer_id, None)
        entries[customer_id] = (stored, state)
        if len(entries) > self._limit:
            del entries[next(iter(entries))]
