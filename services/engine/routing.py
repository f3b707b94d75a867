"""Routing: which groups, and which of their tags, an event type or a change of time can touch.

Computed once per rule book, so that per-event work looks routes up instead of deriving them. A
route also says, per tag, the direction an event can move its rule's truth (+1 only truer, -1 only
falser, 0 either way): the evaluation loop (`tagging.py`) skips a held tag that can only become
truer and an absent one that can only become falser.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from schemas.events import Browse, Click, OrderPaid, OrderRefunded, ProfileUpdated, SourceAttributed
from schemas.tags import Metric, Op
from services.engine.conditions import CompiledCondition, CompiledRule, Matcher
from services.engine.rulebook import CompiledGroup, CompiledTag, RuleBook
from services.engine.schedule import AGE_TIME, BROWSE_WINDOW, CLICK_WINDOW, LOYALTY, ORDER_TIME, ORDER_WINDOW, Fired
from services.engine.scores import DecayingScore, WindowedScore
from services.engine.windows import BROWSES, CLICKS

_EVENT_METRICS: Final[dict[type, dict[Metric, int]]] = {
    # How folding one event of each type moves each metric it touches: +1 only up (or unchanged),
    # -1 only down, 0 either way. A window count only grows with an event of its kind, and an order
    # can only make the last order later (days since it smaller) and the first one earlier. Scores
    # are not here: the fold says which moved, and which way (`Routes.scored`).
    OrderPaid: {
        Metric.ORDER_COUNT: 1,
        Metric.TOTAL_SPENT: 1,
        Metric.POINTS_TOTAL: 1,
        Metric.AVG_ORDER_VALUE: 0,
        Metric.DAYS_SINCE_LAST_ORDER: -1,
        Metric.DAYS_SINCE_FIRST_ORDER: 1,
        Metric.BOUGHT_ANY: 1,
        # loyalty.py: a counted order can only fill a period; late history may fill an old one (the
        # trend falls) and may fall between the last two order days (the gap shrinks)
        Metric.LOYALTY: 1,
        Metric.LOYALTY_TREND: 0,
        Metric.CYCLES_SINCE_LAST_ORDER: -1,
        Metric.CYCLES_BETWEEN_LAST_ORDERS: 0,
    },
    OrderRefunded: {
        Metric.ORDER_COUNT: -1,
        Metric.TOTAL_SPENT: -1,
        Metric.POINTS_TOTAL: -1,
        Metric.AVG_ORDER_VALUE: 0,
        Metric.LOYALTY: -1,
        Metric.LOYALTY_TREND: 0,
    },
    Browse: {Metric.BROWSE_COUNT: 1},
    Click: {Metric.CLICK_COUNT: 1},
    # An update may set or clear any attribute (a birth date too); a source event may move either
    # touch, and only adds channels. Neither is an action a score counts.
    ProfileUpdated: {Metric.ATTRIBUTE: 0, Metric.AGE: 0},
    SourceAttributed: {Metric.FIRST_SOURCE: 0, Metric.LAST_SOURCE: 0, Metric.SOURCES_ANY: 1},
}
_ACTIVITY: Final[dict[type, int]] = {Browse: BROWSES, Click: CLICKS}
_MAY_APPEAR: Final = frozenset(
    {
        Metric.DAYS_SINCE_LAST_ORDER,
        Metric.DAYS_SINCE_FIRST_ORDER,
        Metric.CYCLES_SINCE_LAST_ORDER,
        Metric.CYCLES_BETWEEN_LAST_ORDERS,
    }
)
"""Metrics absent until the first order: appearing can only make a condition truer."""
_GROWING_SETS: Final = frozenset({Metric.BOUGHT_ANY, Metric.SOURCES_ANY})
"""Set metrics that events only add to: eq/in only truer, ne/not_in only falser."""
_EVENT_FAMILIES: Final[dict[type, tuple[str, ...]]] = {
    OrderPaid: (ORDER_TIME, ORDER_WINDOW, LOYALTY),
    OrderRefunded: (ORDER_WINDOW, LOYALTY),
    Browse: (BROWSE_WINDOW,),
    Click: (CLICK_WINDOW,),
    ProfileUpdated: (AGE_TIME,),
    SourceAttributed: (),
}


UNCHANGED: Final = 2
"""A `Check.direction`: the event moved nothing the tag's rule reads (exclusive groups list every tag)."""


