"""Playbooks: what marketing wants sent when a tag changes, validated when loaded; the steps they schedule.

A playbooks file (YAML) holds `templates` (id -> text with `${placeholders}`) and `playbooks`.
Loading fails with an error naming the playbook and the field, so a bad ConfigMap is refused whole
and the notifier keeps running the previous one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from schemas.common import Identifier, UtcDatetime
from schemas.durations import parse_duration
from schemas.excerpt import excerpt, problems
from schemas.limits import MAX_DURATION, MAX_NUMBER_TEXT, MAX_PLAYBOOKS, MAX_STEPS, MAX_TEMPLATE_LENGTH
from schemas.tags import ChangeSource, TagChanged, TagGroup
from schemas.templates import check_template

Channel = Literal["push", "sms", "coupon", "alert"]
"""`alert`: a message to the customer's salesperson (the profile's `owner`), not to the customer."""
CancelCondition = Literal["tag_removed", "tag_added", "customer_returned"]
"""`tag_removed`: the trigger tag is no longer held (for `on: added`); `tag_added`: it is held again
(for `on: removed`); `customer_returned`: any order or visit since the trigger."""


def parse_fraction(value: Any) -> Decimal:
    """`5%` or `0.05` -> Decimal('0.05'); must lie in [0, 1]."""
    text = str(value).strip() if isinstance(value, str | float | Decimal) or type(value) is int else ""
    try:
        if not text or len(text) > MAX_NUMBER_TEXT:
            raise ArithmeticError
        fraction = Decimal(text[:-1]) / 100 if text.endswith("%") else Decimal(text)
    except ArithmeticError:
        raise ValueError(f"not a percentage: {excerpt(value)}; write e.g. 5% or 0.05") from None
    if not (0 <= fraction <= 1):
        raise ValueError(f"must be between 0% and 100%, got {excerpt(value)}")
    return fraction


def format_duration(value: timedelta) -> str:
    """The shortest text `parse_duration` reads back: `3d`, `90m`, `45s`, `0`."""
    seconds = int(value.total_seconds())
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s" if seconds else "0"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0, "description": "seconds"},
                {"type": "string", "pattern": r"^\s*\d+\s*[smhdw]?\s*$", "examples": ["90s", "30m", "12h", "3d", "1w"]},
            ],
            "description": f"a duration of at most {MAX_DURATION.days}d",
        }
    ),
]
Fraction = Annotated[Decimal, BeforeValidator(parse_fraction)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Trigger(_Model):
    group: Identifier
    tag: Identifier
    on: Literal["added", "removed"] = "added"
    sources: tuple[ChangeSource, ...] = Field(
        default=(),
        description="only changes from these sources (e.g. leave out rule_change backfills); empty = any but "
        "`import` (loaded history), which triggers only a playbook that lists it",
    )

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        # YAML 1.1 (PyYAML) reads the bare key `on` as the boolean true
        if isinstance(data, dict) and True in data:
            data = {("on" if key is True else key): value for key, value in data.items()}
        return data

    def matches(self, change: TagChanged) -> bool:
        return (
            change.group_id == self.group
            and change.tag_id == self.tag
            and change.change == self.on
            and (change.source in self.sources if self.sources else change.source != "import")
        )


class Step(_Model):
    channel: Channel
    template: Identifier | None = None
    coupon: str | None = Field(default=None, min_length=1, max_length=64, description="coupon kind (code)")
    delay: Duration = timedelta(0)
    cancel_if: tuple[CancelCondition, ...] = ()

    @model_validator(mode="after")
    def _content(self) -> Self:
        if self.channel == "coupon" and self.coupon is None:
            raise ValueError("a coupon step needs `coupon` (the coupon kind, e.g. HV-50)")
        if self.channel != "coupon" and self.template is None:
            raise ValueError(f"a {self.channel} step needs `template`")
        if self.channel != "coupon" and self.coupon is not None:
            raise ValueError(f"`coupon` only belongs on a coupon step, not on a {self.channel} step")
        if self.delay < timedelta(0):
            raise ValueError(f"delay must not be negative, got {self.delay}")
        return self


class CapRule(_Model):
    """At most `limit` sends on `channel` per customer within any `window` (sliding)."""

    channel: Channel
    limit: int = Field(ge=0)
    window: Duration

    @model_validator(mode="after")
    def _positive_window(self) -> Self:
        if self.window <= timedelta(0):
            raise ValueError(f"a cap's window must be positive, got {self.window}")
        return self

    @classmethod
    def from_setting(cls, text: str) -> CapRule:
        """`push:3/1d`, as `notifier.caps` holds it (the settings check its shape when loaded)."""
        channel, rest = text.split(":", 1)
        limit, window = rest.split("/", 1)
        return cls.model_validate({"channel": channel, "limit": int(limit), "window": window})


class Playbook(_Model):
    id: Identifier
    trigger: Trigger
    steps: tuple[Step, ...] = Field(min_length=1, max_length=MAX_STEPS)
    holdout: Fraction = Decimal(0)
    caps: tuple[CapRule, ...] = Field(default=(), description="caps counting only this playbook's sends")
    quiet_hours: bool | None = Field(
        default=None,
        description="hold this playbook's steps during quiet hours (true) or never (false); "
        "unset: as the notifier's quiet_channels say",
    )
    disabled: bool = False

    @model_validator(mode="after")
    def _cancel_fits_trigger(self) -> Self:
        for number, step in enumerate(self.steps):
            if "tag_removed" in step.cancel_if and self.trigger.on != "added":
                raise ValueError(f"steps[{number}].cancel_if: tag_removed only fits a trigger `on: added`")
            if "tag_added" in step.cancel_if and self.trigger.on != "removed":
                raise ValueError(f"steps[{number}].cancel_if: tag_added only fits a trigger `on: removed`")
        return self


class PlaybookSet(_Model):
    templates: dict[Identifier, Annotated[str, Field(max_length=MAX_TEMPLATE_LENGTH)]] = Field(
        default_factory=dict, max_length=MAX_PLAYBOOKS
    )
    playbooks: tuple[Playbook, ...] = Field(default=(), max_length=MAX_PLAYBOOKS)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = []  # every one at once: an operator fixing a file (or a PUT) sees them all
        seen: set[str] = set()
        for playbook in self.playbooks:
            if playbook.id in seen:
                problems.append(f"playbook {playbook.id!r} is defined twice")
            seen.add(playbook.id)
            for number, step in enumerate(playbook.steps):
                if step.template is not None and step.template not in self.templates:
                    problems.append(
                        f"playbook {playbook.id!r} steps[{number}].template: no template {step.template!r} "
                        f"(have: {', '.join(sorted(self.templates)) or 'none'})"
                    )
        for name, text in self.templates.items():
            try:
                check_template(name, text)
            except ValueError as error:
                problems.append(str(error))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def get(self, playbook_id: str) -> Playbook | None:
        return next((playbook for playbook in self.playbooks if playbook.id == playbook_id), None)

    def matching(self, change: TagChanged) -> list[Playbook]:
        """The enabled playbooks this tag change triggers, in file order."""
        return [p for p in self.playbooks if not p.disabled and p.trigger.matches(change)]


class PlaybookError(ValueError):
    """A playbooks file that cannot be used; the message names the source, playbook and field."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems if problems is not None else [message]
        """Each problem alone (without the source), for answers that list them."""


