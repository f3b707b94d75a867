"""What each customer partition was last brought in line with: a fingerprint of the definitions.

The tagger stores one fingerprint per partition next to the customers. When a worker finds a
partition whose fingerprint differs from the definitions it runs (a group was added or edited while
the worker was down, or just now), the difference is exactly the backfill that partition needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from services.engine.rulebook import CompiledGroup, RuleBook


@dataclass(frozen=True)
class DefinitionChange:
    """What a new set of definitions means for existing customers."""

    reevaluate: frozenset[str] = frozenset()
    """Groups that are new, edited or re-enabled: every customer is re-evaluated for them."""
    deleted: Mapping[str, int] = field(default_factory=dict)
    """Groups that no longer exist, with their last version: their tags are removed."""

    @property
    def empty(self) -> bool:
        return not self.reevaluate and not self.deleted


Fingerprint = dict[str, tuple[int, str, bool]]
"""Group id -> (version, digest of what decides its tags, whether rules run for it)."""


def fingerprint(rulebook: RuleBook) -> Fingerprint:
    return {
        group_id: (group.spec.version, _digest(group), group.evaluated)
        for group_id, group in sorted(rulebook.groups.items())
    }


def definition_change(old: RuleBook, new: RuleBook) -> DefinitionChange:
    """Groups to re-evaluate (new, edited in a way that matters, or re-enabled) and groups deleted."""
    return change_since(fingerprint(old), new)


def change_since(before: Mapping[str, tuple[int, str, bool]], rulebook: RuleBook) -> DefinitionChange:
    """The backfill that takes customers from `before` to `rulebook`."""
    reevaluate = set()
    for group_id, group in rulebook.groups.items():
        if not group.evaluated:
            continue  # disabling changes no customer
        old = before.get(group_id)
        if old is None or not old[2] or old[1] != _digest(group):
            reevaluate.add(group_id)
    deleted = {group_id: old[0] for group_id, old in before.items() if group_id not in rulebook.groups}
    return DefinitionChange(reevaluate=frozenset(reevaluate), deleted=deleted)


def encode_fingerprint(value: Fingerprint) -> bytes:
    return orjson.dumps(value)


def decode_fingerprint(data: bytes) -> Fingerprint:
    return {group: (int(v), str(d), bool(e)) for group, (v, d, e) in orjson.loads(data).items()}


def _digest(group: CompiledGroup) -> str:
    """Mode, tagging, auto-remove, the ordered tags with their rules and the scores: not names, order
    or version."""
    spec = group.spec
    decisive: dict[str, Any] = {
        "mode": spec.mode,
        "tagging": spec.tagging,
        "auto_remove": spec.auto_remove,
        "tags": [
            [tag.id, tag.spec.rule.model_dump(mode="json") if tag.spec.rule is not None else None] for tag in group.tags
        ],
    }
    if spec.scores:  # only when present: the digests of groups without scores stay as they were
        decisive["scores"] = [score.model_dump(mode="json") for score in spec.scores]
    return hashlib.sha256(orjson.dumps(decisive, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
