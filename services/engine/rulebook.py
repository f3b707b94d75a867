"""Tag definitions, validated as a whole and compiled for evaluation.

A RuleBook knows, for every metric, which groups must be re-evaluated when it changes, when time
alone changes something (its TimePlan), and the order to evaluate groups in so that `has_tag`
conditions see up-to-date tags. It also carries the shop's time zone (a `DayZone`): the rules' days
are the shop's local days.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

from schemas.tags import Condition, Metric, Rule, Tag, TagGroup
from services.engine.aggregates import DEFAULT_HORIZON_DAYS
from services.engine.conditions import (
    CompiledCondition,
    CompiledRule,
    compile_rule,
    referenced_tags,
    share_spans,
    window_day,
)
from services.engine.errors import DefinitionError
from services.engine.profile import BIRTH_DATE
from services.engine.schedule import TimePlan
from services.engine.scores import CompiledScore, ScoreBook, compile_scores
from services.engine.timeutil import DAY_US, date_to_day
from services.engine.zone import UTC_ZONE, DayZone


@dataclass(frozen=True, slots=True, eq=False)
class CompiledTag:
    id: str
    spec: Tag
    rule: CompiledRule | None
    metrics: frozenset[Metric]
    """What the tag's rule reads (has_tag included)."""
    matched_summary: str = field(init=False)
    """The summary of a change made because the rule matches (built once: every change needs one)."""
    unmatched_summary: str = field(init=False)
    """The summary of a change made because the rule no longer matches (or there is none)."""

    def __post_init__(self) -> None:
        name = self.spec.name
        if self.rule is None:
            matched, unmatched = f"{name} has no rule", f"{name} has no rule"
        else:
            how = "all" if self.rule.match_all else "any"
            matched, unmatched = f"matches {name} ({how} of its conditions)", f"no longer matches {name}"
        object.__setattr__(self, "matched_summary", matched)
        object.__setattr__(self, "unmatched_summary", unmatched)


@dataclass(frozen=True, slots=True, eq=False)
class CompiledGroup:
    id: str
    spec: TagGroup
    tags: tuple[CompiledTag, ...]
    metrics: frozenset[Metric]
    depends_on: frozenset[str]
    scores: tuple[CompiledScore, ...] = ()
    version: int = field(init=False)
    """`spec.version`, read once: every change carries it, and a model's attribute is a dict lookup."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "version", self.spec.version)

    @property
    def evaluated(self) -> bool:
        """Rules run for enabled groups that allow automatic tagging."""
        return not self.spec.disabled and self.spec.tagging != "manual"

    def tags_reading(self, metrics: Iterable[Metric]) -> tuple[CompiledTag, ...]:
        wanted = set(metrics)
        return tuple(tag for tag in self.tags if tag.rule is not None and not tag.metrics.isdisjoint(wanted))

    def tag(self, tag_id: str) -> CompiledTag | None:
        for tag in self.tags:
            if tag.id == tag_id:
                return tag
        return None


@dataclass(frozen=True, eq=False)
class RuleBook:
    groups: Mapping[str, CompiledGroup]
    evaluation_order: tuple[CompiledGroup, ...]
    """Groups that rules run for, dependencies first."""
    dependants: Mapping[str, frozenset[str]]
    by_metric: Mapping[Metric, frozenset[str]]
    time_plan: TimePlan
    horizon_days: int = DEFAULT_HORIZON_DAYS
    zone: DayZone = UTC_ZONE
    """The shop's time zone: where its days start."""
    scores: ScoreBook | None = None
    """Every group's behaviour scores, or None when no group defines one."""
    attributes: frozenset[str] = frozenset()
    """The profile attributes some rule reads (`age` reads the birth date): the only ones the fold
    keeps (personal data: docs/tagger.md)."""
    _positions: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def compile(
        cls,
        groups: Iterable[TagGroup],
        *,
        horizon_days: int = DEFAULT_HORIZON_DAYS,
        today: date | None = None,
        zone: DayZone = UTC_ZONE,
    ) -> RuleBook:
        """Validate the definitions as a whole and compile them, for a shop whose days are `zone`'s.

        `today` (the shop's local date: `zone.date_of(now)`) enables the horizon check of absolute
        windows: a window that starts before the oldest retained day cannot be answered. Without it
        only relative windows are checked.
        """
        specs = list(groups)
        problems = _problems(specs, horizon_days, today, zone)
        if problems:
            raise DefinitionError(problems)
        scores_by_group = compile_scores((spec.id, spec.scores or ()) for spec in specs)
        compiled = {spec.id: _compile_group(spec, zone, scores_by_group.get(spec.id, {})) for spec in specs}
        share_spans(leaf for group in compiled.values() for tag in group.tags if tag.rule for leaf in tag.rule.leaves())
        order = _topological(compiled)
        dependants: dict[str, set[str]] = {group_id: set() for group_id in compiled}
        for group in compiled.values():
            for dependency in group.depends_on:
                dependants[dependency].add(group.id)
        evaluated = [group for group in order if group.evaluated]
        by_metric: dict[Metric, set[str]] = {}
        for group in evaluated:
            for metric in group.metrics:
                by_metric.setdefault(metric, set()).add(group.id)
        # a score defined alike in several groups is one (`compile_scores`): folded once
        scores = tuple(dict.fromkeys(score for group in compiled.values() for score in group.scores))
        return cls(
            groups=compiled,
            evaluation_order=tuple(evaluated),
            dependants={key: frozenset(value) for key, value in dependants.items()},
            by_metric={key: frozenset(value) for key, value in by_metric.items()},
            time_plan=TimePlan.build(
                (group.id, tag.id, leaf)
                for group in evaluated
                for tag in group.tags
                if tag.rule is not None
                for leaf in tag.rule.leaves()
            ),
            horizon_days=horizon_days,
            zone=zone,
            scores=ScoreBook(scores) if scores else None,
            attributes=_attributes(specs),
            _positions={group.id: index for index, group in enumerate(evaluated)},
        )

    def groups_reading(self, metrics: Iterable[Metric]) -> frozenset[str]:
        found: set[str] = set()
        for metric in metrics:
            found |= self.by_metric.get(metric, frozenset())
        return frozenset(found)

    def in_evaluation_order(self, group_ids: Iterable[str]) -> list[CompiledGroup]:
        positions = self._positions
        chosen = sorted(positions[group_id] for group_id in group_ids if group_id in positions)
        return [self.evaluation_order[position] for position in chosen]

    def display_order(self) -> list[TagGroup]:
        """Groups as operators see them: by `order`, then id."""
        return sorted((group.spec for group in self.groups.values()), key=lambda spec: (spec.order, spec.id))


