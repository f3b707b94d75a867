"""The engine: folds a customer's events and commands, re-evaluates what they touched, and says when
time will next matter for that customer.

Everything here is pure: a customer's state goes in, tag changes come out, and "now" is an argument.
The services decide where state lives and when to call `advance` (timers); the engine guarantees that
the result does not depend on how late a timer fires, because `advance` replays every due flip at the
exact instant it was due.

This module decides what to evaluate and when. The pieces it uses: `state.py` (what is kept per
customer), `aggregates.py` (the fold), `routing.py` (which groups an event or a time change can
touch), `tagging.py` (the evaluation pass and the changes it records), `manual.py` (commands,
blocks and expiries), `schedule.py` (when time next matters), `score_state.py` (behaviour scores'
points, folded beside the aggregates), and beneath the rules `conditions.py`, `windows.py`,
`comparisons.py`, `scores.py` and `decay.py`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Final

from schemas.tags import ChangeSource, TagCommand
from services.engine.aggregates import CustomerEvent, fold
from services.engine.changes import TagChange
from services.engine.fingerprint import DefinitionChange, definition_change
from services.engine.manual import commandable, expire_manual, forget_blocks, next_expiry, unblock
from services.engine.routing import Routes
from services.engine.rulebook import CompiledGroup, RuleBook
from services.engine.schedule import (
    AGE_TIME,
    BROWSE_WINDOW,
    CLICK_WINDOW,
    LOYALTY,
    ORDER_TIME,
    ORDER_WINDOW,
    WINDOW_END,
    Fired,
)
from services.engine.score_state import adopt, fold_scores
from services.engine.scores import SCORE_TIME, SCORE_WINDOW
from services.engine.state import CustomerState, earliest
from services.engine.tagging import add, emit, remove, run, why
from services.engine.timeutil import from_us, to_us
from services.engine.windows import BROWSES, CLICKS, EvalContext

MANUAL_EXPIRY: Final = "@expiry"
"""The `due` key of manual tags with an expiry."""
ALL_TIME_KEYS: Final = (
    ORDER_TIME,
    ORDER_WINDOW,
    BROWSE_WINDOW,
    CLICK_WINDOW,
    WINDOW_END,
    AGE_TIME,
    LOYALTY,
    SCORE_TIME,
    SCORE_WINDOW,
    MANUAL_EXPIRY,
)


class Engine:
    def __init__(self, rulebook: RuleBook, *, incremental: bool = True) -> None:
        self._incremental = incremental
        self.duplicates = 0
        """Events ignored because this customer had already seen them."""
        self._compile(rulebook)

    def _compile(self, rulebook: RuleBook) -> None:
        """Precompute everything per-event work can look up instead of derive."""
        self._rulebook = rulebook
        self._zone = rulebook.zone
        self._routes = Routes(rulebook, self._incremental)
        self._plan = self._routes.plan
        self._scores = rulebook.scores

    @property
    def rulebook(self) -> RuleBook:
        return self._rulebook

    def load(self, rulebook: RuleBook) -> DefinitionChange:
        """Switch to new definitions; the returned change is what `backfill` applies to each customer."""
        change = definition_change(self._rulebook, rulebook)
        self._compile(rulebook)
        return change

    def new_state(self, customer_id: str) -> CustomerState:
        return CustomerState(customer_id)

    def on_event(
        self, state: CustomerState, event: CustomerEvent, now: datetime, source: ChangeSource = "rule"
    ) -> list[TagChange]:
        """Fold one event and re-evaluate the groups whose metrics it changed (all groups when not
        incremental). Flips that fell due before `now` are applied first, at their own instants.

        `now` is the clock, never the event's own date (which only picks the day it counts for);
        the changes the event causes carry `source` (`import` for history: see arrival.py)."""
        return self.on_event_us(state, event, to_us(now), source=source)

    def on_event_us(
        self,
        state: CustomerState,
        event: CustomerEvent,
        now_us: int,
        occurred_us: int | None = None,
        source: ChangeSource = "rule",
    ) -> list[TagChange]:
        """`on_event` with `now` (and optionally the event's `occurred_at`, when the caller has it)
        as epoch microseconds: callers that keep time as integers skip the datetime conversions."""
        now_us = _monotonic(state, now_us)
        changes = self._advance(state, now_us)
        agg = state.agg
        first = agg.last_seen_us is None
        route = self._routes.events[type(event)]
        buckets = agg.browse if route.activity == BROWSES else agg.click if route.activity == CLICKS else None
        day = 0
        had_day = True
        if buckets is not None and not first:
            if occurred_us is None:
                occurred_us = to_us(event.occurred_at)
            day = self._zone.day(occurred_us)
            had_day = day in buckets
        scores = self._scores if route.score_kind >= 0 else None  # profile events are no scored action
        counted_before = 0
        if scores is not None:
            if occurred_us is None:
                occurred_us = to_us(event.occurred_at)
            day = self._zone.day(occurred_us)
            counted_before = buckets.get(day, 0) if buckets is not None else 0
        if not fold(agg, event, self._rulebook.horizon_days, occurred_us, self._zone, self._rulebook.attributes):
            self.duplicates += 1
            return changes
        moved = 0
        rescheduled = 0
        if scores is not None:
            # an action counts in the scores exactly when the aggregates counted it (not a browse or
            # click past the horizon or over the day's cap): their de-duplication is the scores' too
            if buckets is None or buckets.get(day, 0) > counted_before:
                moved, rescheduled = fold_scores(
                    agg, scores, route.score_kind, event, day, now_us, self._zone, self._rulebook.horizon_days
                )
            if moved:
                route = self._routes.scored(type(event), moved)
        elif agg.scores is not None and self._scores is None:
            agg.scores = None  # no score is defined any more
        ctx = EvalContext(agg, state.tags, now_us, self._zone)
        if first:  # a first event evaluates every group: "never bought" must appear on a first browse
            self._evaluate(state, ctx, self._routes.every_group, source, event.event_id, changes)
            self._reschedule_all(state, ctx)
        else:
            run(state, ctx, route.steps, route.groups, route.checks, source, event.event_id, changes)
            if buckets is None:
                self._reschedule(state, ctx, route.families)
            elif not had_day and route.families and day in buckets:
                # A browse or click changes when its family next changes only by adding a day bucket
                # (counts do not move boundaries): the earlier of the family's next change and the new
                # bucket's, no scan of the others. (Buckets pruned past the horizon can only remove a
                # change point: at worst a wake-up that finds nothing, never a flip missed.)
                family = route.families[0]
                at = self._rulebook.time_plan.next_change_for_day(family, day, ctx)
                if at is not None:
                    current = state.due.get(family)
                    if current is None or at < current:
                        state.due[family] = at
                        if state.next_at is None or at < state.next_at:
                            state.next_at = at
        if rescheduled and not first:
            plan = self._rulebook.time_plan.scores
            if plan is not None:
                plan.reschedule(state, ctx, rescheduled, day)
        return changes

    def on_command(self, state: CustomerState, command: TagCommand, now: datetime) -> list[TagChange]:
        """Apply a manual add/remove. Raises CommandRefused when the group does not allow it."""
        now_us = _monotonic(state, to_us(now))
        group, tag = commandable(self._rulebook, command, now_us)
        changes = self._advance(state, now_us)
        ctx = EvalContext(state.agg, state.tags, now_us, self._zone)
        held = state.tags.setdefault(group.id, {})
        reevaluate: set[str] = set()
        if command.action == "clear":
            if unblock(state, group.id, tag.id) and group.evaluated:
                reevaluate.add(group.id)  # the rules may give it back at once
        elif command.action == "add":
            unblock(state, group.id, tag.id)  # held by hand now: the pin says more than the block
            expires = to_us(command.expires_at) if command.expires_at is not None else None
            if tag.id in held:
                held[tag.id] = (True, expires)  # now pinned by hand; still held, so nothing to announce
            else:
                if group.spec.mode == "exclusive":
                    for other in list(held):
                        remove(
                            state,
                            ctx,
                            group=group,
                            tag_id=other,
                            source=command.source,
                            cause=command.command_id,
                            changes=changes,
                            reason=why(f"replaced by manual tag {tag.id} by {command.actor}"),
                        )
                add(
                    state,
                    ctx,
                    group=group,
                    tag_id=tag.id,
                    hold=(True, expires),
                    source=command.source,
                    cause=command.command_id,
                    changes=changes,
                    reason=why(f"added by {command.actor}"),
                )
                reevaluate |= self._rulebook.dependants[group.id]
        elif tag.id in held:
            was_manual = held[tag.id][0]
            sticks = not was_manual and group.evaluated  # a rule's tag removed by hand: the rules must not undo it
            summary = f"removed by {command.actor}"
            if sticks:
                summary += "; the rules will not give it back until it is cleared or added by hand"
                if state.blocked is None:
                    state.blocked = {}
                state.blocked.setdefault(group.id, set()).add(tag.id)
            remove(
                state,
                ctx,
                group=group,
                tag_id=tag.id,
                source=command.source,
                cause=command.command_id,
                changes=changes,
                reason=why(summary),
            )
            reevaluate |= self._rulebook.dependants[group.id]
            if group.evaluated:
                # A manual tag's pin is gone: the rules take the group back. A rule's tag is blocked:
                # in an exclusive group the next matching tag may win.
                reevaluate.add(group.id)
        self._evaluate(state, ctx, reevaluate, "rule", command.command_id, changes)
        self._reschedule(state, ctx, (MANUAL_EXPIRY,))
        return changes

    def advance(self, state: CustomerState, now: datetime) -> list[TagChange]:
        """Let time pass up to `now`: apply every flip that fell due, each at its own instant."""
        return self._advance(state, _monotonic(state, to_us(now)))

    def advance_us(self, state: CustomerState, now_us: int) -> list[TagChange]:
        """`advance` with `now` as epoch microseconds."""
        return self._advance(state, _monotonic(state, now_us))

    def evaluate(
        self,
        state: CustomerState,
        now: datetime,
        groups: Iterable[str] | None = None,
        *,
        source: ChangeSource = "rule_change",
        caused_by: str | None = None,
    ) -> list[TagChange]:
        """Advance to `now`, then re-evaluate `groups` (every evaluated group when None) from scratch."""
        now_us = _monotonic(state, to_us(now))
        changes = self._advance(state, now_us)
        chosen = (
            frozenset(group.id for group in self._rulebook.evaluation_order) if groups is None else frozenset(groups)
        )
        ctx = EvalContext(state.agg, state.tags, now_us, self._zone)
        self._evaluate(state, ctx, chosen, source, caused_by, changes)
        self._reschedule_all(state, ctx)
        return changes

    def backfill(self, state: CustomerState, change: DefinitionChange, now: datetime) -> list[TagChange]:
        """Bring one existing customer in line with new definitions (source `rule_change`)."""
        now_us = _monotonic(state, to_us(now))
        changes = self._advance(state, now_us)
        ctx = EvalContext(state.agg, state.tags, now_us, self._zone)
        forget_blocks(state, self._rulebook)
        if state.agg.profile is not None:  # attributes no rule reads any more are not kept
            state.agg.profile.forget(self._rulebook.attributes)
        for group_id, version in sorted(change.deleted.items()):
            for tag_id in sorted(state.tags.get(group_id, {})):
                emit(
                    state,
                    ctx,
                    group_id=group_id,
                    version=version,
                    tag_id=tag_id,
                    kind="removed",
                    source="rule_change",
                    cause=f"definition:{group_id}:deleted",
                    reason=why(f"group {group_id} was deleted"),
                    changes=changes,
                )
            state.tags.pop(group_id, None)
        for group_id in sorted(change.reevaluate):
            group = self._rulebook.groups[group_id]
            for tag_id in sorted(set(state.tags.get(group_id, {})) - {tag.id for tag in group.tags}):
                remove(
                    state,
                    ctx,
                    group=group,
                    tag_id=tag_id,
                    source="rule_change",
                    cause=_definition_cause(group),
                    changes=changes,
                    reason=why(f"tag {tag_id} is no longer defined in group {group_id}"),
                )
        for group in self._rulebook.in_evaluation_order(change.reevaluate):
            pending = {group.id}
            self._evaluate(state, ctx, pending, "rule_change", _definition_cause(group), changes)
        self._reschedule_all(state, ctx)
        return changes

    def next_check_at(self, state: CustomerState) -> datetime | None:
        """When this customer must next be re-evaluated though no event arrives (None: never)."""
        at = next_due(state)
        return from_us(at) if at is not None else None

    # -- evaluation -------------------------------------------------------------------------------

    def _advance(self, state: CustomerState, now_us: int) -> list[TagChange]:
        changes: list[TagChange] = []
        scores = state.agg.scores
        if scores is not None and self._scores is not None and scores.book is not self._scores:
            adopt(scores, self._scores)  # before anything reads them: stored keys may predate these definitions
        due = state.due
        plan = self._rulebook.time_plan
        while due:  # nothing due (every event when no rule reads time): not even a call
            at = next_due(state)
            if at is None or at > now_us:
                break
            keys = [key for key, when in due.items() if when <= at]
            ctx = EvalContext(state.agg, state.tags, at, self._zone)
            fired: list[Fired] = []
            reopened: set[str] | None = None
            for key in keys:
                if key == MANUAL_EXPIRY:
                    reopened = expire_manual(state, ctx, self._rulebook, changes)
                else:
                    found = plan.fired(key, ctx)
                    if found is not None:
                        fired.append(found)
            if fired or reopened:
                timed = self._routes.timed((fired[0],) if len(fired) == 1 else tuple(sorted(fired)))
                if reopened:  # rare (manual expiries): the reopened groups are evaluated whole
                    pending = timed.groups | reopened
                    subsets = {key: value for key, value in timed.checks.items() if key not in reopened}
                    run(state, ctx, self._plan.steps, pending, subsets, "time", None, changes)
                else:
                    run(state, ctx, timed.steps, timed.groups, timed.checks, "time", None, changes)
            self._reschedule(state, ctx, keys)
        return changes

    def _evaluate(
        self,
        state: CustomerState,
        ctx: EvalContext,
        group_ids: Iterable[str],
        source: ChangeSource,
        cause: str | None,
        changes: list[TagChange],
    ) -> None:
        """Evaluate these groups whole, in dependency order (and whatever their changes reach)."""
        pending = frozenset(group_ids)
        if pending:
            run(state, ctx, self._plan.steps, pending, None, source, cause, changes)

    def _reschedule(self, state: CustomerState, ctx: EvalContext, keys: Iterable[str]) -> None:
        plan = self._rulebook.time_plan
        for key in keys:
            at = next_expiry(state) if key == MANUAL_EXPIRY else plan.next_change(key, ctx)
            if at is None:
                state.due.pop(key, None)
            else:
                state.due[key] = at
        state.next_at = earliest(state.due)

    def _reschedule_all(self, state: CustomerState, ctx: EvalContext) -> None:
        stale = [key for key in state.due if key not in ALL_TIME_KEYS]
        for key in stale:
            del state.due[key]
        self._reschedule(state, ctx, ALL_TIME_KEYS)


def next_due(state: CustomerState) -> int | None:
    """The earliest instant in `state.due` (None: nothing is due)."""
    return state.next_at


def _monotonic(state: CustomerState, now_us: int) -> int:
    if state.clock_us is not None and now_us < state.clock_us:
        return state.clock_us
    state.clock_us = now_us
    return now_us


def _definition_cause(group: CompiledGroup) -> str:
    return f"definition:{group.id}:v{group.spec.version}"
