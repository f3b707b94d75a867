"""The alert rules are valid Prometheus rules, behave as unit-tested, and each has a runbook."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.support.tools import CHART_FILES, REPO_ROOT, run_ok, tool

# pending-alerts.yaml goes away once merged into alerts.yaml.
RULE_FILES = [path for path in (CHART_FILES / "alerts.yaml", CHART_FILES / "pending-alerts.yaml") if path.exists()]
RULE_TESTS = sorted((REPO_ROOT / "tests" / "deploy" / "rules").glob("*.test.yaml"))
RUNBOOKS = REPO_ROOT / "docs" / "deploy.md"


@pytest.mark.parametrize("rules", RULE_FILES, ids=lambda path: path.name)
def test_promtool_accepts_the_rule_file(rules):
    output = run_ok(tool("promtool.sh"), "check", "rules", rules)
    assert "SUCCESS" in output


@pytest.mark.parametrize("rule_test", RULE_TESTS, ids=lambda path: path.name)
def test_the_alerts_fire_and_clear_as_their_promtool_unit_tests_expect(rule_test):
    output = run_ok(tool("promtool.sh"), "test", "rules", rule_test)
    assert "SUCCESS" in output


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section_in_the_deploy_docs():
    anchors = {
        _anchor(line.lstrip("#").strip())
        for line in RUNBOOKS.read_text(encoding="utf-8").splitlines()
        if line.startswith("### ")
    }
    for rules in RULE_FILES:
        for group in yaml.safe_load(rules.read_text(encoding="utf-8"))["groups"]:
            for rule in group["rules"]:
                assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
                assert rule["annotations"]["summary"], rule["alert"]
                page, _, anchor = rule["annotations"]["runbook"].partition("#")
                assert page == "docs/deploy.md", rule["alert"]
                assert anchor in anchors, f"{rule['alert']}: no '### {rule['alert']}' section in docs/deploy.md"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