class Check:
    """One tag to evaluate: the tag and its id, what evaluates its rule, and the direction its truth
    can move (+1 only truer, -1 only falser, 0 either, UNCHANGED; always 0 when evaluated whole). A class
    rather than a tuple: compiled, every item read from a tuple has its type checked, an attribute
    of a native class is read as it is."""

    __slots__ = ("direction", "matcher", "tag", "tag_id")

    def __init__(self, tag: CompiledTag, matcher: Matcher, direction: int) -> None:
        self.tag = tag
        self.tag_id = tag.id
        self.matcher = matcher
        self.direction = direction


Checks = tuple[Check, ...]


class Step:
    """One group as the evaluation loop needs it, resolved once per rule book."""

    __slots__ = ("auto_remove", "checks", "dependants", "directed", "exclusive", "group", "id")

    def __init__(self, group: CompiledGroup, dependants: frozenset[str]) -> None:
        self.id = group.id
        self.group = group
        self.exclusive = group.spec.mode == "exclusive"
        self.auto_remove = group.spec.auto_remove
        self.checks: Checks = tuple(Check(tag, tag.rule.matcher, 0) for tag in group.tags if tag.rule is not None)
        """Every tag with a rule, in group order, with direction 0: the whole group."""
        self.dependants = dependants
        self.directed = (
            self.exclusive
            and self.auto_remove
            and any(tag.rule is not None and _reads_any_score(tag.rule) for tag in group.tags)
        )
        """An exclusive group an action on a score may route to with each tag's direction
        (`Routes.scored`)."""


class Plan:
    """The rule book's evaluated groups as steps, in evaluation order."""

    def __init__(self, rulebook: RuleBook) -> None:
        self.steps = tuple(Step(group, rulebook.dependants[group.id]) for group in rulebook.evaluation_order)
        self.by_id = {step.id: step for step in self.steps}

    def candidates(self, group_ids: frozenset[str]) -> tuple[Step, ...]:
        """The steps these groups and everything depending on them (transitively) may need, in
        evaluation order: a shorter loop than every group for the common small sets."""
        wanted = set(group_ids)
        for step in self.steps:  # dependants come after their dependencies
            if step.id in wanted:
                wanted |= step.dependants
        return tuple(step for step in self.steps if step.id in wanted)


@dataclass(frozen=True)
class Route:
    """What one event type touches: groups to evaluate (narrowed to tags for multi groups, directed
    for exclusive groups reading a moved score), the steps they may reach, and the time families
    whose next change it can move."""

    groups: frozenset[str]
    checks: dict[str, Checks]
    families: tuple[str, ...]
    steps: tuple[Step, ...]
    activity: int = -1
    """BROWSES or CLICKS for the events counted in day buckets of their own, else -1."""
    score_kind: int = -1
    """The kind of scored action events of this type are (`score_state.CLICK`...), -1 when no
    behaviour score counts them (never a profile event). The route itself is for an event that moved
    no score; `Routes.scored` adds the groups that read one."""


@dataclass(frozen=True)
class Timed:
    """The same for one combination of time changes at one instant."""

    groups: frozenset[str]
    steps: tuple[Step, ...]
    checks: dict[str, Checks]


class Routes:
    """Every route of one rule book: per event type, computed up front; per combination of time
    changes, on first sight (few combinations recur endlessly)."""

    def __init__(self, rulebook: RuleBook, incremental: bool) -> None:
        self.plan = Plan(rulebook)
        self.every_group = frozenset(group.id for group in rulebook.evaluation_order)
        self.events = _event_routes(rulebook, self.plan, incremental)
        self._rulebook = rulebook
        self._incremental = incremental
        self._timed: dict[tuple[Fired, ...], Timed] = {}
        self._scored: dict[tuple[type, int], Route] = {}

    def scored(self, kind: type, moved: int) -> Route:
        """The route of an event of type `kind` that moved scores: `moved` as `fold_scores` returns it
        (bit 2i: score i of the book gained points, bit 2i + 1: it lost some). Adds the groups and
        tags that read a moved score, with the direction they can move in."""
        route = self._scored.get((kind, moved))
        if route is None:
            route = self._scored[(kind, moved)] = _scored_route(
                self._rulebook, self.plan, self.events[kind], kind, moved, self._incremental
            )
        return route

    def timed(self, fired: tuple[Fired, ...]) -> Timed:
        """What evaluation a combination of time changes at one instant needs."""
        timed = self._timed.get(fired)
        if timed is None:
            touched, moves = self._rulebook.time_plan.effect(fired)
            if not self._incremental:
                moves = dict.fromkeys(moves, 0)  # re-evaluating in full: no skipping by direction
            groups = frozenset(touched)
            by_id = self.plan.by_id
            checks = {
                group_id: tuple(
                    Check(check.tag, check.matcher, _direction(check.tag, moves))
                    for check in by_id[group_id].checks
                    if check.tag_id in tag_ids
                )
                for group_id, tag_ids in touched.items()
                if not by_id[group_id].exclusive
            }
            timed = self._timed[fired] = Timed(groups, self.plan.candidates(groups), checks)
        return timed


