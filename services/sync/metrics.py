"""The sync sink's Prometheus metrics, in a registry of their own (built per app, never at import).

Labels are bounded: the adapter, an outcome or error kind from fixed lists; never customer ids,
external user ids or errcodes (an answer's errcode is in the DLQ reason and the log instead).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OUTCOMES = ("applied", "duplicate", "disabled", "unknown_group", "no_contact", "dead_lettered", "invalid")
ERRORS = ("rate_limited", "token_refreshed", "retried", "unavailable", "refused")


class SyncMetrics:
    def __init__(self, registry: CollectorRegistry, adapter: str) -> None:
        self.registry = registry
        self.adapter = adapter
        self.changes = Counter(
            "tagstream_sync_changes_total",
            "Tag changes read by the sync sink, by what became of them",
            ["adapter", "outcome"],
            registry=registry,
        )
        self.errors = Counter(
            "tagstream_sync_errors_total",
            "External requests that did not succeed at once, by kind (rate_limited: errcode 45009; "
            "unavailable: a batch left uncommitted to be read again)",
            ["adapter", "kind"],
            registry=registry,
        )
        for outcome in OUTCOMES:  # exported at 0: `increase()` cannot see a series whose first sample is 1
            self.changes.labels(adapter, outcome)
        for kind in ERRORS:
            self.errors.labels(adapter, kind)
        self.request_seconds = Histogram(
            "tagstream_sync_request_seconds",
            "One request to the external system (each retry observed separately)",
            ["adapter"],
            registry=registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.lag_records = Gauge(
            "tagstream_sync_lag_records", "Tag changes on the sink's partitions not yet applied", registry=registry
        )
        self.lag_seconds = Gauge(
            "tagstream_sync_lag_seconds",
            "Age of the last tag change applied when it was applied (0 while caught up)",
            registry=registry,
        )

    def counted(self, outcome: str, amount: int = 1) -> None:
        if amount:
            self.changes.labels(self.adapter, outcome).inc(amount)

    def error(self, kind: str) -> None:
        self.errors.labels(self.adapter, kind).inc()

    def observe(self, seconds: float) -> None:
        self.request_seconds.labels(self.adapter).observe(seconds)