def _compile_group(spec: TagGroup, zone: DayZone, scores: dict[str, CompiledScore]) -> CompiledGroup:
    tags = tuple(_compile_tag(tag, zone, scores) for tag in spec.ordered_tags())
    leaves = [leaf for tag in tags if tag.rule is not None for leaf in tag.rule.leaves()]
    depends_on = {group for leaf in leaves if leaf.spec.metric is Metric.HAS_TAG for group, _ in _refs(leaf)}
    return CompiledGroup(
        id=spec.id,
        spec=spec,
        tags=tags,
        metrics=frozenset(leaf.spec.metric for leaf in leaves if leaf.spec.metric is not Metric.HAS_TAG),
        depends_on=frozenset(depends_on),
        scores=tuple(scores.values()),
    )


def _compile_tag(tag: Tag, zone: DayZone, scores: dict[str, CompiledScore]) -> CompiledTag:
    if tag.rule is None:
        return CompiledTag(tag.id, tag, None, frozenset())
    rule = compile_rule(tag.rule, zone, scores)
    return CompiledTag(tag.id, tag, rule, frozenset(leaf.spec.metric for leaf in rule.leaves()))


def _attributes(specs: list[TagGroup]) -> frozenset[str]:
    """The attributes the rules of every group read, disabled ones included: enabling a group again
    finds what arrived meanwhile."""
    found: set[str] = set()
    for spec in specs:
        for tag in spec.tags:
            for condition in _conditions(tag.rule) if tag.rule is not None else []:
                if condition.metric is Metric.ATTRIBUTE and condition.name is not None:
                    found.add(condition.name)
                elif condition.metric is Metric.AGE:
                    found.add(BIRTH_DATE)
    return frozenset(found)


def _refs(leaf: CompiledCondition) -> list[tuple[str, str]]:
    return referenced_tags(leaf.spec)


