"""The engine: folds a customer's events and commands, re-evaluates what they touched, and says when
time will next matter for that customer.

Everything here is pure: a customer's state goes in, tag changes come out, and "now" is an argument.
The services decide where state lives and when to call `advance` (timers); the engine guarantees that
the result does not depend on how late a timer fires, because `advance` replays every due flip at the
exact instant it was due.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from schemas.events import Browse, Click, OrderPaid, OrderRefunded
from schemas.tags import ChangeSource, Metric, Op, TagCommand
from services.engine.aggregates import Aggregates, CustomerEvent, fold
from services.engine.changes import Change, Outcome
from services.engine.conditions import (
    BROWSES,
    CLICKS,
    CompiledCondition,
    CompiledRule,
    EvalContext,
    Held,
    Matcher,
)
from services.engine.errors import CommandRefused
from services.engine.fingerprint import DefinitionChange, definition_change
from services.engine.rulebook import CompiledGroup, CompiledTag, RuleBook
from services.engine.schedule import BROWSE_WINDOW, CLICK_WINDOW, ORDER_TIME, ORDER_WINDOW, WINDOW_END, Fired
from services.engine.timeutil import from_us, to_us

MANUAL_EXPIRY: Final = "@expiry"
"""The `due` key of manual tags with an expiry."""
ALL_TIME_KEYS: Final = (ORDER_TIME, ORDER_WINDOW, BROWSE_WINDOW, CLICK_WINDOW, WINDOW_END, MANUAL_EXPIRY)

_EVENT_METRICS: Final[dict[type, dict[Metric, int]]] = {
    # How folding one event of each type moves each metric it touches: +1 only up (or unchanged),
    # -1 only down, 0 either way. A window count only grows with an event of its kind, and an order
    # can only make the last order later (days since it smaller) and the first one earlier.
    OrderPaid: {
        Metric.ORDER_COUNT: 1,
        Metric.TOTAL_SPENT: 1,
        Metric.POINTS_TOTAL: 1,
        Metric.AVG_ORDER_VALUE: 0,
        Metric.DAYS_SINCE_LAST_ORDER: -1,
        Metric.DAYS_SINCE_FIRST_ORDER: 1,
        Metric.BOUGHT_ANY: 1,
    },
    OrderRefunded: {
        Metric.ORDER_COUNT: -1,
        Metric.TOTAL_SPENT: -1,
        Metric.POINTS_TOTAL: -1,
        Metric.AVG_ORDER_VALUE: 0,
    },
    Browse: {Metric.BROWSE_COUNT: 1},
    Click: {Metric.CLICK_COUNT: 1},
}
_ACTIVITY: Final[dict[type, int]] = {Browse: BROWSES, Click: CLICKS}
_MAY_APPEAR: Final = frozenset({Metric.DAYS_SINCE_LAST_ORDER, Metric.DAYS_SINCE_FIRST_ORDER})
"""Metrics absent until the first order: appearing can only make a condition truer."""
_EVENT_FAMILIES: Final[dict[type, tuple[str, ...]]] = {
    OrderPaid: (ORDER_TIME, ORDER_WINDOW),
    OrderRefunded: (ORDER_WINDOW,),
    Browse: (BROWSE_WINDOW,),
    Click: (CLICK_WINDOW,),
}


class CustomerState:
    """Everything the tagger keeps for one customer."""

    __slots__ = ("agg", "blocked", "clock_us", "customer_id", "due", "next_at", "seq", "tags")

    def __init__(self, customer_id: str, agg: Aggregates | None = None) -> None:
        self.customer_id = customer_id
        self.agg = Aggregates() if agg is None else agg
        self.tags: Held = {}
        self.blocked: dict[str, set[str]] | None = None
        """Group -> tags removed by hand that the rules must not give back (in `both` groups), until a
        manual `clear` or add; None when there are none (most customers)."""
        self.seq = 0
        self.clock_us: int | None = None
        """The latest instant this customer was evaluated at: a customer's time never runs backwards,
        whatever the skew between the clocks that stamp its events."""
        self.due: dict[str, int] = {}
        """Time family (or MANUAL_EXPIRY) -> the next instant (µs) at which time alone changes an input."""
        self.next_at: int | None = None
        """The earliest instant in `due` (None: nothing due), kept with it: read per event and timer.
        Whatever changes `due` sets it (`earliest(due)`)."""

    def tag_ids(self) -> dict[str, list[str]]:
        return {group: sorted(tags) for group, tags in sorted(self.tags.items()) if tags}


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
        self._plan = _Plan(rulebook)
        self._routes = _routes(rulebook, self._plan, self._incremental)
        self._every_group = frozenset(group.id for group in rulebook.evaluation_order)
        self._timed: dict[tuple[Fired, ...], _Timed] = {}
        """What each combination of time changes means for evaluation, computed on first sight."""

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
    ) -> list[Change]:
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
    ) -> list[Change]:
        """`on_event` with `now` (and optionally the event's `occurred_at`, when the caller has it)
        as epoch microseconds: callers that keep time as integers skip the datetime conversions."""
        now_us = _monotonic(state, now_us)
        changes = self._advance(state, now_us)
        agg = state.agg
        first = agg.last_seen_us is None
        route = self._routes[type(event)]
        buckets = agg.browse if route.activity == BROWSES else agg.click if route.activity == CLICKS else None
        day = 0
        had_day = True
        if buckets is not None and not first:
            if occurred_us is None:
                occurred_us = to_us(event.occurred_at)
            day = self._zone.day(occurred_us)
            had_day = day in buckets
        if not fold(agg, event, self._rulebook.horizon_days, occurred_us, self._zone):
            self.duplicates += 1
            return changes
        ctx = EvalContext(agg, state.tags, now_us, self._zone)
        if first:  # a first event evaluates every group: "never bought" must appear on a first browse
            self._evaluate(state, ctx, self._every_group, source, event.event_id, changes)
            self._reschedule_all(state, ctx)
        else:
            self._run(state, ctx, route.steps, route.groups, route.checks, source, event.event_id, changes)
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
        return changes

    def on_command(self, state: CustomerState, command: TagCommand, now: datetime) -> list[Change]:
        """Apply a manual add/remove. Raises CommandRefused when the group does not allow it."""
        now_us = _monotonic(state, to_us(now))
        group, tag = self._commandable(command, now_us)
        changes = self._advance(state, now_us)
        ctx = EvalContext(state.agg, state.tags, now_us, self._zone)
        held = state.tags.setdefault(group.id, {})
        reevaluate: set[str] = set()
        if command.action == "clear":
            if _unblock(state, group.id, tag.id) and group.evaluated:
                reevaluate.add(group.id)  # the rules may give it back at once
        elif command.action == "add":
            _unblock(state, group.id, tag.id)  # held by hand now: the pin says more than the block
            expires = to_us(command.expires_at) if command.expires_at is not None else None
            if tag.id in held:
                held[tag.id] = (True, expires)  # now pinned by hand; still held, so nothing to announce
            else:
                if group.spec.mode == "exclusive":
                    for other in list(held):
                        self._remove(
                            state,
                            ctx,
                            group,
                            other,
                            command.source,
                            command.command_id,
                            changes,
                            _why(f"replaced by manual tag {tag.id} by {command.actor}"),
                        )
                self._add(
                    state,
                    ctx,
                    group,
                    tag.id,
                    (True, expires),
                    command.source,
                    command.command_id,
                    changes,
                    _why(f"added by {command.actor}"),
                )
                reevaluate |= self._rulebook.dependants[group.id]
        elif tag.id in held:
            was_manual = held[tag.id][0]
            sticks = not was_manual and group.evaluated  # a rule's tag removed by hand: the rules must not undo it
            why = f"removed by {command.actor}"
            if sticks:
                why += "; the rules will not give it back until it is cleared or added by hand"
                if state.blocked is None:
                    state.blocked = {}
                state.blocked.setdefault(group.id, set()).add(tag.id)
            self._remove(state, ctx, group, tag.id, command.source, command.command_id, changes, _why(why))
            reevaluate |= self._rulebook.dependants[group.id]
            if group.evaluated:
                # A manual tag's pin is gone: the rules take the group back. A rule's tag is blocked:
                # in an exclusive group the next matching tag may win.
                reevaluate.add(group.id)
        self._evaluate(state, ctx, reevaluate, "rule", command.command_id, changes)
        self._reschedule(state, ctx, (MANUAL_EXPIRY,))
        return changes

    def advance(self, state: CustomerState, now: datetime) -> list[Change]:
        """Let time pass up to `now`: apply every flip that fell due, each at its own instant."""
        return self._advance(state, _monotonic(state, to_us(now)))

    def advance_us(self, state: CustomerState, now_us: int) -> list[Change]:
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
    ) -> list[Change]:
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

    def backfill(self, state: CustomerState, change: DefinitionChange, now: datetime) -> list[Change]:
        """Bring one existing customer in line with new definitions (source `rule_change`)."""
        now_us = _monotonic(state, to_us(now))
        changes = self._advance(state, now_us)
        ctx = EvalContext(state.agg, state.tags, now_us, self._zone)
        _forget_blocks(state, self._rulebook)
        for group_id, version in sorted(change.deleted.items()):
            for tag_id in sorted(state.tags.get(group_id, {})):
                self._emit(
                    state,
                    ctx,
                    group_id,
                    version,
                    tag_id,
                    "removed",
                    "rule_change",
                    f"definition:{group_id}:deleted",
                    _why(f"group {group_id} was deleted"),
                    changes,
                )
            state.tags.pop(group_id, None)
        for group_id in sorted(change.reevaluate):
            group = self._rulebook.groups[group_id]
            for tag_id in sorted(set(state.tags.get(group_id, {})) - {tag.id for tag in group.tags}):
                self._remove(
                    state,
                    ctx,
                    group,
                    tag_id,
                    "rule_change",
                    _definition_cause(group),
                    changes,
                    _why(f"tag {tag_id} is no longer defined in group {group_id}"),
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

    def _advance(self, state: CustomerState, now_us: int) -> list[Change]:
        changes: list[Change] = []
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
                    reopened = self._expire_manual(state, ctx, changes)
                else:
                    found = plan.fired(key, ctx)
                    if found is not None:
                        fired.append(found)
            if fired or reopened:
                timed = self._timed_for((fired[0],) if len(fired) == 1 else tuple(sorted(fired)))
                if reopened:  # rare (manual expiries): the reopened groups are evaluated whole
                    pending = timed.groups | reopened
                    subsets = {key: value for key, value in timed.checks.items() if key not in reopened}
                    self._run(state, ctx, self._plan.steps, pending, subsets, "time", None, changes)
                else:
                    self._run(state, ctx, timed.steps, timed.groups, timed.checks, "time", None, changes)
            self._reschedule(state, ctx, keys)
        return changes

    def _timed_for(self, fired: tuple[Fired, ...]) -> _Timed:
        """What evaluation a combination of time changes needs: few combinations recur endlessly."""
        timed = self._timed.get(fired)
        if timed is None:
            touched, moves = self._rulebook.time_plan.effect(fired)
            if not self._incremental:
                moves = dict.fromkeys(moves, 0)  # re-evaluating in full: no skipping by direction
            groups = frozenset(touched)
            checks = {
                group_id: tuple(
                    Check(check.tag, check.matcher, _direction(check.tag, moves))
                    for check in self._plan.by_id[group_id].checks
                    if check.tag_id in tag_ids
                )
                for group_id, tag_ids in touched.items()
                if not self._plan.by_id[group_id].exclusive
            }
            timed = self._timed[fired] = _Timed(groups, self._plan.candidates(groups), checks)
        return timed

    def _evaluate(
        self,
        state: CustomerState,
        ctx: EvalContext,
        group_ids: Iterable[str],
        source: ChangeSource,
        cause: str | None,
        changes: list[Change],
    ) -> None:
        """Evaluate these groups whole, in dependency order (and whatever their changes reach)."""
        pending = frozenset(group_ids)
        if pending:
            self._run(state, ctx, self._plan.steps, pending, None, source, cause, changes)

    def _run(
        self,
        state: CustomerState,
        ctx: EvalContext,
        steps: tuple[_Step, ...],
        pending: frozenset[str],
        subsets: dict[str, Checks] | None,
        source: ChangeSource,
        cause: str | None,
        changes: list[Change],
    ) -> None:
        """Evaluate the `pending` groups among `steps` (in dependency order); a group whose tags
        change brings its dependants in (they must be among `steps`).

        `subsets` narrows a multi group to the tags whose inputs changed (its other tags' truth cannot
        have moved), and says which of those can only have become truer (+1) or falser (-1): a held
        tag that can only become truer stays, an absent one that can only become falser stays absent.
        A group reached through a dependency is always evaluated whole."""
        reached: set[str] | None = None  # groups brought in by a dependency (None: none yet)
        for step in steps:
            group_id = step.id
            if group_id not in pending and (reached is None or group_id not in reached):
                continue
            if step.exclusive:
                changed = self._evaluate_exclusive(state, ctx, step, source, cause, changes)
            else:
                checks = step.checks
                if subsets is not None and (reached is None or group_id not in reached):
                    checks = subsets.get(group_id, checks)
                changed = self._evaluate_multi(state, ctx, step, checks, source, cause, changes)
            if changed and step.dependants:
                if reached is None:
                    reached = set(step.dependants)  # not into `pending`: it may be a shared route's
                else:
                    reached |= step.dependants

    def _evaluate_multi(
        self,
        state: CustomerState,
        ctx: EvalContext,
        step: _Step,
        checks: Checks,
        source: ChangeSource,
        cause: str | None,
        changes: list[Change],
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
                self._remove(state, ctx, group, tag_id, source, cause, changes, _unmatched(ctx, check.tag))
                held = state.tags.get(step.id)
            else:
                if check.direction < 0 or (blocked is not None and tag_id in blocked) or not check.matcher.matches(ctx):
                    continue
                self._add(state, ctx, group, tag_id, (False, None), source, cause, changes, _matched(ctx, check.tag))
                held = state.tags[step.id]
            changed = True
        return changed

    def _evaluate_exclusive(
        self,
        state: CustomerState,
        ctx: EvalContext,
        step: _Step,
        source: ChangeSource,
        cause: str | None,
        changes: list[Change],
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
        for check in step.checks:
            if (blocked is None or check.tag_id not in blocked) and check.matcher.matches(ctx):
                winner = check.tag
                break
        if winner is None:
            if current is None or not step.auto_remove:
                return False
            current_tag = group.tag(current)
            reason = (
                _unmatched(ctx, current_tag) if current_tag is not None else _why(f"{current} is no longer defined")
            )
            self._remove(state, ctx, group, current, source, cause, changes, reason)
            return True
        if winner.id == current:
            return False
        if current is not None:
            replaced = _matched(ctx, winner)
            self._remove(
                state,
                ctx,
                group,
                current,
                source,
                cause,
                changes,
                _why(f"replaced by {winner.id} (exclusive group)", replaced[1]),
            )
        self._add(state, ctx, group, winner.id, (False, None), source, cause, changes, _matched(ctx, winner))
        return True

    def _expire_manual(self, state: CustomerState, ctx: EvalContext, changes: list[Change]) -> set[str]:
        reopened: set[str] = set()
        for group_id in sorted(state.tags):
            for tag_id, (manual, expires) in sorted(state.tags[group_id].items()):
                if manual and expires is not None and expires <= ctx.now_us:
                    group = self._rulebook.groups.get(group_id)
                    version = group.spec.version if group is not None else 1
                    del state.tags[group_id][tag_id]
                    self._emit(
                        state,
                        ctx,
                        group_id,
                        version,
                        tag_id,
                        "removed",
                        "time",
                        None,
                        _why(f"manual tag expired at {from_us(expires).isoformat()}"),
                        changes,
                    )
                    reopened.add(group_id)
                    reopened |= self._rulebook.dependants.get(group_id, frozenset())
        return reopened

    def _reschedule(self, state: CustomerState, ctx: EvalContext, keys: Iterable[str]) -> None:
        plan = self._rulebook.time_plan
        for key in keys:
            if key == MANUAL_EXPIRY:
                expiries = [
                    expires
                    for tags in state.tags.values()
                    for manual, expires in tags.values()
                    if manual and expires is not None
                ]
                at = min(expiries) if expiries else None
            else:
                at = plan.next_change(key, ctx)
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

    # -- changes ----------------------------------------------------------------------------------

    def _add(
        self,
        state: CustomerState,
        ctx: EvalContext,
        group: CompiledGroup,
        tag_id: str,
        hold: tuple[bool, int | None],
        source: ChangeSource,
        cause: str | None,
        changes: list[Change],
        reason: Reason,
    ) -> None:
        state.tags.setdefault(group.id, {})[tag_id] = hold
        self._emit(state, ctx, group.id, group.version, tag_id, "added", source, cause, reason, changes)

    def _remove(
        self,
        state: CustomerState,
        ctx: EvalContext,
        group: CompiledGroup,
        tag_id: str,
        source: ChangeSource,
        cause: str | None,
        changes: list[Change],
        reason: Reason,
    ) -> None:
        held = state.tags[group.id]
        del held[tag_id]
        if not held:
            del state.tags[group.id]
        self._emit(state, ctx, group.id, group.version, tag_id, "removed", source, cause, reason, changes)

    @staticmethod
    def _emit(
        state: CustomerState,
        ctx: EvalContext,
        group_id: str,
        version: int,
        tag_id: str,
        change: Literal["added", "removed"],
        source: ChangeSource,
        cause: str | None,
        reason: Reason,
        changes: list[Change],
    ) -> None:
        state.seq += 1
        changes.append(
            Change(
                state.customer_id,
                group_id,
                tag_id,
                change,
                source,
                reason[0],
                reason[1],
                version,
                cause,
                ctx.now_us,
                state.seq,
            )
        )

    def _commandable(self, command: TagCommand, now_us: int) -> tuple[CompiledGroup, CompiledTag]:
        group = self._rulebook.groups.get(command.group_id)
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


def _unblock(state: CustomerState, group_id: str, tag_id: str) -> bool:
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


def _forget_blocks(state: CustomerState, rulebook: RuleBook) -> None:
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


class Check:
    """One tag to evaluate: the tag and its id, what evaluates its rule, and the direction its truth
    can move (+1 only truer, -1 only falser, 0 either; always 0 when evaluated whole). A class
    rather than a tuple: compiled, every item read from a tuple has its type checked, an attribute
    of a native class is read as it is."""

    __slots__ = ("direction", "matcher", "tag", "tag_id")

    def __init__(self, tag: CompiledTag, matcher: Matcher, direction: int) -> None:
        self.tag = tag
        self.tag_id = tag.id
        self.matcher = matcher
        self.direction = direction


Checks = tuple[Check, ...]


class _Step:
    """One group as the evaluation loop needs it, resolved once per rule book."""

    __slots__ = ("auto_remove", "checks", "dependants", "exclusive", "group", "id")

    def __init__(self, group: CompiledGroup, dependants: frozenset[str]) -> None:
        self.id = group.id
        self.group = group
        self.exclusive = group.spec.mode == "exclusive"
        self.auto_remove = group.spec.auto_remove
        self.checks: Checks = tuple(Check(tag, tag.rule.matcher, 0) for tag in group.tags if tag.rule is not None)
        """Every tag with a rule, in group order, with direction 0: the whole group."""
        self.dependants = dependants


class _Plan:
    """The rule book's evaluated groups as steps, in evaluation order."""

    def __init__(self, rulebook: RuleBook) -> None:
        self.steps = tuple(_Step(group, rulebook.dependants[group.id]) for group in rulebook.evaluation_order)
        self.by_id = {step.id: step for step in self.steps}

    def candidates(self, group_ids: frozenset[str]) -> tuple[_Step, ...]:
        """The steps these groups and everything depending on them (transitively) may need, in
        evaluation order: a shorter loop than every group for the common small sets."""
        wanted = set(group_ids)
        for step in self.steps:  # dependants come after their dependencies
            if step.id in wanted:
                wanted |= step.dependants
        return tuple(step for step in self.steps if step.id in wanted)


@dataclass(frozen=True)
class _Route:
    """What one event type touches: groups to evaluate (narrowed to tags for multi groups), the steps
    they may reach, and the time families whose next change it can move."""

    groups: frozenset[str]
    checks: dict[str, Checks]
    families: tuple[str, ...]
    steps: tuple[_Step, ...]
    activity: int = -1
    """BROWSES or CLICKS for the events counted in day buckets of their own, else -1."""


@dataclass(frozen=True)
class _Timed:
    """The same for one combination of time changes at one instant."""

    groups: frozenset[str]
    steps: tuple[_Step, ...]
    checks: dict[str, Checks]


def _routes(rulebook: RuleBook, plan: _Plan, incremental: bool) -> dict[type, _Route]:
    routes = {}
    watched = set(rulebook.time_plan.families)
    for kind, deltas in _EVENT_METRICS.items():
        families = tuple(family for family in _EVENT_FAMILIES[kind] if family in watched)
        activity = _ACTIVITY.get(kind, -1)
        if not incremental:
            every = frozenset(group.id for group in rulebook.evaluation_order)
            routes[kind] = _Route(every, {}, families, plan.steps, activity)
            continue
        groups = rulebook.groups_reading(deltas)
        checks = {
            group_id: tuple(
                Check(tag, tag.rule.matcher, _direction(tag, deltas))
                for tag in rulebook.groups[group_id].tags_reading(deltas)
                if tag.rule is not None
            )
            for group_id in groups
            if rulebook.groups[group_id].spec.mode == "multi"
        }
        routes[kind] = _Route(groups, checks, families, plan.candidates(groups), activity)
    return routes


def _direction(tag: CompiledTag, deltas: Mapping[Metric, int]) -> int:
    """+1 when an event with these metric moves can only make the tag's rule truer, -1 only falser."""
    assert tag.rule is not None
    found = _rule_direction(tag.rule, deltas)
    return found if found is not None else 0


def _rule_direction(rule: CompiledRule, deltas: Mapping[Metric, int]) -> int | None:
    """None when the rule reads none of the moved metrics; all/any keep a direction their parts share."""
    directions = set()
    for child in rule.children:
        found = _rule_direction(child, deltas) if isinstance(child, CompiledRule) else _leaf_direction(child, deltas)
        if found is not None:
            directions.add(found)
    if not directions:
        return None
    return directions.pop() if len(directions) == 1 else 0


def _leaf_direction(condition: CompiledCondition, deltas: Mapping[Metric, int]) -> int | None:
    spec = condition.spec
    delta = deltas.get(spec.metric)
    if delta is None:
        return None
    if spec.op in (Op.GTE, Op.GT) or (spec.metric is Metric.BOUGHT_ANY and spec.op in (Op.EQ, Op.IN)):
        direction = delta
    elif spec.op in (Op.LTE, Op.LT) or (spec.metric is Metric.BOUGHT_ANY and spec.op in (Op.NE, Op.NOT_IN)):
        direction = -delta
    else:
        return 0
    if spec.metric in _MAY_APPEAR and direction < 0:
        return 0  # a first order makes the metric present: false (absent) may turn true
    return direction


def next_due(state: CustomerState) -> int | None:
    """The earliest instant in `state.due` (None: nothing is due)."""
    return state.next_at


def earliest(due: dict[str, int]) -> int | None:
    """The earliest instant in `due`. A loop rather than `min()`: compiled, builtin min() is a
    generic call, and `due` holds at most five instants. (`found` is a plain int beside a flag, not
    an optional int: compiled, an optional int is a boxed object.)"""
    ok = False
    found = 0
    for at in due.values():
        if not ok or at < found:
            found = at
            ok = True
    return found if ok else None


def _monotonic(state: CustomerState, now_us: int) -> int:
    if state.clock_us is not None and now_us < state.clock_us:
        return state.clock_us
    state.clock_us = now_us
    return now_us


def _definition_cause(group: CompiledGroup) -> str:
    return f"definition:{group.id}:v{group.spec.version}"


Reason = tuple[str, tuple[Outcome, ...]]
"""A change's summary and the conditions (with observed values) that decided it."""


def _why(summary: str, conditions: Iterable[Outcome] = ()) -> Reason:
    return (summary, tuple(conditions))


def _matched(ctx: EvalContext, tag: CompiledTag) -> Reason:
    assert tag.rule is not None
    return (tag.matched_summary, tag.rule.outcomes(ctx))


def _unmatched(ctx: EvalContext, tag: CompiledTag) -> Reason:
    if tag.rule is None:
        return (tag.unmatched_summary, ())
    return (tag.unmatched_summary, tag.rule.outcomes(ctx))
