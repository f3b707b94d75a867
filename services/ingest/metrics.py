"""The ingest service's Prometheus metrics (RED by route), in a registry of their own built per app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "tagstream_http_requests_total",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "tagstream_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method",
            ["route", "method"],
            registry=registry,
            buckets=_LATENCY_BUCKETS,
        )
        self.events = Counter(
            "tagstream_ingest_events_total",
            "Customer events received over HTTP, by outcome (accepted|rejected|throttled|unavailable)",
            ["outcome"],
            registry=registry,
        )
        self.buffer_bytes = Gauge(
            "tagstream_ingest_producer_buffer_bytes",
            "Bytes handed to the Kafka producer and not yet acknowledged",
            registry=registry,
        )