def _problems(specs: list[TagGroup], horizon_days: int, today: date | None, zone: DayZone) -> list[str]:
    problems: list[str] = []
    tags_by_group: dict[str, set[str]] = {}
    for spec in specs:
        if spec.id in tags_by_group:
            problems.append(f"group id {spec.id!r} is defined twice")
        tags_by_group[spec.id] = {tag.id for tag in spec.tags}
        for score in spec.scores or ():
            if score.decay is not None and score.decay.half_life_us > horizon_days * DAY_US // 10:
                problems.append(
                    f"{spec.id}: score {score.id} half_life {score.decay.half_life} is over a tenth of the "
                    f"{horizon_days}-day horizon the tagger retains (points older than it are dropped)"
                )
    oldest_day = date_to_day(today) - horizon_days + 1 if today is not None else None
    for spec in specs:
        for tag in spec.tags:
            where = f"{spec.id}/{tag.id}"
            for condition in _conditions(tag.rule) if tag.rule is not None else []:
                problems.extend(
                    _condition_problems(where, spec.id, condition, tags_by_group, horizon_days, oldest_day, zone)
                )
    if not problems:
        problems.extend(_cycles(specs))
    return problems


def _condition_problems(
    where: str,
    group_id: str,
    condition: Condition,
    tags_by_group: dict[str, set[str]],
    horizon_days: int,
    oldest_day: int | None,
    zone: DayZone,
) -> list[str]:
    problems: list[str] = []
    if condition.metric is Metric.HAS_TAG:
        for ref_group, ref_tag in referenced_tags(condition):
            if ref_group == group_id:
                problems.append(f"{where}: has_tag {ref_group}/{ref_tag} refers to its own group")
            elif ref_group not in tags_by_group:
                problems.append(f"{where}: has_tag refers to unknown group {ref_group!r}")
            elif ref_tag not in tags_by_group[ref_group]:
                problems.append(f"{where}: has_tag refers to unknown tag {ref_tag!r} in group {ref_group!r}")
    periods = condition.periods
    cycle = condition.cycle_days
    if periods is not None and cycle is not None and cycle * periods > horizon_days:
        problems.append(
            f"{where}: {condition.metric.value} over {periods} periods of {cycle}d looks back {cycle * periods} days, "
            f"beyond the {horizon_days}-day horizon the tagger retains"
        )
    window = condition.window
    if window is not None:
        last = window.last_days
        if last is not None and last > horizon_days:
            problems.append(f"{where}: window last {last}d is beyond the {horizon_days}-day horizon the tagger retains")
        first_day = None
        for name, bound in (("from", window.from_), ("to", window.to)):
            if bound is None:
                continue
            try:
                day = window_day(bound, zone)
            except ValueError as error:
                problems.append(f"{where}: window '{name}' {error}")
                continue
            if name == "from":
                first_day = day
            elif first_day is not None and day <= first_day:
                problems.append(f"{where}: window 'to' ({bound}) must be after 'from' ({window.from_}) in {zone.name}")
        if first_day is not None and oldest_day is not None and first_day < oldest_day:
            problems.append(
                f"{where}: window starts {window.from_}, before the {horizon_days}-day horizon the tagger retains"
            )
    return problems


def _conditions(rule: Rule) -> list[Condition]:
    found: list[Condition] = []
    for child in rule.conditions:
        found.extend(_conditions(child) if isinstance(child, Rule) else [child])
    return found


def _dependencies(spec: TagGroup) -> set[str]:
    return {
        ref_group
        for tag in spec.tags
        if tag.rule is not None
        for condition in _conditions(tag.rule)
        if condition.metric is Metric.HAS_TAG
        for ref_group, _ in referenced_tags(condition)
    }


def _cycles(specs: list[TagGroup]) -> list[str]:
    graph = {spec.id: sorted(_dependencies(spec)) for spec in specs}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []
    problems: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dependency in graph.get(node, []):
            if state.get(dependency) == 1:
                cycle = [*path[path.index(dependency) :], dependency]
                problems.append("tags depend on each other in a cycle: " + " -> ".join(cycle))
            elif dependency not in state:
                visit(dependency)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return problems


def _topological(groups: dict[str, CompiledGroup]) -> list[CompiledGroup]:
    """Dependencies first; ties broken by display order then id, so evaluation is deterministic."""
    remaining = dict(groups)
    done: set[str] = set()
    order: list[CompiledGroup] = []
    while remaining:
        ready = sorted(
            (group for group in remaining.values() if group.depends_on <= done),
            key=lambda group: (group.spec.order, group.id),
        )
        if not ready:
            raise DefinitionError([f"unresolvable dependencies among {sorted(remaining)}"])
        for group in ready:
            order.append(group)
            done.add(group.id)
            del remaining[group.id]
    return order
