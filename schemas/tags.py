"""Tag definitions (groups, tags, rules, conditions), tag changes and manual tag commands."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import AwareDatetime, Discriminator, Field, WithJsonSchema, model_validator
from pydantic import Tag as UnionTag

from schemas.attributes import PROFILE_TEXT_METRICS, profile_text
from schemas.common import SCHEMA_VERSION, Contract, ExternalId, Identifier, Text, UtcDatetime, check_safe
from schemas.events import ATTRIBUTE_NAME_PATTERN
from schemas.excerpt import excerpt
from schemas.limits import (
    MAX_AGE,
    MAX_CONDITIONS,
    MAX_COUNT,
    MAX_DAYS,
    MAX_GROUPS,
    MAX_ID_LENGTH,
    MAX_INSTANT,
    MAX_MONEY,
    MAX_NUMBER_TEXT,
    MAX_ORDER,
    MAX_PERIODS,
    MAX_RULE_DEPTH,
    MAX_SCORE,
    MAX_SCORES,
    MAX_SEQ,
    MAX_TAGS,
    MAX_VALUES,
    MAX_VERSION,
    MIN_INSTANT,
    SCORE_PLACES,
)
from schemas.scores import Score


class Metric(StrEnum):
    ORDER_COUNT = "order_count"
    TOTAL_SPENT = "total_spent"
    AVG_ORDER_VALUE = "avg_order_value"
    DAYS_SINCE_LAST_ORDER = "days_since_last_order"
    DAYS_SINCE_FIRST_ORDER = "days_since_first_order"
    POINTS_TOTAL = "points_total"
    BOUGHT_ANY = "bought_any"
    BROWSE_COUNT = "browse_count"
    CLICK_COUNT = "click_count"
    HAS_TAG = "has_tag"
    LOYALTY = "loyalty"
    LOYALTY_TREND = "loyalty_trend"
    CYCLES_SINCE_LAST_ORDER = "cycles_since_last_order"
    CYCLES_BETWEEN_LAST_ORDERS = "cycles_between_last_orders"
    ATTRIBUTE = "attribute"
    AGE = "age"
    FIRST_SOURCE = "first_source"
    LAST_SOURCE = "last_source"
    SOURCES_ANY = "sources_any"
    SCORE = "score"


class Op(StrEnum):
    EQ = "eq"
    NE = "ne"
    LT = "lt"
    LTE = "lte"
    GT = "gt"
    GTE = "gte"
    BETWEEN = "between"
    IN = "in"
    NOT_IN = "not_in"


NUMERIC_METRICS = frozenset(
    {
        Metric.ORDER_COUNT,
        Metric.TOTAL_SPENT,
        Metric.AVG_ORDER_VALUE,
        Metric.DAYS_SINCE_LAST_ORDER,
        Metric.DAYS_SINCE_FIRST_ORDER,
        Metric.POINTS_TOTAL,
        Metric.BROWSE_COUNT,
        Metric.CLICK_COUNT,
        Metric.LOYALTY,
        Metric.LOYALTY_TREND,
        Metric.CYCLES_SINCE_LAST_ORDER,
        Metric.CYCLES_BETWEEN_LAST_ORDERS,
        Metric.AGE,
        Metric.SCORE,
    }
)
MONEY_METRICS = frozenset({Metric.TOTAL_SPENT, Metric.AVG_ORDER_VALUE})
DAY_METRICS = frozenset({Metric.DAYS_SINCE_LAST_ORDER, Metric.DAYS_SINCE_FIRST_ORDER})
WINDOWED_METRICS = frozenset({Metric.ORDER_COUNT, Metric.BROWSE_COUNT, Metric.CLICK_COUNT, Metric.SCORE})
WINDOW_REQUIRED = frozenset({Metric.BROWSE_COUNT, Metric.CLICK_COUNT})
SET_METRICS = frozenset({Metric.BOUGHT_ANY, Metric.HAS_TAG})
SET_OPS = frozenset({Op.EQ, Op.NE, Op.IN, Op.NOT_IN})
PERIOD_METRICS = frozenset({Metric.LOYALTY, Metric.LOYALTY_TREND})
"""Metrics over the last `periods` periods of `cycle` days (services/engine/loyalty.py)."""
CYCLE_METRICS = PERIOD_METRICS | {Metric.CYCLES_SINCE_LAST_ORDER, Metric.CYCLES_BETWEEN_LAST_ORDERS}
"""Metrics counted in the shop's consumption cycle: they need `cycle`."""
NAMED_METRICS = frozenset({Metric.SCORE, Metric.ATTRIBUTE})
"""Metrics that read one of several values of their kind, chosen by the condition's `name`: which
score (an `Identifier`, as score ids are) or which profile attribute (an `AttributeName`)."""
SCORE_OPS = frozenset({Op.GTE, Op.GT, Op.LT, Op.LTE, Op.BETWEEN})
"""A decaying score moves continuously: it is compared with thresholds, never tested for equality."""
_ATTRIBUTE_NAME = re.compile(ATTRIBUTE_NAME_PATTERN)
"""The names an `attribute` condition may read (`schemas.events.AttributeName`)."""

