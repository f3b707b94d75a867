"""The durability the project asks of its topics, by replication factor."""

from __future__ import annotations

import pytest

from services.runtime.kafka import min_insync_replicas


@pytest.mark.parametrize(("replicas", "in_sync"), [(1, 1), (2, 1), (3, 2), (4, 3), (5, 4)])
def test_acks_all_needs_every_replica_but_one_and_at_least_two_from_three_on(replicas: int, in_sync: int) -> None:
    assert min_insync_replicas(replicas) == in_sync
