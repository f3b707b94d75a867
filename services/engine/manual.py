"""Manual tags: which commands a group accepts, the blocks a manual removal leaves behind, and their
expiry.

A rule's tag removed by hand in a `both` group is blocked: the rules must not give it back until an
operator clears the block or adds the tag by hand. Blocks live on the customer (`CustomerState.blocked`).
"""

from __future__ import annotations

from schemas.tags import TagCommand
from services.engine.changes import TagChange
from services.engine.errors import CommandRefused
from services.engine.rulebook import CompiledGroup, CompiledTag, RuleBook
from services.engine.state import CustomerState
from services.engine.tagging import emit, why
from services.engine.timeutil import from_us, to_us
from services.engine.windows import EvalContext


def commandable(rulebook: RuleBook, command: TagCommand, now_us: int) -> tuple[CompiledGroup, CompiledTag]:
    """The group and tag a command names, when it may be applied (raises CommandRefused saying why not)."""
    group = rulebook.groups.get(command.group_id)
    if group is None:
        raise CommandRefused(f"unknown tag group {command.group_id!r}")
    if group.spec.disabled:
        raise CommandRefused(f"tag group {group.id!r} is disabled")
    if group.spec.tagging == "auto":
        raise CommandRefused(f"tag group {group.id!r} allows only automatic tagging, not manual {command.action}")
    tag = group.tag(command.tag_id)
    if tag is None:
        raise CommandRefused(f"tag group {group.id!r} has no tag {command.tag_id!r}")
    if command.expires_at is not None and to_us(command.expires_at) <= now_us:
        raise CommandRefused(f"expires_at {command.expires_at.isoformat()} is not in the future")
    return group, tag


def unblock(state: CustomerState, group_id: str, tag_id: str) -> bool:
    """Lift a manual removal's block; whether there was one."""
    blocked = state.blocked
    tags = blocked.get(group_id) if blocked is not None else None
    if blocked is None or tags is None or tag_id not in tags:
        return False
    tags.discard(tag_id)
    if not tags:
        del blocked[group_id]
    if not blocked:
        state.blocked = None
    return True


def forget_blocks(state: CustomerState, rulebook: RuleBook) -> None:
    """Blocks that can no longer be cleared by hand go: of deleted groups and tags, and of groups
    that no longer take both rules and manual tags."""
    if state.blocked is None:
        return
    for group_id, tags in list(state.blocked.items()):
        group = rulebook.groups.get(group_id)
        if group is None or group.spec.tagging != "both":
            tags.clear()
        else:
            tags.intersection_update(tag.id for tag in group.tags)
        if not tags:
            del state.blocked[group_id]
    if not state.blocked:
        state.blocked = None


def expire_manual(state: CustomerState, ctx: EvalContext, rulebook: RuleBook, changes: list[TagChange]) -> set[str]:
    """Remove the manual tags whose expiry has come (source `time`); the groups to evaluate again: the
    rules take the group back, and its dependants may follow."""
    reopened: set[str] = set()
    for group_id in sorted(state.tags):
        for tag_id, (manual, expires) in sorted(state.tags[group_id].items()):
            if manual and expires is not None and expires <= ctx.now_us:
                group = rulebook.groups.get(group_id)
                version = group.spec.version if group is not None else 1
                del state.tags[group_id][tag_id]
                emit(
                    state,
                    ctx,
                    group_id=group_id,
                    version=version,
                    tag_id=tag_id,
                    kind="removed",
                    source="time",
                    cause=None,
                    reason=why(f"manual tag expired at {from_us(expires).isoformat()}"),
                    changes=changes,
                )
                reopened.add(group_id)
                reopened |= rulebook.dependants.get(group_id, frozenset())
    return reopened


def next_expiry(state: CustomerState) -> int | None:
    """The earliest expiry of a manual tag the customer holds (None: none expires)."""
    expiries = [
        expires for tags in state.tags.values() for manual, expires in tags.values() if manual and expires is not None
    ]
    return min(expiries) if expiries else None
