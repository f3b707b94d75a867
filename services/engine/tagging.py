"""One evaluation pass: a customer's groups evaluated in dependency order, each tag flip applied to
the customer's tags and recorded as a change, with its reason.

The engine (`evaluator.py`) decides what to evaluate and when; the routes (`routing.py`) say which
groups and tags that can be; this module is the loop itself. Module-level functions, not methods:
compiled, they are direct C calls.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from schemas.tags import ChangeSource
from services.engine.changes import ConditionOutcome, TagChange
from services.engine.routing import UNCHANGED, Checks, Step
from services.engine.rulebook import CompiledGroup, CompiledTag
from services.engine.state import CustomerState
from services.engine.windows import EvalContext

Reason = tuple[str, tuple[ConditionOutcome, ...]]
"""A change's summary and the conditions (with observed values) that decided it."""


def run(
    state: CustomerState,
    ctx: EvalContext,
    steps: tuple[Step, ...],
    pending: frozenset[str],
    subsets: dict[str, Checks] | None,
    source: ChangeSource,
    cause: str | None,
    changes: list[TagChange],
) -> None:
    """Evaluate the `pending` groups among `steps` (in dependency order); a group whose tags
    change brings its dependants in (they must be among `steps`).

    `subsets` narrows a multi group to the tags whose inputs changed (its other tags' truth cannot
    have moved), and says which of those can only have become truer (+1) or falser (-1): a held
    tag that can only become truer stays, an absent one that can only become falser stays absent.
    For an exclusive group it gives every tag's direction (`_winner`). A group reached through a
    dependency is always evaluated whole."""
    reached: set[str] | None = None  # groups brought in by a dependency (None: none yet)
    for step in steps:
        group_id = step.id
        if group_id not in pending and (reached is None or group_id not in reached):
            continue
        if step.exclusive:
            directed = None
            if step.directed and subsets is not None and (reached is None or group_id not in reached):
                directed = subsets.get(group_id)
            changed = _evaluate_exclusive(state, ctx, step, directed, source, cause, changes)
        else:
            checks = step.checks
            if subsets is not None and (reached is None or group_id not in reached):
                checks = subsets.get(group_id, checks)
            changed = _evaluate_multi(state, ctx, step, checks, source, cause, changes)
        if changed and step.dependants:
            if reached is None:
                reached = set(step.dependants)  # not into `pending`: it may be a shared route's
            else:
                reached |= step.dependants


def _evaluate_multi(
    state: CustomerState,
    ctx: EvalContext,
    step: Step,
    checks: Checks,
    source: ChangeSource,
    cause: str | None,
    changes: list[TagChange],
) -> bool:
    group = step.group
    held = state.tags.get(step.id)
    blocked = state.blocked.get(step.id) if state.blocked is not None else None
    changed = False
    for check in checks:
        tag_id = check.tag_id
        if held is not None and tag_id in held:
            # Held: only a rule that may have become false, on a tag the rules own, can go.
            if check.direction > 0 or not step.auto_remove or held[tag_id][0] or check.matcher.matches(ctx):
                continue
            remove(
                state,
                ctx,
                group=group,
                tag_id=tag_id,
                source=source,
                cause=cause,
                changes=changes,
                reason=unmatched(ctx, check.tag),
            )
            held = state.tags.get(step.id)
        else:
            if check.direction < 0 or (blocked is not None and tag_id in blocked) or not check.matcher.matches(ctx):
                continue
            add(
                state,
                ctx,
                group=group,
                tag_id=tag_id,
                hold=(False, None),
                source=source,
                cause=cause,
                changes=changes,
                reason=matched(ctx, check.tag),
            )
            held = state.tags[step.id]
        changed = True
    return changed


def _evaluate_exclusive(
    state: CustomerState,
    ctx: EvalContext,
    step: Step,
    directed: Checks | None,
    source: ChangeSource,
    cause: str | None,
    changes: list[TagChange],
) -> bool:
    group = step.group
    held = state.tags.get(step.id)
    current = None
    if held:
        current = next(iter(held))
        if held[current][0]:
            return False  # a manual tag pins an exclusive group until removed by hand
    blocked = state.blocked.get(step.id) if state.blocked is not None else None
    winner = None
    if directed is not None and step.auto_remove and (blocked is None or current not in blocked):
        winner = _winner(ctx, directed, current, blocked)
    else:
        for check in step.checks:
            if (blocked is None or check.tag_id not in blocked) and check.matcher.matches(ctx):
                winner = check.tag
                break
    if winner is None:
        if current is None or not step.auto_remove:
            return False
        current_tag = group.tag(current)
        reason = unmatched(ctx, current_tag) if current_tag is not None else why(f"{current} is no longer defined")
        remove(state, ctx, group=group, tag_id=current, source=source, cause=cause, changes=changes, reason=reason)
        return True
    if winner.id == current:
        return False
    if current is not None:
        replaced = matched(ctx, winner)
        remove(
            state,
            ctx,
            group=group,
            tag_id=current,
            source=source,
            cause=cause,
            changes=changes,
            reason=why(f"replaced by {winner.id} (exclusive group)", replaced[1]),
        )
    add(
        state,
        ctx,
        group=group,
        tag_id=winner.id,
        hold=(False, None),
        source=source,
        cause=cause,
        changes=changes,
        reason=matched(ctx, winner),
    )
    return True


