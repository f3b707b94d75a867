"""Per worker: which customers live in which partition, and when each must next be woken.

Rebuilt from the table when partitions are assigned, kept up to date as the agent writes states.
It is what the timers and the definition backfill walk; the table stays the source of truth.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable


class CustomerIndex:
    def __init__(self) -> None:
        self._partition_of: dict[str, int] = {}
        self._members: dict[int, set[str]] = {}
        self._due: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._partition_of)

    def put(self, customer_id: str, partition: int, due_us: int | None) -> None:
        """Record a customer's partition and next wake-up (None: time cannot change anything)."""
        previous = self._partition_of.get(customer_id)
        if previous != partition:
            if previous is not None:
                self._members[previous].discard(customer_id)
            self._partition_of[customer_id] = partition
            self._members.setdefault(partition, set()).add(customer_id)
        if due_us is None:
            self._due.pop(customer_id, None)
        elif self._due.get(customer_id) != due_us:
            self._due[customer_id] = due_us
            heapq.heappush(self._heap, (due_us, customer_id))

    def drop_partitions(self, partitions: Iterable[int]) -> None:
        """Forget customers of partitions this worker no longer owns."""
        for partition in partitions:
            for customer_id in self._members.pop(partition, set()):
                self._partition_of.pop(customer_id, None)
                self._due.pop(customer_id, None)

    def customers(self, partition: int) -> list[str]:
        return sorted(self._members.get(partition, ()))

    def partitions(self) -> set[int]:
        return {partition for partition, members in self._members.items() if members}

    def pop_due(self, now_us: int, active: set[int]) -> list[tuple[str, int]]:
        """Customers due at or before now in active partitions, each once, until `put` again.

        A due customer of a partition not active here (revoked, not yet dropped) is forgotten too: its
        next owner wakes it, and if the partition comes back, recovery puts it again (a wake-up left
        behind here would never be pushed again by an equal `put`)."""
        found = []
        heap = self._heap
        while heap and heap[0][0] <= now_us:
            due_us, customer_id = heapq.heappop(heap)
            if self._due.get(customer_id) != due_us:
                continue  # superseded by a later put
            del self._due[customer_id]
            if self._partition_of.get(customer_id) in active:
                found.append((customer_id, due_us))
        return found

    def pending(self) -> int:
        """Customers with a wake-up scheduled (a gauge for the timer backlog)."""
        return len(self._due)

    def restore(self, customer_id: str, due_us: int) -> None:
        """Put back a wake-up that `pop_due` handed out but that could not be sent, so the next timer run
        tries it again — unless a later `put` already scheduled the customer."""
        if customer_id in self._partition_of and customer_id not in self._due:
            self._due[customer_id] = due_us
            heapq.heappush(self._heap, (due_us, customer_id))