def _event_routes(rulebook: RuleBook, plan: Plan, incremental: bool) -> dict[type, Route]:
    routes = {}
    watched = set(rulebook.time_plan.families)
    for kind, deltas in _EVENT_METRICS.items():
        families = tuple(family for family in _EVENT_FAMILIES[kind] if family in watched)
        activity = _ACTIVITY.get(kind, -1)
        book = rulebook.scores
        score_kind = book.kind_of(kind) if book is not None else -1
        if not incremental:
            every = frozenset(group.id for group in rulebook.evaluation_order)
            routes[kind] = Route(every, {}, families, plan.steps, activity, score_kind)
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
        routes[kind] = Route(groups, checks, families, plan.candidates(groups), activity, score_kind)
    return routes


def _scored_route(rulebook: RuleBook, plan: Plan, base: Route, kind: type, moved: int, incremental: bool) -> Route:
    if not incremental:
        return base  # every group already
    book = rulebook.scores
    assert book is not None
    keys = {score.key for position, score in enumerate(book.scores) if moved >> (2 * position) & 3}
    gained = any(moved >> (2 * position) & 1 for position in range(len(book.scores)))
    lost = any(moved >> (2 * position) & 2 for position in range(len(book.scores)))
    deltas = dict(_EVENT_METRICS[kind])
    deltas[Metric.SCORE] = 0 if gained and lost else 1 if gained else -1
    reading = {
        group.id: tuple(tag for tag in group.tags if tag.rule is not None and _reads_score(tag.rule, keys))
        for group in rulebook.groups.values()
    }
    groups = base.groups | frozenset(group_id for group_id, tags in reading.items() if tags)
    checks: dict[str, Checks] = {}
    for group_id in groups:
        group = rulebook.groups[group_id]
        if group.spec.mode != "multi":
            if reading[group_id] and group.spec.auto_remove:
                checks[group_id] = tuple(
                    Check(tag, tag.rule.matcher, _direction_or(tag, deltas, UNCHANGED))
                    for tag in group.tags
                    if tag.rule is not None
                )
            continue
        wanted = {tag.id for tag in group.tags_reading(_EVENT_METRICS[kind])} | {tag.id for tag in reading[group_id]}
        checks[group_id] = tuple(
            Check(tag, tag.rule.matcher, _direction(tag, deltas))
            for tag in group.tags
            if tag.rule is not None and tag.id in wanted
        )
    return Route(groups, checks, base.families, plan.candidates(groups), base.activity, base.score_kind)


def _reads_any_score(rule: CompiledRule) -> bool:
    return any(isinstance(leaf, (WindowedScore, DecayingScore)) for leaf in rule.leaves())


def _reads_score(rule: CompiledRule, keys: set[str]) -> bool:
    return any(isinstance(leaf, (WindowedScore, DecayingScore)) and leaf.score.key in keys for leaf in rule.leaves())


def _direction(tag: CompiledTag, deltas: Mapping[Metric, int]) -> int:
    """+1 when an event with these metric moves can only make the tag's rule truer, -1 only falser."""
    return _direction_or(tag, deltas, 0)


def _direction_or(tag: CompiledTag, deltas: Mapping[Metric, int], unread: int) -> int:
    """`_direction`, and `unread` when the tag's rule reads none of the moved metrics."""
    assert tag.rule is not None
    found = _rule_direction(tag.rule, deltas)
    return found if found is not None else unread


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
    if spec.op in (Op.GTE, Op.GT) or (spec.metric in _GROWING_SETS and spec.op in (Op.EQ, Op.IN)):
        direction = delta
    elif spec.op in (Op.LTE, Op.LT) or (spec.metric in _GROWING_SETS and spec.op in (Op.NE, Op.NOT_IN)):
        direction = -delta
    else:
        return 0
    if spec.metric in _MAY_APPEAR and direction < 0:
        return 0  # a first order makes the metric present: false (absent) may turn true
    return direction
