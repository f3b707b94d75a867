"""The tagger's Prometheus metrics, in a registry of their own (built per app, never at import).

The Kafka worker (app.py) and the embedded node (services/embedded/pipeline.py) count through the
same methods, so one dashboard reads both.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import attrgetter
from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from schemas.topics import DeadLetter
from services.engine.changes import TagChange
from services.runtime.engine_build import engine_build
from services.tagger.projector import ProjectionOutcome

_bucket_label: Callable[[float], str] = floatToGoString  # how prometheus_client writes `le`

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ReadModelMetrics:
    """The read model's projection (projection.py): in a tagger worker, or in `tagstream projector`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.projector_changes = Counter(
            "tagstream_projector_changes_total",
            "Tag changes applied to the Redis read model, by outcome",
            ["outcome"],
            registry=registry,
        )
        self.projector_gaps = Counter(
            "tagstream_projector_gaps_total", "Tag changes that skipped a seq (a missing change)", registry=registry
        )
        self.readmodel_rebuilds = Counter(
            "tagstream_readmodel_rebuilds_total",
            "Rebuilds of the Redis read model this worker began because its marker was missing",
            registry=registry,
        )
        self.readmodel_rebuild_remaining = Gauge(
            "tagstream_readmodel_rebuild_remaining_records",
            "Records of tag-changes and events a running read-model rebuild has still to apply (0: none running)",
            registry=registry,
        )
        self.readmodel_ready = Gauge(
            "tagstream_readmodel_ready",
            "1 while the Redis read model is whole (its marker says ready); readers answer 503 otherwise",
            registry=registry,
        )

    def count_projected(self, outcomes: Iterable[ProjectionOutcome]) -> None:
        """Tag changes applied to the read model (Redis, or the embedded node's memory): one call per
        outcome a batch had, not per change."""
        for outcome, count in Tally(outcomes).items():
            self.projector_changes.labels(outcome.value).inc(count)
            if outcome is ProjectionOutcome.APPLIED_AFTER_GAP:
                self.projector_gaps.inc(count)