def _winner(ctx: EvalContext, checks: Checks, current: str | None, blocked: set[str] | None) -> CompiledTag | None:
    """The first matching tag of an auto-removed exclusive group, knowing how far each tag's truth
    can have moved since the group was last evaluated: then every tag before the held one (all,
    when none is held) was false, and the held one true. A tag before it that can only have become
    falser, or did not move, is still false; a held tag that can only have become truer still wins.
    Tags after the held one are read only when it no longer matches."""
    passed = current is None
    for check in checks:
        tag_id = check.tag_id
        if blocked is not None and tag_id in blocked:
            continue
        direction = check.direction
        if tag_id == current:
            passed = True
            if direction == 1 or direction == UNCHANGED or check.matcher.matches(ctx):
                return check.tag
        elif passed and current is not None:
            if check.matcher.matches(ctx):
                return check.tag
        elif (direction == 1 or direction == 0) and check.matcher.matches(ctx):
            return check.tag
    if not passed:  # the held tag has no rule here: nothing is known of the others, read them all
        for check in checks:
            if (blocked is None or check.tag_id not in blocked) and check.matcher.matches(ctx):
                return check.tag
    return None


def add(
    state: CustomerState,
    ctx: EvalContext,
    *,
    group: CompiledGroup,
    tag_id: str,
    hold: tuple[bool, int | None],
    source: ChangeSource,
    cause: str | None,
    changes: list[TagChange],
    reason: Reason,
) -> None:
    """Give the customer a tag (`hold`: by hand, and until when) and record the change."""
    state.tags.setdefault(group.id, {})[tag_id] = hold
    _emit_in(state, ctx, group, tag_id, "added", source=source, cause=cause, reason=reason, changes=changes)


def remove(
    state: CustomerState,
    ctx: EvalContext,
    *,
    group: CompiledGroup,
    tag_id: str,
    source: ChangeSource,
    cause: str | None,
    changes: list[TagChange],
    reason: Reason,
) -> None:
    """Take a tag the customer holds away and record the change."""
    held = state.tags[group.id]
    del held[tag_id]
    if not held:
        del state.tags[group.id]
    _emit_in(state, ctx, group, tag_id, "removed", source=source, cause=cause, reason=reason, changes=changes)


def _emit_in(
    state: CustomerState,
    ctx: EvalContext,
    group: CompiledGroup,
    tag_id: str,
    kind: Literal["added", "removed"],
    *,
    source: ChangeSource,
    cause: str | None,
    reason: Reason,
    changes: list[TagChange],
) -> None:
    """`emit` for a group of the rule book in force: the change carries its id and version."""
    emit(
        state,
        ctx,
        group_id=group.id,
        version=group.version,
        tag_id=tag_id,
        kind=kind,
        source=source,
        cause=cause,
        reason=reason,
        changes=changes,
    )


def emit(
    state: CustomerState,
    ctx: EvalContext,
    *,
    group_id: str,
    version: int,
    tag_id: str,
    kind: Literal["added", "removed"],
    source: ChangeSource,
    cause: str | None,
    reason: Reason,
    changes: list[TagChange],
) -> None:
    """Record a change already made to the customer's tags: the next `seq`, at the context's instant."""
    state.seq += 1
    changes.append(
        TagChange(
            customer_id=state.customer_id,
            group_id=group_id,
            tag_id=tag_id,
            change=kind,
            source=source,
            summary=reason[0],
            outcomes=reason[1],
            group_version=version,
            caused_by=cause,
            occurred_us=ctx.now_us,
            seq=state.seq,
        )
    )


def why(summary: str, conditions: Iterable[ConditionOutcome] = ()) -> Reason:
    return (summary, tuple(conditions))


def matched(ctx: EvalContext, tag: CompiledTag) -> Reason:
    assert tag.rule is not None
    return (tag.matched_summary, tag.rule.outcomes(ctx))


def unmatched(ctx: EvalContext, tag: CompiledTag) -> Reason:
    if tag.rule is None:
        return (tag.unmatched_summary, ())
    return (tag.unmatched_summary, tag.rule.outcomes(ctx))
