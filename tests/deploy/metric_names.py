"""Which metric names do the services export, and which does a PromQL expression read?

The dashboard and the alert rules may only read what the services really export. The exported names
come from each service's metrics class built on a fresh registry, the way the service builds it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from services.tagger.metrics import TaggerMetrics

# One entry per service: its metrics class (constructor taking the registry). After merging the ingest
# and notifier branches, add IngestMetrics and NotifierMetrics here and empty PLANNED accordingly.
EXPORTERS: dict[str, Callable[[CollectorRegistry], object]] = {
    "tagger": TaggerMetrics,
}

# The metric names contract for the services still being written; the pending panels and alerts
# (files/pending-*) are built against these. A name moves out of here when its service exports it.
PLANNED: dict[str, frozenset[str]] = {
    "ingest": frozenset(
        {
            "tagstream_http_requests_total",
            "tagstream_http_request_duration_seconds_bucket",
            "tagstream_http_request_duration_seconds_sum",
            "tagstream_http_request_duration_seconds_count",
            "tagstream_ingest_events_total",
            "tagstream_ingest_producer_buffer_bytes",
        }
    ),
    "notifier": frozenset(
        {
            "tagstream_notifications_total",
            "tagstream_notifier_provider_seconds_bucket",
            "tagstream_notifier_provider_seconds_sum",
            "tagstream_notifier_provider_seconds_count",
            "tagstream_notifier_scheduler_backlog",
            "tagstream_notifier_scheduler_lag_seconds",
            "tagstream_notifier_dlq_total",
            "tagstream_notifier_circuit_open",
        }
    ),
}

# Series Prometheus itself attaches to every scrape target.
PROMETHEUS_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

# The sample names prometheus_client writes for each metric type.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
}


def exported() -> dict[str, frozenset[str]]:
    """Service -> every sample name its metrics class exposes."""
    found = {}
    for service, build in EXPORTERS.items():
        registry = CollectorRegistry()
        build(registry)
        found[service] = frozenset(
            family.name + suffix for family in registry.collect() for suffix in _SUFFIXES[family.type]
        )
    return found


def exported_names() -> frozenset[str]:
    return frozenset().union(*exported().values())


_AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
    "limitk", "limit_ratio",
}  # fmt: skip
_FUNCTIONS = {
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "day_of_month",
    "day_of_week", "day_of_year", "days_in_month", "delta", "deriv", "exp", "floor", "histogram_avg",
    "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev", "histogram_stdvar",
    "histogram_sum", "holt_winters", "hour", "idelta", "increase", "irate", "label_join", "label_replace", "ln",
    "log2", "log10", "minute", "month", "predict_linear", "rate", "resets", "round", "scalar", "sgn", "sort",
    "sort_desc", "sqrt", "time", "timestamp", "vector", "year", "avg_over_time", "min_over_time",
    "max_over_time", "sum_over_time", "count_over_time", "quantile_over_time", "stddev_over_time",
    "stdvar_over_time", "last_over_time", "present_over_time",
}  # fmt: skip
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "group_left",
    "group_right",
    "on",
    "ignoring",
    "by",
    "without",
}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_GRAFANA_VARIABLES = re.compile(r"\$\{?\w+\}?")
_WORD = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects; raises ValueError on a function PromQL lacks."""
    text = _GRAFANA_VARIABLES.sub("", expression)
    text = _STRINGS.sub("", text)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _LABEL_LISTS.sub("", text)
    names = set()
    for match in _WORD.finditer(text):
        word, start = match.group(), match.start()
        if start and (text[start - 1].isdigit() or text[start - 1] == "."):
            continue  # the unit of a duration or the exponent of a number
        if word.lower() in _KEYWORDS:
            continue
        if text[match.end() :].lstrip().startswith("("):
            if word not in _AGGREGATIONS | _FUNCTIONS:
                raise ValueError(f"{word}(...) is not a PromQL function or aggregation, in: {expression}")
            continue
        names.add(word)
    return names