class TaggerMetrics(ReadModelMetrics):
    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        self.build_info = Gauge(
            "tagstream_tagger_build_info",
            "Always 1; labels say which engine build this worker runs: mypyc (compiled) or python",
            ["engine"],
            registry=registry,
        )
        self.build_info.labels(engine_build().kind).set(1)
        self.messages = Counter(
            "tagstream_events_processed_total",
            "Messages the tagger consumed, by kind (event type, command, tick, sync) and outcome",
            ["kind", "outcome"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "tagstream_dlq_total", "Messages sent to the dead-letter topic, by reason", ["reason"], registry=registry
        )
        for reason in get_args(DeadLetter.model_fields["error"].annotation):
            # exported at 0 from the start: `increase()` cannot see a series whose first sample is 1
            self.dead_letters.labels(reason)
        self.evaluation = Histogram(
            "tagstream_evaluation_seconds",
            "Time the engine took for one message (fold + evaluation); the Kafka worker observes each batch's mean",
            registry=registry,
            buckets=(0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
        )
        self.event_to_change = TalliedHistogram(
            "tagstream_event_to_change_seconds",
            "From a message's timestamp to its tag change being acknowledged by Kafka, one observation per tag change",
            registry=registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.tag_changes = Counter(
            "tagstream_tag_changes_total",
            "Tag changes emitted",
            ["group", "tag", "change", "source"],
            registry=registry,
        )
        self.backfill_customers = Counter(
            "tagstream_backfill_customers_total", "Customers re-evaluated after a definition change", registry=registry
        )
        self.backfill_remaining = Gauge(
            "tagstream_backfill_remaining", "Customers still to re-evaluate in running backfills", registry=registry
        )
        self.backfill_seconds = Histogram(
            "tagstream_backfill_seconds",
            "Duration of one partition's backfill",
            registry=registry,
            buckets=(0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 1800),
        )
        self.timer_backlog = Gauge(
            "tagstream_timer_backlog",
            "Customers whose time-based re-evaluation is due but not yet done",
            registry=registry,
        )
        self.timer_scheduled = Gauge(
            "tagstream_timer_scheduled", "Customers with a time-based re-evaluation scheduled", registry=registry
        )
        self.ticks = Counter("tagstream_timer_ticks_total", "Time-based wake-ups sent", registry=registry)
        self.consumer_lag = Gauge(
            "tagstream_consumer_lag",
            "Messages behind the end of each assigned partition (end offset minus processed offset)",
            ["topic", "partition"],
            registry=registry,
        )
        self.lost_to_retention = Counter(
            "tagstream_lost_to_retention_total",
            "Source records the topic's retention deleted before the tagger processed them (never processed)",
            ["topic", "partition"],
            registry=registry,
        )
        self.definitions_groups = Gauge(
            "tagstream_definitions_groups", "Tag groups the tagger is running", registry=registry
        )
        self.definitions_errors = Counter(
            "tagstream_definitions_errors_total",
            "Definition sets the tagger refused (kept running the previous ones)",
            registry=registry,
        )

    def count_message(self, kind: str, outcome: str, seconds: float) -> None:
        """One message (event, command, tick) through the engine, and how long the engine took."""
        self.evaluation.observe(seconds)
        self.messages.labels(kind, outcome).inc()

    def count_batch(self, outcomes: Tally[tuple[str, str]], seconds: float) -> None:
        """A batch of messages through the engine: one update per (kind, outcome) and one observation of
        the engine's time per message, averaged over the batch."""
        total = sum(outcomes.values())
        if total:
            self.evaluation.observe(seconds / total)
        for (kind, outcome), count in outcomes.items():
            self.messages.labels(kind, outcome).inc(count)

    def count_changes(
        self, changes: Iterable[TagChange], caused_at: Iterable[tuple[float, int]], acknowledged: float
    ) -> None:
        """Record a batch of tag changes acknowledged at `acknowledged`; `caused_at` holds, per message
        that caused some, its timestamp and how many. One latency per change, counted in its bucket;
        one metric update per batch and per distinct label set."""
        latency = self.event_to_change.tally()
        for produced_at, count in caused_at:
            latency.add(acknowledged - produced_at, count)
        self.event_to_change.add(latency)
        for labels, count in Tally(map(_change_labels, changes)).items():
            self.tag_changes.labels(*labels).inc(count)


_change_labels = attrgetter("group_id", "tag_id", "change", "source")
"""A tag change's labels on `tagstream_tag_changes_total`."""


class TalliedHistogram:
    """A Prometheus histogram without labels filled a batch at a time: the same series and values as
    `Histogram.observe` per observation, for one locked update per batch (`tally`, then `add`).

    The tagger observes a latency per tag change, ~3.5 per event, the same for every change of one
    message; `Histogram.observe` (a lock per bucket and per sum, ~2.4 µs) made that 8% of its CPU per
    event (docs/performance.md)."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry, buckets: Sequence[float]) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError(f"{name}: bucket bounds must be given ascending and distinct, not {buckets}")
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(float(bound) for bound in buckets)
        self._counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self._sum = 0.0
        self._lock = threading.Lock()  # /metrics may be served from another thread
        registry.register(self)

    def tally(self) -> BucketTally:
        return BucketTally(self.bounds)

    def add(self, tally: BucketTally) -> None:
        if tally.bounds != self.bounds:
            raise ValueError(f"{self.name}: a tally over other buckets ({tally.bounds}) cannot be added")
        with self._lock:
            self._counts = [mine + theirs for mine, theirs in zip(self._counts, tally.counts, strict=True)]
            self._sum += tally.sum

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for bound, count in zip([*self.bounds, float("inf")], counts, strict=True):
            cumulative += count
            buckets.append((_bucket_label(bound), cumulative))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)


class BucketTally:
    """Observations counted per bucket (`TalliedHistogram.tally`); negative values count as 0 (clocks
    of two hosts, or a record timestamp set ahead)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def add(self, value: float, times: int = 1) -> None:
        """Count `value` observed `times` times."""
        if value < 0.0:
            value = 0.0
        self.counts[bisect_left(self.bounds, value)] += times  # the first bound >= value: Prometheus' `le`
        self.sum += value * times
