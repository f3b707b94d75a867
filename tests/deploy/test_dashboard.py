"""The Grafana dashboard (and its pending panels) is well formed: ids, layout, datasource, units."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.tools import CHART_FILES

DASHBOARD = CHART_FILES / "dashboard.json"
PENDING_PANELS = CHART_FILES / "pending-dashboard-panels.json"


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def test_the_dashboard_has_a_stable_uid_and_a_prometheus_datasource_variable():
    dashboard = load(DASHBOARD)
    assert dashboard["uid"] == "tagstream"
    [variable] = dashboard["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == ("datasource", "datasource", "prometheus")


@pytest.mark.parametrize(
    "path", [path for path in (DASHBOARD, PENDING_PANELS) if path.exists()], ids=lambda path: path.name
)
def test_every_panel_has_a_unique_id_a_place_on_the_grid_and_queries_the_chosen_datasource(path):
    panels = load(path)["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(grid["x"] + dx, grid["y"] + dy) for dx in range(grid["w"]) for dy in range(grid["h"])}
        assert not cells & occupied, f"{panel['title']} overlaps another panel"
        occupied |= cells
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert target["expr"].strip()
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]


def test_panel_ids_stay_unique_when_the_pending_panels_are_appended():
    ids = [panel["id"] for path in (DASHBOARD, PENDING_PANELS) if path.exists() for panel in load(path)["panels"]]
    assert len(ids) == len(set(ids))
