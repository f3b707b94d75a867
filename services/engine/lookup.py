"""What the tagger's state says about customers, without changing it: one customer's aggregates as
the rules read them, and the preview of a definition change over many customers. No I/O.

The Kafka workers run these over the states of the partitions they hold (queries.py) and the
embedded node over its own (services/embedded/views.py), so both modes answer alike.

A preview runs exactly what applying the definitions runs — `Engine.backfill` on each customer, at
the same instant — on a decoded copy of the stored state, and counts the changes with source
`rule_change` (time-based flips that were due anyway are not the definition's doing). Nothing is
sent or stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime

from schemas.queries import MAX_SAMPLE, CustomerAggregates, PreviewTally, Sample, TagImpact, WindowCount
from schemas.tags import TagGroup
from services.engine import CustomerState, Engine, RuleBook
from services.engine.changes import TagChange
from services.engine.codec import decode
from services.engine.fingerprint import definition_change
from services.engine.score_state import adopt
from services.engine.timeutil import from_us
from services.engine.windows import EvalContext


def aggregates_of(state: CustomerState, rulebook: RuleBook, now_us: int) -> CustomerAggregates:
    """The customer's aggregates, and every windowed count the rules read, as evaluated at `now_us`."""
    agg = state.agg
    if agg.scores is not None and rulebook.scores is not None:
        adopt(agg.scores, rulebook.scores)  # keys stored before these definitions read as they name them
    ctx = EvalContext(agg, state.tags, now_us, rulebook.zone)
    windows: dict[str, WindowCount] = {}
    for group in rulebook.groups.values():
        for tag in group.tags:
            for leaf in tag.rule.leaves() if tag.rule is not None else ():
                window = leaf.spec.window
                if window is None:
                    continue
                key = f"{leaf.spec.metric}:{window.model_dump_json()}"
                if key not in windows:
                    windows[key] = WindowCount(metric=leaf.spec.metric, window=window, count=int(leaf.read(ctx) or 0))
    return CustomerAggregates(
        order_count=agg.order_count,
        total_spent=agg.total_spent,
        avg_order_value=agg.avg_order_value,
        points_total=agg.points_total,
        first_order_at=_instant(agg.first_order_us),
        last_order_at=_instant(agg.last_order_us),
        last_seen_at=_instant(agg.last_seen_us),
        windows=[windows[key] for key in sorted(windows)],
        as_of=from_us(now_us),
    )


class Preview:
    """Counts who would gain and lose each tag if `draft` replaced `current`; feed it stored states."""

    def __init__(self, current: RuleBook, draft: Sequence[TagGroup], *, sample: int, today: date | None = None) -> None:
        """Raises DefinitionError when the draft does not compile (as applying it would)."""
        compiled = RuleBook.compile(draft, horizon_days=current.horizon_days, today=today, zone=current.zone)
        self._change = definition_change(current, compiled)
        self._engine = Engine(compiled)
        self._sample = min(sample, MAX_SAMPLE)
        self.customers = 0
        self._counts: dict[tuple[str, str, str], int] = {}
        self._samples: dict[tuple[str, str, str], list[TagChange]] = {}

    @property
    def empty(self) -> bool:
        """The draft changes nothing the rules decide: no customer needs evaluating."""
        return self._change.empty

    def add(self, stored: bytes, now_us: int) -> None:
        """One customer's stored state (decoded afresh: the caller's copy is never touched)."""
        self.customers += 1
        if self._change.empty:
            return
        state = decode(stored)
        for change in self._engine.backfill(state, self._change, from_us(now_us)):
            if change.source == "rule_change":
                self._count(change)

    def tally(self) -> PreviewTally:
        impacts: dict[tuple[str, str], _Impact] = {}
        for (group_id, tag_id, direction), count in self._counts.items():
            lowest = sorted(self._samples.get((group_id, tag_id, direction), []), key=lambda c: c.customer_id)
            samples = [Sample(customer_id=c.customer_id, reason=c.to_message().reason) for c in lowest[: self._sample]]
            impacts.setdefault((group_id, tag_id), _Impact()).add(direction, count, samples)
        return PreviewTally(
            customers=self.customers,
            impacts=[impact.model(tag, self._sample) for tag, impact in sorted(impacts.items())],
        )

    def _count(self, change: TagChange) -> None:
        key = (change.group_id, change.tag_id, change.change)
        self._counts[key] = self._counts.get(key, 0) + 1
        if not self._sample:
            return
        kept = self._samples.setdefault(key, [])
        kept.append(change)
        if len(kept) >= 4 * self._sample:  # keep the lowest ids without sorting on every change
            kept.sort(key=lambda c: c.customer_id)
            del kept[self._sample :]


def merge(tallies: Iterable[PreviewTally], sample: int) -> PreviewTally:
    """Partition answers into one: counts added, samples the lowest ids across all of them."""
    customers = 0
    merged: dict[tuple[str, str], _Impact] = {}
    for tally in tallies:
        customers += tally.customers
        for impact in tally.impacts:
            entry = merged.setdefault((impact.group_id, impact.tag_id), _Impact())
            entry.add("added", impact.gained, impact.gained_sample)
            entry.add("removed", impact.lost, impact.lost_sample)
    return PreviewTally(
        customers=customers, impacts=[impact.model(tag, sample) for tag, impact in sorted(merged.items())]
    )


@dataclass
class _Impact:
    gained: int = 0
    lost: int = 0
    gained_sample: list[Sample] = field(default_factory=list)
    lost_sample: list[Sample] = field(default_factory=list)

    def add(self, direction: str, count: int, samples: Sequence[Sample]) -> None:
        if direction == "added":
            self.gained += count
            self.gained_sample.extend(samples)
        else:
            self.lost += count
            self.lost_sample.extend(samples)

    def model(self, tag: tuple[str, str], sample: int) -> TagImpact:
        return TagImpact(
            group_id=tag[0],
            tag_id=tag[1],
            gained=self.gained,
            lost=self.lost,
            gained_sample=sorted(self.gained_sample, key=lambda s: s.customer_id)[:sample],
            lost_sample=sorted(self.lost_sample, key=lambda s: s.customer_id)[:sample],
        )


def _instant(us: int | None) -> datetime | None:
    return None if us is None else from_us(us)
