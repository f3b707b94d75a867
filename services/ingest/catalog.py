"""Changes to tag groups, validated exactly as the tagger compiles them (RuleBook.compile). Pure.

Every operation takes the current groups and returns what to publish; every group it changes gets
its version bumped, so the tagger and consumers can tell definitions apart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from schemas.tags import TagGroup
from services.engine import DefinitionError, RuleBook
from services.engine.fingerprint import encode_fingerprint, fingerprint
from services.engine.zone import UTC_ZONE, DayZone


class CatalogError(Exception):
    """A change that cannot be made; `status` is the HTTP status that says why."""

    status = 422

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class UnknownGroup(CatalogError):
    status = 404


class GroupExists(CatalogError):
    status = 409


class InvalidDefinitions(CatalogError):
    status = 422


@dataclass(frozen=True)
class CatalogUpdate:
    """What one catalog operation publishes: groups written (at their new versions) and deleted."""

    upserts: list[TagGroup] = field(default_factory=list)
    deletions: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.upserts and not self.deletions


@dataclass(frozen=True)
class Limits:
    """What validation needs beyond the groups: the tagger's retained horizon, the shop's time zone
    (absolute windows are its local days) and today's date there."""

    horizon_days: int
    today: date
    zone: DayZone = UTC_ZONE

    @classmethod
    def at(cls, now: datetime, *, horizon_days: int, zone: DayZone) -> Limits:
        """The limits at instant `now` for a shop in `zone` (today is the shop's local date)."""
        return cls(horizon_days=horizon_days, today=zone.date_of(now), zone=zone)


def display_order(groups: Mapping[str, TagGroup]) -> list[TagGroup]:
    """Groups as operators see them: by `order`, then id (RuleBook.display_order's rule)."""
    return sorted(groups.values(), key=lambda group: (group.order, group.id))


def create(groups: Mapping[str, TagGroup], new: TagGroup, limits: Limits, *, last_version: int = 0) -> CatalogUpdate:
    """A new group, at version 1 (or one past the version of a deleted group of that id)."""
    if new.id in groups:
        raise GroupExists([f"group {new.id!r} already exists (version {groups[new.id].version}); replace it with PUT"])
    return _validated(groups, CatalogUpdate(upserts=[_at_version(new, last_version + 1)]), limits)


def replace(groups: Mapping[str, TagGroup], group_id: str, new: TagGroup, limits: Limits) -> CatalogUpdate:
    current = _existing(groups, group_id)
    if new.id != group_id:
        raise InvalidDefinitions([f"id: the body's id {new.id!r} differs from the group in the path {group_id!r}"])
    return _validated(groups, CatalogUpdate(upserts=[_at_version(new, current.version + 1)]), limits)


def set_disabled(groups: Mapping[str, TagGroup], group_id: str, disabled: bool, limits: Limits) -> CatalogUpdate:
    current = _existing(groups, group_id)
    if current.disabled == disabled:
        return CatalogUpdate()
    updated = current.model_copy(update={"disabled": disabled, "version": current.version + 1})
    return _validated(groups, CatalogUpdate(upserts=[updated]), limits)


def reorder(groups: Mapping[str, TagGroup], group_ids: Sequence[str], limits: Limits) -> CatalogUpdate:
    """Display order = position in `group_ids`, which must name every group exactly once."""
    problems = []
    duplicates = sorted(group_id for group_id, count in Counter(group_ids).items() if count > 1)
    if duplicates:
        problems.append(f"group_ids: {duplicates} appear more than once")
    unknown = sorted(set(group_ids) - set(groups))
    if unknown:
        problems.append(f"group_ids: unknown groups {unknown}")
    missing = sorted(set(groups) - set(group_ids))
    if missing:
        problems.append(f"group_ids: must list every group; missing {missing}")
    if problems:
        raise InvalidDefinitions(problems)
    upserts = [
        groups[group_id].model_copy(update={"order": position, "version": groups[group_id].version + 1})
        for position, group_id in enumerate(group_ids)
        if groups[group_id].order != position
    ]
    return _validated(groups, CatalogUpdate(upserts=upserts), limits)


def delete(groups: Mapping[str, TagGroup], group_id: str, limits: Limits) -> CatalogUpdate:
    _existing(groups, group_id)
    return _validated(groups, CatalogUpdate(deletions=[group_id]), limits)


@dataclass(frozen=True)
class Plan:
    """What applying a rules file changes: the change to publish and a line per group for people."""

    change: CatalogUpdate
    lines: list[str]


def apply_file(groups: Mapping[str, TagGroup], wanted: Sequence[TagGroup], limits: Limits, *, prune: bool) -> Plan:
    """Bring the groups in line with a rules file: create the new, replace the changed (version + 1),
    leave the identical alone; groups missing from the file are deleted only with `prune`."""
    duplicates = sorted(group_id for group_id, count in Counter(group.id for group in wanted).items() if count > 1)
    if duplicates:
        raise InvalidDefinitions([f"group id {group_id!r} is defined twice" for group_id in duplicates])
    upserts: list[TagGroup] = []
    lines: list[str] = []
    for group in wanted:
        current = groups.get(group.id)
        if current is None:
            upserts.append(_at_version(group, 1))
            lines.append(f"+ {group.id} ({group.name}): create, version 1")
        elif _content(current) != _content(group):
            upserts.append(_at_version(group, current.version + 1))
            lines.append(f"~ {group.id} ({group.name}): {_what_changed(current, group)}, version {current.version + 1}")
        else:
            lines.append(f"= {group.id} ({group.name}): unchanged, version {current.version}")
    deletions: list[str] = []
    for group_id in sorted(set(groups) - {group.id for group in wanted}):
        if prune:
            deletions.append(group_id)
            lines.append(f"- {group_id} ({groups[group_id].name}): delete")
        else:
            lines.append(f"! {group_id} ({groups[group_id].name}): not in the file, kept (--prune deletes it)")
    return Plan(_validated(groups, CatalogUpdate(upserts, deletions), limits), lines)


def _what_changed(current: TagGroup, new: TagGroup) -> str:
    before, after = _content(current), _content(new)
    fields = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
    return "changes " + ", ".join(fields)


def _content(group: TagGroup) -> dict[str, object]:
    return group.model_dump(mode="json", exclude={"version"})


def _existing(groups: Mapping[str, TagGroup], group_id: str) -> TagGroup:
    current = groups.get(group_id)
    if current is None:
        raise UnknownGroup([f"no tag group {group_id!r}"])
    return current


def _at_version(group: TagGroup, version: int) -> TagGroup:
    return group.model_copy(update={"version": version})


def _validated(groups: Mapping[str, TagGroup], change: CatalogUpdate, limits: Limits) -> CatalogUpdate:
    after = dict(groups)
    for group_id in change.deletions:
        after.pop(group_id, None)
    for group in change.upserts:
        after[group.id] = group
    try:
        rulebook = RuleBook.compile(
            after.values(), horizon_days=limits.horizon_days, today=limits.today, zone=limits.zone
        )
    except DefinitionError as error:
        raise InvalidDefinitions(error.problems) from None
    try:  # what every tagger stores beside its customers: it must encode, or no worker could start
        encode_fingerprint(fingerprint(rulebook))
    except TypeError as error:  # orjson: an integer beyond 64 bits (the contracts' bounds prevent it)
        raise InvalidDefinitions([f"the definitions cannot be stored: {error}"]) from None
    return change
