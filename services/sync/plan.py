"""Pure: which changes of a batch go out, given the seqs already applied and the current definitions.

A change whose seq is not above the customer's last applied one is a redelivery (the sink crashed
after the external ack but before committing the offsets) and is skipped; a change of a disabled or
deleted group is not synced, but its seq still counts as done.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from schemas.tags import TagChanged, TagGroup
from services.sync.ports import Outbound


@dataclass(slots=True)
class Plan:
    outbound: list[Outbound] = field(default_factory=list)
    done: dict[str, int] = field(default_factory=dict)
    """customer -> the highest seq of the batch, for the customers whose seq the batch raises"""
    skipped: Counter[str] = field(default_factory=Counter)
    """why changes were skipped: duplicate, disabled, unknown_group"""


def plan(changes: Sequence[TagChanged], applied: Mapping[str, int], groups: Mapping[str, TagGroup]) -> Plan:
    result = Plan()
    seen = dict(applied)
    for change in changes:
        if change.seq <= seen.get(change.customer_id, 0):
            result.skipped["duplicate"] += 1
            continue
        seen[change.customer_id] = change.seq
        result.done[change.customer_id] = change.seq
        group = groups.get(change.group_id)
        if group is None:
            result.skipped["unknown_group"] += 1
            continue
        if group.disabled:
            result.skipped["disabled"] += 1
            continue
        tag_name = next((tag.name for tag in group.tags if tag.id == change.tag_id), change.tag_id)
        result.outbound.append(Outbound(change, group, tag_name))
    return result


def synced_groups(groups: Mapping[str, TagGroup]) -> list[TagGroup]:
    """The groups a resync covers: every enabled one, in their display order."""
    return sorted((group for group in groups.values() if not group.disabled), key=lambda group: (group.order, group.id))
