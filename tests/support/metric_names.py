"""Which series do the services export, and which metric names and labels does PromQL read?

The dashboard and the alert rules may only read what the services really export. The exported series
(sample names and their label names) come from each service's metrics class built on a fresh registry,
the way the service builds it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from services.ingest.metrics import IngestMetrics
from services.notifier.metrics import NotifierMetrics
from services.sync.metrics import SyncMetrics
from services.tagger.metrics import TaggerMetrics

# Sample name -> the label names it carries.
Series = dict[str, frozenset[str]]

# One entry per service: its metrics class (constructor taking the registry).
EXPORTERS: dict[str, Callable[[CollectorRegistry], object]] = {
    "tagger": TaggerMetrics,
    "ingest": IngestMetrics,
    "notifier": NotifierMetrics,
    "sync": lambda registry: SyncMetrics(registry, "webhook"),
}

# Labels Prometheus attaches to every scraped series (static configs; ServiceMonitor targets).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "container", "endpoint"})
# Series Prometheus itself writes for every scrape target.
PROMETHEUS_SERIES: Series = {name: frozenset() for name in ("up", "scrape_duration_seconds", "scrape_samples_scraped")}


def _counter(name: str, *labels: str) -> Series:
    return {f"{name}_total": frozenset(labels)}


def _gauge(name: str, *labels: str) -> Series:
    return {name: frozenset(labels)}


def _histogram(name: str, *labels: str) -> Series:
    return {
        f"{name}_bucket": frozenset({*labels, "le"}),
        f"{name}_sum": frozenset(labels),
        f"{name}_count": frozenset(labels),
    }


# Metrics of services still being written, which pending panels and alerts (files/pending-*) may use
# before they exist. Empty: every service exports what the dashboard and alerts read.
PLANNED: dict[str, Series] = {}

# The sample names prometheus_client writes for each metric type (histogram buckets add "le").
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
}


def exported() -> dict[str, Series]:
    """Service -> every series its metrics class exposes."""
    found = {}
    for service, build in EXPORTERS.items():
        registry = CollectorRegistry()
        build(registry)
        series: Series = {}
        # prometheus_client has no public accessor for a metric's label names; its collectors keep
        # them in _labelnames (and a registry maps collectors in _collector_to_names).
        for collector in registry._collector_to_names:
            labels = frozenset(getattr(collector, "_labelnames", ()))
            for family in collector.collect():
                for suffix in _SUFFIXES[family.type]:
                    series[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
        found[service] = series
    return found


def exported_series() -> Series:
    return merged(exported().values())


def merged(parts: Iterable[Series]) -> Series:
    out: Series = {}
    for part in parts:
        out.update(part)
    return out


def panel_expressions(path: Path) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel, rows included."""

    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets", []):
                yield panel["title"], target["expr"]
            yield from walk(panel.get("panels", []))

    yield from walk(json.loads(path.read_text(encoding="utf-8"))["panels"])


def rule_expressions(path: Path) -> Iterator[tuple[str, str]]:
    """(alert name, PromQL) for every rule of a Prometheus rules file."""
    for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]


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


_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")


def label_names(expression: str) -> set[str]:
    """The label names an expression groups, joins or matches on."""
    text = _GRAFANA_VARIABLES.sub("", expression)
    names = set()
    for group in _LABEL_LIST.findall(text):
        names.update(name.strip() for name in group.split(",") if name.strip())
    for matchers in _MATCHERS.findall(_STRINGS.sub('""', text)):
        names.update(_MATCHER_LABEL.findall(matchers))
    return names


def problems(expression: str, known: Series) -> set[str]:
    """Metric names the services do not export, and labels none of the expression's metrics carries."""
    names = metric_names(expression)
    unknown = {name for name in names if name not in known}
    carried = set(TARGET_LABELS).union(*(known[name] for name in names if name in known))
    return unknown | {f"label {label!r}" for label in label_names(expression) - carried}