_LAST = re.compile(r"^([1-9][0-9]{0,4})d$")
_TAG_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*/[A-Za-z0-9][A-Za-z0-9_.:-]*$")


WindowBound = Annotated[AwareDatetime | date, Field(union_mode="left_to_right")]
"""A date (the shop's local date) or an instant with an offset, which must be a local midnight of the
shop's zone (checked where the zone is known: RuleBook.compile). Instants first: a string with an
offset must not be read as a bare date."""


class Window(Contract):
    """Either the last N whole local days of the shop including today (`last: 30d`) or a half-open
    range of local days (`from`, `to`: dates in the shop's time zone, or local midnights as instants)."""

    model_config = Contract.model_config | {"populate_by_name": True}

    last: str | None = Field(default=None, examples=["30d"], pattern=_LAST.pattern)
    from_: WindowBound | None = Field(default=None, alias="from")
    to: WindowBound | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> Self:
        relative = self.last is not None
        absolute = self.from_ is not None or self.to is not None
        if relative == absolute:
            raise ValueError("a window is either {last: Nd} or {from: DATE, to: DATE}, not both or neither")
        if absolute and (self.from_ is None or self.to is None):
            raise ValueError("an absolute window needs both 'from' and 'to'")
        # A date and an instant compare only in the shop's zone (RuleBook.compile checks those).
        if self.from_ is not None and self.to is not None and _same_kind(self.from_, self.to) and self.from_ >= self.to:
            raise ValueError(f"window 'from' ({self.from_}) must be before 'to' ({self.to})")
        for day in (self.from_, self.to):
            # an instant by its UTC date: a local midnight lies within a day of it
            on = day.astimezone(UTC).date() if isinstance(day, datetime) else day
            if on is not None and not MIN_INSTANT.date() <= on <= MAX_INSTANT.date():
                raise ValueError(f"window days lie in [{MIN_INSTANT.date()}, {MAX_INSTANT.date()}], got {day}")
        return self

    @property
    def last_days(self) -> int | None:
        if self.last is None:
            return None
        match = _LAST.match(self.last)
        assert match is not None  # guaranteed by the field pattern
        return int(match.group(1))


def _same_kind(first: date, second: date) -> bool:
    return isinstance(first, datetime) == isinstance(second, datetime)


Scalar = int | Decimal | str
ConditionValue = Annotated[
    Any,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number"},
                {"type": "string"},
                {"type": "array", "items": {"anyOf": [{"type": "number"}, {"type": "string"}]}},
            ]
        }
    ),
]


ObservedValue = Annotated[
    Any,
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number"},
                {"type": "string"},
                {"type": "array", "items": {"anyOf": [{"type": "number"}, {"type": "string"}]}},
                {"type": "null"},
            ]
        }
    ),
]


def _absent(value: object) -> bool:
    return value is None


