"""The notifier's Prometheus metrics, in a registry of their own (built per app, never at import).

Labels never carry personal data: channel, outcome and reason only; no customer ids, no numbers.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.runtime.customers import CHANNELS


class NotifierMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.notifications = Counter(
            "tagstream_notifications_total",
            "Decisions about scheduled steps, by channel, outcome and reason",
            ["channel", "outcome", "reason"],
            registry=registry,
        )
        self.provider_seconds = Histogram(
            "tagstream_notifier_provider_seconds",
            "One provider request (each retry observed separately)",
            ["channel"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.scheduler_backlog = Gauge(
            "tagstream_notifier_scheduler_backlog", "Due steps not yet claimed", registry=registry
        )
        self.scheduler_lag = Gauge(
            "tagstream_notifier_scheduler_lag_seconds", "Age of the oldest due, unclaimed step", registry=registry
        )
        self.dead_letters = Counter(
            "tagstream_notifier_dlq_total", "Steps sent to the notifications DLQ", ["channel"], registry=registry
        )
        for channel in CHANNELS:  # exported at 0: `increase()` cannot see a series whose first sample is 1
            self.dead_letters.labels(channel)
        self.circuit_open = Gauge(
            "tagstream_notifier_circuit_open",
            "1 while the channel's provider circuit is open",
            ["channel"],
            registry=registry,
        )
        self.playbook_errors = Counter(
            "tagstream_notifier_playbook_errors_total",
            "Playbook files refused on reload (the previous playbooks stay in force)",
            registry=registry,
        )
        self.playbooks = Gauge("tagstream_notifier_playbooks", "Playbooks in force", registry=registry)
        self.program_decisions = Counter(
            "tagstream_notifier_program_decisions_total",
            "Decisions per playbook or campaign (kind), by outcome and reason: the reports' totals",
            ["kind", "program", "outcome", "reason"],
            registry=registry,
        )
        self.targeted = Counter(
            "tagstream_notifier_targeted_total",
            "Steps planned per playbook, or fanned out per campaign (one per customer and step)",
            ["kind", "program"],
            registry=registry,
        )
        self.invalid_changes = Counter(
            "tagstream_notifier_invalid_changes_total",
            "Tag-change records that could not be read (dead-lettered)",
            registry=registry,
        )