def parse_playbooks(document: Any, source: str = "<playbooks>") -> PlaybookSet:
    """A playbooks document already parsed (YAML, or a JSON request body); PlaybookError naming every problem."""
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise PlaybookError(
            f"{source}: expected a mapping with `playbooks:` (and `templates:`), got {excerpt(document)}"
        )
    try:
        return PlaybookSet.model_validate(document)
    except ValidationError as error:
        found = _describe(error, document)
        raise PlaybookError(f"{source}: {'; '.join(found)}", found) from None


def _describe(error: ValidationError, document: dict[str, Any]) -> list[str]:
    """Pydantic's locations with list indexes replaced by playbook ids: `playbook 'x' steps[2].delay: ...`."""
    lines = []
    for problem in problems(error):
        location = list(problem["loc"])
        where = ".".join(str(part) for part in location) or "(file)"
        if len(location) >= 2 and location[0] == "playbooks" and isinstance(location[1], int):
            entries = document.get("playbooks") or []
            entry = entries[location[1]] if location[1] < len(entries) else None
            name = entry.get("id") if isinstance(entry, dict) else None
            rest = _path(location[2:])
            where = f"playbook {excerpt(name)}" if name else f"playbooks[{location[1]}]"
            where += f" {rest}" if rest else ""
        got = f" (got {problem['input']})" if "input" in problem else ""
        lines.append(f"{where}: {problem['msg']}{got}")
    return lines


def _path(parts: list[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def unknown_triggers(playbooks: PlaybookSet, groups: Mapping[str, TagGroup]) -> list[str]:
    """Every trigger naming a group or tag the definitions do not have (such a playbook never fires)."""
    problems = []
    for playbook in playbooks.playbooks:
        group = groups.get(playbook.trigger.group)
        if group is None:
            problems.append(f"playbook {playbook.id!r} trigger.group: no tag group {playbook.trigger.group!r}")
        elif playbook.trigger.tag not in {tag.id for tag in group.tags}:
            problems.append(
                f"playbook {playbook.id!r} trigger.tag: group {group.id!r} has no tag {playbook.trigger.tag!r}"
            )
    return problems


class ScheduledStep(BaseModel):
    """A snapshot of the step as it was when triggered, so editing a playbook never changes a scheduled one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    playbook_id: str
    """The playbook's id, or the campaign's when `campaign` is set (holdout, caps and keys use it)."""
    campaign: bool = False
    step: int
    channel: Channel
    template: str | None
    coupon: str | None
    cancel_if: tuple[CancelCondition, ...]
    customer_id: str
    group_id: str
    tag_id: str
    change: Literal["added", "removed"]
    seq: int
    triggered_at: UtcDatetime
    due_at: UtcDatetime
