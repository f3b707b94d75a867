"""The dashboard and the alert rules read only metrics (and labels) the services really export."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.metric_names import (
    PLANNED,
    PROMETHEUS_SERIES,
    Series,
    exported,
    exported_series,
    label_names,
    merged,
    metric_names,
    panel_expressions,
    problems,
    rule_expressions,
)
from tests.support.tools import CHART_FILES

DASHBOARD = CHART_FILES / "dashboard.json"
ALERTS = CHART_FILES / "alerts.yaml"
PENDING_PANELS = CHART_FILES / "pending-dashboard-panels.json"
PENDING_ALERTS = CHART_FILES / "pending-alerts.yaml"
# The pending files go away once merged into the dashboard and alerts; the checks then cover those.


def unknown_names(expressions: Iterator[tuple[str, str]], known: Series) -> dict[str, set[str]]:
    """Where -> the metric names and labels it reads that `known` lacks."""
    unknown = {}
    for where, expression in expressions:
        missing = problems(expression, known)
        if missing:
            unknown[where] = missing
    return unknown


def running() -> Series:
    return {**exported_series(), **PROMETHEUS_SERIES}


def test_every_dashboard_panel_queries_only_metrics_the_services_export():
    queries = list(panel_expressions(DASHBOARD))
    assert len(queries) >= 10
    assert unknown_names(iter(queries), running()) == {}


def test_every_alert_rule_queries_only_metrics_the_services_export():
    rules = list(rule_expressions(ALERTS))
    assert len(rules) >= 6
    assert unknown_names(iter(rules), running()) == {}


def pending_expressions() -> Iterator[tuple[str, str]]:
    if PENDING_PANELS.exists():
        yield from panel_expressions(PENDING_PANELS)
    if PENDING_ALERTS.exists():
        yield from rule_expressions(PENDING_ALERTS)


def test_pending_panels_and_alerts_query_only_names_from_the_metrics_contract():
    assert unknown_names(pending_expressions(), {**merged(PLANNED.values()), **running()}) == {}


def test_the_panels_and_alerts_the_issue_asks_for_are_all_there():
    main = [*panel_expressions(DASHBOARD), *rule_expressions(ALERTS)]
    used_now = {name for _, expression in main for name in metric_names(expression)}
    used = used_now | {name for _, expression in pending_expressions() for name in metric_names(expression)}
    # event rate, lag, tag-change rate by group, evaluation and end-to-end latency (dashboard)
    assert {
        "tagstream_events_processed_total",
        "tagstream_consumer_lag",
        "tagstream_tag_changes_total",
        "tagstream_evaluation_seconds_bucket",
        "tagstream_event_to_change_seconds_bucket",
    } <= used_now
    # DLQ rate, backfill stuck, projector gaps (alerts)
    assert {"tagstream_dlq_total", "tagstream_backfill_remaining", "tagstream_projector_gaps_total"} <= used_now
    # notifications by outcome, notifier failures, scheduler backlog, API event rate and errors
    assert {
        "tagstream_notifications_total",
        "tagstream_notifier_scheduler_lag_seconds",
        "tagstream_ingest_events_total",
        "tagstream_http_requests_total",
    } <= used


def test_pending_files_are_merged_once_their_metrics_are_exported():
    now_exported = {service: set(series) & set(PLANNED.get(service, {})) for service, series in exported().items()}
    assert not any(now_exported.values()), (
        f"these planned metrics are exported now: {now_exported}. Move their panels from "
        f"{PENDING_PANELS.name} into {DASHBOARD.name} and their alerts from {PENDING_ALERTS.name} into "
        f"{ALERTS.name}, then drop them from PLANNED in tests/support/metric_names.py"
    )


def test_metric_names_are_read_out_of_promql_without_functions_labels_ranges_or_variables():
    expression = (
        'histogram_quantile(0.99, sum by (le, route) (rate(tagstream_a_bucket{status=~"5..", x="rate(y)"}'
        "[$__rate_interval]))) / on (route) group_left sum without (pod) (tagstream_b offset 5m) > bool 1e3"
        " and up{job=~'.*tagstream.*'}"
    )
    assert metric_names(expression) == {"tagstream_a_bucket", "tagstream_b", "up"}


def test_label_names_are_read_out_of_groupings_joins_and_matchers():
    expression = 'sum by (le, route) (rate(x{status=~"5..", method!="GET"}[5m])) / on (route) group_left (pod) y'
    assert label_names(expression) == {"le", "route", "status", "method", "pod"}


def test_an_unexported_metric_a_label_it_lacks_or_an_unknown_function_is_reported():
    assert unknown_names(iter([("panel", "rate(tagstream_no_such_total[5m])")]), running()) == {
        "panel": {"tagstream_no_such_total"}
    }
    assert unknown_names(iter([("panel", "sum by (groups) (tagstream_tag_changes_total)")]), running()) == {
        "panel": {"label 'groups'"}
    }
    assert (
        unknown_names(iter([("panel", "sum by (le) (rate(tagstream_evaluation_seconds_bucket[5m]))")]), running()) == {}
    )
    assert unknown_names(iter([("panel", "sum by (le) (rate(tagstream_evaluation_seconds_sum[5m]))")]), running()) == {
        "panel": {"label 'le'"}
    }
    with pytest.raises(ValueError, match="rates"):
        metric_names("rates(tagstream_dlq_total[5m])")