class Condition(Contract):
    """`{metric, op, value, window?, cycle?, periods?}`. Values are normalised per metric: counts to
    int, money to Decimal. `cycle` and `periods` (the cycle metrics) are left out of the serialised
    form when absent, so every other condition serialises (and fingerprints) as it always did."""

    metric: Metric
    name: Identifier | None = Field(
        default=None,
        description=(
            "the score a `score` condition reads (its id), or the attribute an `attribute` condition reads"
            " (region, gender, a custom field: lower case, digits and _, at most 32 characters)"
        ),
    )
    op: Op
    value: ConditionValue
    window: Window | None = None
    cycle: str | None = Field(
        default=None,
        examples=["30d"],
        pattern=_LAST.pattern,
        exclude_if=_absent,
        description="the shop's consumption cycle in local days, for the cycle metrics (loyalty, cycles_*)",
    )
    periods: int | None = Field(
        default=None,
        ge=1,
        le=MAX_PERIODS,
        exclude_if=_absent,
        description="how many cycles back loyalty and loyalty_trend look (cycle x periods within the horizon)",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        if (self.name is None) == (self.metric in NAMED_METRICS):
            example = "intent" if self.metric is Metric.SCORE else "region"
            wrong = f"needs a name, e.g. name: {example}" if self.name is None else "takes no name"
            raise ValueError(f"metric {self.metric.value!r} {wrong}")
        if self.metric is Metric.ATTRIBUTE and self.name is not None and not _ATTRIBUTE_NAME.match(self.name):
            raise ValueError(
                f"metric 'attribute': name {self.name!r} is not an attribute name"
                " (lower case letters, digits and _, starting with a letter, at most 32 characters)"
            )
        if self.metric is Metric.SCORE:
            _check_score_condition(self.op, self.window)
        if self.window is not None and self.metric not in WINDOWED_METRICS:
            raise ValueError(f"metric {self.metric.value!r} takes no window")
        if self.window is None and self.metric in WINDOW_REQUIRED:
            raise ValueError(f"metric {self.metric.value!r} needs a window, e.g. window: {{last: 30d}}")
        _check_cycle(self.metric, self.cycle, self.periods)
        object.__setattr__(self, "value", _normalise_value(self.metric, self.op, self.value))
        if self.metric in CYCLE_METRICS and self.metric not in PERIOD_METRICS:
            assert self.cycle_days is not None
            _check_cycles_value(self.metric, self.value, self.cycle_days)
        return self

    @property
    def cycle_days(self) -> int | None:
        return None if self.cycle is None else _cycle_days(self.cycle)


def _check_cycle(metric: Metric, cycle: str | None, periods: int | None) -> None:
    if metric not in CYCLE_METRICS:
        for name, given in (("cycle", cycle), ("periods", periods)):
            if given is not None:
                raise ValueError(f"metric {metric.value!r} takes no '{name}'")
        return
    if cycle is None:
        raise ValueError(f"metric {metric.value!r} needs 'cycle', the consumption cycle in days, e.g. cycle: 30d")
    if _cycle_days(cycle) > MAX_DAYS:
        raise ValueError(f"metric {metric.value!r}: 'cycle' is at most {MAX_DAYS} days, got {cycle}")
    if metric not in PERIOD_METRICS:
        if periods is not None:
            raise ValueError(f"metric {metric.value!r} takes no 'periods'")
        return
    least = 2 if metric is Metric.LOYALTY_TREND else 1  # a trend compares two halves
    if periods is None or periods < least:
        raise ValueError(f"metric {metric.value!r} needs 'periods' (at least {least}), e.g. periods: 6")
    if _cycle_days(cycle) * periods > MAX_DAYS:
        raise ValueError(
            f"metric {metric.value!r}: cycle x periods is at most {MAX_DAYS} days, got {cycle} x {periods}"
        )


def _check_cycles_value(metric: Metric, value: Any, cycle: int) -> None:
    """A value in cycles is a day count once multiplied: it keeps the bound of the days metrics, so
    that the instant it is reached is a valid one."""
    numbers = value if isinstance(value, list) else [value]
    widest = max(abs(number) for number in numbers)
    if widest * cycle > MAX_DAYS:
        raise ValueError(
            f"metric {metric.value!r}: value x cycle is at most {MAX_DAYS} days, got {excerpt(value)} x {cycle}d"
        )


def _cycle_days(cycle: str) -> int:
    match = _LAST.match(cycle)
    assert match is not None  # guaranteed by the field pattern
    return int(match.group(1))


def _condition_or_rule(value: Any) -> str:
    """A nested entry with `metric` is a condition; one with `conditions` or `match` is a rule."""
    if isinstance(value, dict):
        return "rule" if ("conditions" in value or "match" in value) and "metric" not in value else "condition"
    return "rule" if isinstance(value, Rule) else "condition"


class Rule(Contract):
    """Matches when `all` (or `any`) of its conditions or nested rules match."""

    match: Literal["all", "any"] = "all"
    conditions: list[
        Annotated[
            Annotated[Condition, UnionTag("condition")] | Annotated[Rule, UnionTag("rule")],
            Discriminator(_condition_or_rule),
        ]
    ] = Field(min_length=1, max_length=MAX_CONDITIONS)

    @model_validator(mode="before")
    @classmethod
    def _shallow(cls, data: Any) -> Any:
        # measured on the raw input, outermost level first, so a deep rule is refused before
        # pydantic (or the JSON reader of the replay, or orjson in the fingerprint) recurses into it
        if _depth(data) > MAX_RULE_DEPTH:
            raise ValueError(f"rules nest at most {MAX_RULE_DEPTH} levels deep")
        return data


Name = Annotated[Text, Field(max_length=100)]


class Tag(Contract):
    id: Identifier
    name: Name
    order: int | None = Field(
        default=None, ge=-MAX_ORDER, le=MAX_ORDER, description="display and match order; defaults to list position"
    )
    rule: Rule | None = Field(default=None, description="absent for tags that are only given by hand")


class TagGroup(Contract):
    id: Identifier
    name: Name
    order: int = Field(default=0, ge=-MAX_ORDER, le=MAX_ORDER)
    mode: Literal["exclusive", "multi"]
    tagging: Literal["manual", "auto", "both"]
    auto_remove: bool = False
    disabled: bool = False
    version: int = Field(default=1, ge=1, le=MAX_VERSION)
    tags: list[Tag] = Field(min_length=1, max_length=MAX_TAGS)
    scores: list[Score] | None = Field(
        default=None,
        max_length=MAX_SCORES,
        exclude_if=lambda value: value is None,
        description="behaviour scores this group's rules read (metric: score)",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        _check_scores(self)
        seen: set[str] = set()
        for tag in self.tags:
            if tag.id in seen:
                raise ValueError(f"tag id {tag.id!r} appears twice in group {self.id!r}")
            seen.add(tag.id)
            if self.tagging != "manual" and tag.rule is None and self.tagging == "auto":
                raise ValueError(f"tag {tag.id!r} needs a rule: group {self.id!r} is tagged automatically")
            if self.tagging == "manual" and tag.rule is not None:
                raise ValueError(f"tag {tag.id!r} has a rule but group {self.id!r} is manual-only")
        return self

    def ordered_tags(self) -> list[Tag]:
        """Tags in match order: explicit `order` first by value, the list position breaking ties."""
        indexed = list(enumerate(self.tags))
        indexed.sort(key=lambda pair: (pair[1].order if pair[1].order is not None else pair[0], pair[0]))
        return [tag for _, tag in indexed]


class TagGroupSet(Contract):
    """The rules file: `groups: [...]`."""

    groups: list[TagGroup] = Field(max_length=MAX_GROUPS)


class ConditionOutcome(Contract):
    """One condition as evaluated: what it asked and what the customer had."""

    metric: Metric
    name: str | None = Field(
        default=None,
        exclude_if=lambda name: name is None,
        description="the score or attribute read; absent for unnamed metrics",
    )
    op: Op
    value: ConditionValue
    window: Window | None = None
    cycle: str | None = Field(default=None, exclude_if=_absent, description="as the condition's, when it has one")
    periods: int | None = Field(default=None, exclude_if=_absent, description="as the condition's, when it has one")
    observed: ObservedValue = Field(description="the customer's value; null when the metric is absent")
    matched: bool


class Reason(Contract):
    summary: str
    conditions: list[ConditionOutcome] = Field(default_factory=list)


ChangeSource = Literal["rule", "manual", "rule_change", "time", "import"]


class TagChanged(Contract):
    """One tag added to or removed from one customer. `seq` rises by exactly one per customer per change."""

    schema_version: Literal[1] = SCHEMA_VERSION
    customer_id: ExternalId
    group_id: Identifier
    tag_id: Identifier
    change: Literal["added", "removed"]
    source: ChangeSource
    reason: Reason
    group_version: int = Field(ge=1, le=MAX_VERSION)
    caused_by: ExternalId | None = Field(default=None, description="event_id or command_id; null for timers")
    occurred_at: UtcDatetime
    seq: int = Field(ge=1, le=MAX_SEQ)


class TagCommand(Contract):
    """A manual add or remove of one tag for one customer (an operator, an import, an API call).

    `remove` of a tag the rules gave, in a group with `tagging: both`, sticks: the rules do not give
    it back until a `clear` (the rules decide again) or an `add` (held by hand)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    command_id: ExternalId
    customer_id: ExternalId
    group_id: Identifier
    tag_id: Identifier
    action: Literal["add", "remove", "clear"]
    actor: Annotated[Text, Field(max_length=128)]
    source: Literal["manual", "import"] = "manual"
    expires_at: UtcDatetime | None = None
    occurred_at: UtcDatetime


def _check_score_condition(op: Op, window: Window | None) -> None:
    if op not in SCORE_OPS:
        allowed = ", ".join(sorted(o.value for o in SCORE_OPS))
        raise ValueError(f"metric 'score' supports ops {allowed}, not {op.value!r}")
    if window is not None and window.last is None:
        raise ValueError("a score is summed over the last N days ({last: 14d}), not over dates")


def _check_scores(group: TagGroup) -> None:
    """Score ids are unique in the group; every score condition names one of them, with a window
    exactly when the score does not decay (a decaying score already says how long points count)."""
    scores: dict[str, Score] = {}
    for score in group.scores or []:
        if score.id in scores:
            raise ValueError(f"score id {score.id!r} appears twice in group {group.id!r}")
        scores[score.id] = score
    for tag in group.tags:
        for condition in _score_conditions(tag.rule) if tag.rule is not None else []:
            found = scores.get(str(condition.name))
            where = f"tag {tag.id!r}"
            if found is None:
                known = ", ".join(sorted(scores)) or "none"
                raise ValueError(f"{where} reads score {condition.name!r}, not defined in group {group.id!r} ({known})")
            score = found
            if score.decay is None and condition.window is None:
                raise ValueError(
                    f"{where}: score {score.id!r} does not decay: give a window, e.g. window: {{last: 14d}}"
                )
            if score.decay is not None and condition.window is not None:
                raise ValueError(f"{where}: score {score.id!r} decays (half_life {score.decay.half_life}): no window")


def _score_conditions(rule: Rule) -> list[Condition]:
    found: list[Condition] = []
    for child in rule.conditions:
        if isinstance(child, Rule):
            found.extend(_score_conditions(child))
        elif child.metric is Metric.SCORE:
            found.append(child)
    return found


def _depth(rule: Any) -> int:
    """Nesting levels of a raw rule (dicts or Rules), counted level by level without recursion."""
    depth, level = 0, [rule]
    while level and depth <= MAX_RULE_DEPTH:
        depth += 1
        nested = []
        for entry in level:
            conditions = entry.get("conditions") if isinstance(entry, dict) else getattr(entry, "conditions", None)
            if isinstance(conditions, list):
                nested += [item for item in conditions if _condition_or_rule(item) == "rule"]
        level = nested
    return depth


def _normalise_value(metric: Metric, op: Op, value: Any) -> Any:
    if metric in SET_METRICS or metric.value in PROFILE_TEXT_METRICS:
        return _normalise_set_value(metric, op, value)
    if op in (Op.IN, Op.NOT_IN):
        return [_number(metric, item) for item in _as_list(op, value)]
    if op is Op.BETWEEN:
        bounds = _as_list(op, value)
        if len(bounds) != 2:
            raise ValueError(f"'between' needs [low, high], got {excerpt(value)}")
        low, high = (_number(metric, bound) for bound in bounds)
        if low > high:
            raise ValueError(f"'between' bounds are reversed: {low} > {high}")
        return [low, high]
    return _number(metric, value)


def _normalise_set_value(metric: Metric, op: Op, value: Any) -> Any:
    if op not in SET_OPS:
        allowed = ", ".join(sorted(o.value for o in SET_OPS))
        raise ValueError(f"metric {metric.value!r} supports ops {allowed}, not {op.value!r}")
    items = _as_list(op, value) if op in (Op.IN, Op.NOT_IN) else [value]
    texts = []
    for item in items:
        if metric.value in PROFILE_TEXT_METRICS:
            texts.append(profile_text(metric.value, item))
            continue
        if isinstance(item, bool) or not isinstance(item, str | int) or _too_long(item, MAX_ID_LENGTH * 2 + 1):
            raise ValueError(f"metric {metric.value!r} compares ids, got {excerpt(item)}")
        text = check_safe(str(item))
        if metric is Metric.HAS_TAG and not _TAG_REF.match(text):
            raise ValueError(f"has_tag values are 'group/tag', got {excerpt(text)}")
        if metric is Metric.BOUGHT_ANY and len(text) > MAX_ID_LENGTH:
            raise ValueError(f"product ids have at most {MAX_ID_LENGTH} characters, got {excerpt(text)}")
        texts.append(text)
    return texts if op in (Op.IN, Op.NOT_IN) else texts[0]


def _as_list(op: Op, value: Any) -> list[Any]:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"op {op.value!r} needs a non-empty list, got {excerpt(value)}")
    if len(value) > MAX_VALUES:
        raise ValueError(f"op {op.value!r} takes at most {MAX_VALUES} values, got {len(value)}")
    return list(value)


def _number(metric: Metric, value: Any) -> int | Decimal:
    """The value as an exact number within the metric's bound, checked before any conversion can be
    slow (`int(Decimal("1e999999999"))` is quadratic) or overflow the state codec's 64 bits."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal) or _too_long(value):
        raise ValueError(f"metric {metric.value!r} compares numbers, got {excerpt(value)}")
    try:
        number = Decimal(value) if isinstance(value, int | Decimal) else Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"metric {metric.value!r} compares numbers, got {excerpt(value)}") from None
    if not number.is_finite():
        raise ValueError(f"metric {metric.value!r} needs a finite number, got {excerpt(value)}")
    bound = _BOUNDS.get(metric, MAX_COUNT)
    if not -bound <= number <= bound:
        raise ValueError(f"metric {metric.value!r} compares numbers within ±{bound}, got {excerpt(value)}")
    if metric is Metric.SCORE:
        # always a Decimal, even when whole: a decaying score is one, and the int comparisons'
        # shortcuts (gt 5 as gte 6) would be wrong for it
        if number != number.quantize(_SCORE_UNIT, rounding=ROUND_FLOOR):
            raise ValueError(f"scores have at most {SCORE_PLACES} decimal places, got {excerpt(value)}")
        return number
    if metric in MONEY_METRICS:
        return number
    if number != number.to_integral_value():
        raise ValueError(f"metric {metric.value!r} counts whole units, got {excerpt(value)}")
    return int(number)


_BOUNDS: dict[Metric, int | Decimal] = (
    dict.fromkeys(MONEY_METRICS, MAX_MONEY)
    | dict.fromkeys(DAY_METRICS, MAX_DAYS)
    | dict.fromkeys((Metric.CYCLES_SINCE_LAST_ORDER, Metric.CYCLES_BETWEEN_LAST_ORDERS), MAX_DAYS)
    | {Metric.LOYALTY: 100, Metric.LOYALTY_TREND: MAX_PERIODS}
    | {Metric.AGE: MAX_AGE}
    | {Metric.SCORE: MAX_SCORE}
)
_SCORE_UNIT = Decimal(1).scaleb(-SCORE_PLACES)


def _too_long(value: object, limit: int = MAX_NUMBER_TEXT) -> bool:
    """Whether `value` written out has more than `limit` characters (an int is measured, not written)."""
    if isinstance(value, int):
        return value.bit_length() > limit * 3.33  # log2(10): decimal digits, without str(value)
    return isinstance(value, str) and len(value) > limit
